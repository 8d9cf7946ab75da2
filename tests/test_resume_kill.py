"""Preemption: SIGKILL a run at random moments, resume each time; nothing lost, nothing twice."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cmd(images, out, cache, resume):
    return [sys.executable, "-m", "experiments.cms", "--model=tiny", f"--images={images}",
            f"--out_dir={out}", f"--align_cache={cache}", "--workers=1", "--chunk_images=1",
            "--checkpoint_every_s=0", "--batch_size=256"] + (["--resume"] if resume else [])


def _env():
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # one device per process here: the subprocess is a real run
    env["PYTHONPATH"] = ROOT
    return env


def _steps(out):
    d = os.path.join(out, "checkpoints")
    return sorted(int(s) for s in os.listdir(d) if s.isdigit()) if os.path.isdir(d) else []


@pytest.fixture(scope="module")
def images(tmp_path_factory, celeba_copy):
    return celeba_copy(tmp_path_factory.mktemp("faces"), 23, bad=True)


def test_sigkill_three_times_then_resume_equals_uninterrupted(images, tmp_path):
    cache = str(tmp_path / "align_cache")  # shared: a resumed run makes no MediaPipe call twice
    ref = str(tmp_path / "ref")
    subprocess.run(_cmd(images, ref, cache, False), cwd=ROOT, env=_env(), check=True, capture_output=True)

    out = str(tmp_path / "killed")
    rng = random.Random(0)
    kills = 0
    for attempt in range(8):
        before = _steps(out)
        proc = subprocess.Popen(_cmd(images, out, cache, attempt > 0), cwd=ROOT, env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Wait until this attempt has committed a new step, then kill at a random moment after it.
        t0 = time.monotonic()
        while proc.poll() is None and time.monotonic() - t0 < 240:
            if _steps(out) and _steps(out)[-1] > (before[-1] if before else -1):
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.3))  # each chunk is one image and one checkpoint
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        if kills >= 3:
            break
    assert kills >= 3, "the run finished before it could be killed three times"
    subprocess.run(_cmd(images, out, cache, True), cwd=ROOT, env=_env(), check=True, capture_output=True)

    np.testing.assert_allclose(np.load(os.path.join(out, "cms.npy")), np.load(os.path.join(ref, "cms.npy")),
                               rtol=0, atol=1e-6)
    s, r = (json.load(open(os.path.join(p, "summary.json"))) for p in (out, ref))
    assert s["images_total"] == r["images_total"] == 24
    assert s["images_done"] == r["images_done"] == 23
    assert [k["file"] for k in s["images_skipped"]] == [k["file"] for k in r["images_skipped"]]
    d, e = np.load(os.path.join(out, "drops.npz")), np.load(os.path.join(ref, "drops.npz"))
    assert list(d["files"]) == list(e["files"])  # each image once, in order
    np.testing.assert_allclose(d["drops"], e["drops"], atol=1e-6)
