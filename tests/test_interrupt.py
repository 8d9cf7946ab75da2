"""Ctrl-C and preemption (SIGINT, SIGTERM): a checkpoint of what is scored, exit 128+signal, a resume hint,
and the resumed run equal to an uninterrupted one."""
import glob
import os
import shlex
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from cms_jax.pipeline import Interrupted, RunConfig, catch_signals, run_job
from cms_jax.scoring.scorer import Scorer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["--model=tiny", "--workers=1", "--chunk_images=2", "--checkpoint_every_s=1000"]


@pytest.fixture(scope="module")
def faces(tmp_path_factory, celeba_copy):
    return celeba_copy(tmp_path_factory.mktemp("faces"), 8, start=40)


@pytest.fixture(scope="module")
def reference(faces, tmp_path_factory):
    """The uninterrupted run: drops and CMS."""
    out = str(tmp_path_factory.mktemp("ref"))
    run_job(RunConfig(model="tiny", images=faces), out, workers=0, chunk_images=2, show_progress=False)
    return _result(out)


def _result(out):
    d = np.load(os.path.join(out, "drops.npz"))
    return list(d["files"]), d["drops"], np.load(os.path.join(out, "cms.npy"))


def _assert_equal(out, reference):
    files, drops, cms = _result(out)
    assert files == reference[0]
    np.testing.assert_allclose(drops, reference[1], atol=1e-6)
    np.testing.assert_allclose(cms, reference[2], atol=1e-6)


def _env():
    return dict(os.environ, JAX_PLATFORMS="cpu")


def _start(faces, out, *extra):
    # A session of its own, so that killpg plays a terminal's Ctrl-C: every process of the group.
    return subprocess.Popen([sys.executable, "-m", "experiments.cms", *FLAGS, f"--images={faces}",
                             f"--out_dir={out}", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env=_env(), start_new_session=True)


def _wait_for(proc, pattern, timeout=240):
    t0 = time.monotonic()
    while not glob.glob(pattern):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() - t0 < timeout, f"nothing matched {pattern}"
        time.sleep(0.05)


def _wait_for_part(proc, out):
    _wait_for(proc, os.path.join(out, "drops_parts", "part-*.npz"))


def _resume_line(stderr):
    lines = [l for l in stderr.splitlines() if l.startswith("cms: resume with: ")]
    assert len(lines) == 1, stderr[-3000:]
    args = shlex.split(lines[0][len("cms: resume with: "):])
    assert args[:3] == ["python", "-m", "experiments.cms"] and args[-1] == "--resume"
    return [sys.executable] + args[1:]


def test_ctrl_c_mid_run_to_the_process_group_checkpoints_and_resume_equals_uninterrupted(faces, reference,
                                                                                         tmp_path):
    out = str(tmp_path / "out")
    proc = _start(faces, out)
    _wait_for_part(proc, out)
    os.killpg(proc.pid, signal.SIGINT)  # the workers get it too, as from a terminal
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err  # nor from the workers
    done = [l for l in err.splitlines() if l.startswith("cms: interrupted: SIGINT: ")]
    assert len(done) == 1 and done[0].endswith("checkpoint saved"), err[-3000:]
    n = int(done[0].split()[3])
    assert 2 <= n < 8 and n % 2 == 0  # whole chunks of 2: nothing scored was dropped
    assert not os.path.exists(os.path.join(out, "drops.npz"))
    r = subprocess.run(_resume_line(err), capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    _assert_equal(out, reference)


def test_a_second_signal_stops_at_once_and_the_last_checkpoint_stands(faces, reference, tmp_path):
    out = str(tmp_path / "out")
    proc = _start(faces, out, "--checkpoint_every_s=0")  # a checkpoint after every chunk
    _wait_for(proc, os.path.join(out, "checkpoints", "*", "commit_success.txt"))
    lines, first_seen = [], threading.Event()

    def read():
        for line in proc.stderr:
            lines.append(line)
            if "stopping after the images being scored" in line:
                first_seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    os.kill(proc.pid, signal.SIGTERM)
    assert first_seen.wait(120), "".join(lines)[-3000:]  # the first one was handled (signals coalesce)
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=120)
    reader.join(10)
    err = "".join(lines)
    assert proc.returncode == 143, err[-3000:]
    assert "cms: second SIGTERM: stopping now" in err and "Segmentation fault" not in err
    assert "cms: interrupted" not in err  # it did not wait for the chunk
    r = subprocess.run([sys.executable, "-m", "experiments.cms", *FLAGS, f"--images={faces}", f"--out_dir={out}",
                        "--checkpoint_every_s=0", "--resume"], capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    _assert_equal(out, reference)


def test_sigterm_during_the_first_compile_saves_the_first_chunk(faces, reference, tmp_path, monkeypatch):
    """The signal lands while the first chunk is compiled and scored: no crash, that chunk is kept."""
    out = str(tmp_path / "out")
    cfg = RunConfig(model="tiny", images=faces)
    calls, score = [], Scorer.score

    def first_call_signalled(self, prepared, labels):
        if not calls:  # 50 ms into the first call: inside tracing / XLA's compile
            threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM)).start()
        t0 = time.monotonic()
        result = score(self, prepared, labels)
        calls.append(time.monotonic() - t0)
        return result

    monkeypatch.setattr(Scorer, "score", first_call_signalled)
    with pytest.raises(Interrupted) as e:
        run_job(cfg, out, workers=0, chunk_images=2, show_progress=False)
    assert (e.value.signum, e.value.done, e.value.total, e.value.resumable) == (signal.SIGTERM, 2, 8, True)
    assert e.value.exit_code == 143 and len(calls) == 1 and calls[0] > 0.05  # it was still in the first call
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    monkeypatch.setattr(Scorer, "score", score)
    run_job(cfg, out, workers=0, chunk_images=2, show_progress=False, resume=True)
    _assert_equal(out, reference)


def test_a_signal_before_anything_is_scored_saves_nothing_and_says_start_again(faces, tmp_path):
    out = tmp_path / "out"
    with catch_signals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)  # the handler runs in the main thread at the next bytecode
        assert stop.signum == signal.SIGINT
        with pytest.raises(Interrupted) as e:
            run_job(RunConfig(model="tiny", images=faces), str(out), workers=0, chunk_images=2,
                    show_progress=False)
    assert (e.value.done, e.value.scored, e.value.resumable) == (0, 0, False)
    assert str(e.value).endswith("nothing saved yet")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert not list(out.rglob("part-*.npz"))
    with pytest.raises(FileNotFoundError, match="holds no run checkpoint"):
        run_job(RunConfig(model="tiny", images=faces), str(out), workers=0, resume=True, show_progress=False)


def test_resume_command_keeps_the_flags_and_trades_overwrite_for_resume():
    from cms_jax.pipeline import resume_command

    argv = ["/venv/bin/cms-jax", "--model=my model.onnx", "--overwrite", "--out_dir=o"]
    assert resume_command(argv) == "cms-jax '--model=my model.onnx' --out_dir=o --resume"
    assert resume_command(["experiments/cms.py", "--resume", "--images=x"]) == \
        "python -m experiments.cms --images=x --resume"
    assert resume_command(["experiments/cms.py", "--images=x"], resume=False) == "python -m experiments.cms --images=x"
