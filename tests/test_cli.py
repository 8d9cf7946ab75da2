"""The main job's command line: user errors in one line and exit 2, --help exits 0, the cms-jax script."""
import os
import shutil
import subprocess
import sys

import pytest

_ENV = dict(os.environ, CMS_JAX_ASSETS=os.environ.get("CMS_JAX_ASSETS", "/work/shared"), JAX_PLATFORMS="cpu")
_SCRIPT = shutil.which("cms-jax") or os.path.join(os.path.dirname(sys.executable), "cms-jax")


def _cms(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "experiments.cms", *args], capture_output=True, text=True,
                          env=_ENV, timeout=timeout, cwd=os.path.dirname(os.path.dirname(__file__)))


def test_bad_flag_value_is_one_line_and_exit_2():
    r = _cms("--max_images=abc")
    assert r.returncode == 2, r.stderr
    assert "cms: error: flag --max_images=abc" in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_images_folder_is_one_line_and_exit_2(tmp_path):
    r = _cms("--model=tiny", f"--images={tmp_path / 'nope'}", f"--out_dir={tmp_path / 'out'}", "--workers=0")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("cms: error: images: ")
    assert "nope" in r.stderr and "Traceback" not in r.stderr


def test_verbosity_1_shows_the_traceback(tmp_path):
    r = _cms("--model=tiny", f"--images={tmp_path / 'nope'}", f"--out_dir={tmp_path / 'out'}", "--workers=0",
             "--verbosity=1")
    assert r.returncode == 2 and "Traceback" in r.stderr and "cms: error: images: " in r.stderr


def test_help_exits_0_with_basic_flags_first():
    r = _cms("--help")
    assert r.returncode == 0, r.stderr
    titles = [r.stdout.index(t) for t in ("Basic:", "Scoring:", "Performance:", "Multi-host:")]
    assert titles == sorted(titles)
    assert r.stdout.index("--model:") < r.stdout.index("Scoring:")
    assert "--[no]incremental" in r.stdout and "(default: unset)" in r.stdout


def test_installed_console_script_help():
    if not os.path.exists(_SCRIPT):
        pytest.skip("cms-jax is not installed (pip install -e . registers it)")
    r = subprocess.run([_SCRIPT, "--help"], capture_output=True, text=True, env=_ENV, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Basic:" in r.stdout and "--out_dir" in r.stdout


def test_finished_run_points_at_report_html(tmp_path):
    r = _cms("--smoke", "--workers=0", f"--out_dir={tmp_path}", timeout=300)
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert last.endswith(f"-> {tmp_path}/report.html") and (tmp_path / "report.html").exists()
