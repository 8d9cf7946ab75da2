"""Multi-host: two processes (jax.distributed on localhost) give the same CMS as one.

Each process has its own --out_dir and its own landmark cache: nothing is shared on disk, so
the results can only meet through JAX's collectives. The two-process run also scores with
``--incremental`` (each process's local mesh) and keeps per-group sums (``--groups``), so the
comparison checks the collectives, the incremental forward and the group sums against one
dense process.
"""
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _cmd(images, out, cache, extra=()):
    return [sys.executable, "-m", "experiments.cms", "--model=tiny", f"--images={images}", f"--out_dir={out}",
            f"--align_cache={cache}", "--workers=1", "--chunk_images=3", "--batch_size=256",
            f"--groups=csv:{images}/groups.csv", *extra]


def _env():
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env["PYTHONPATH"] = ROOT
    return env


@pytest.fixture(scope="module")
def images(tmp_path_factory, celeba_copy):
    d = tmp_path_factory.mktemp("faces")
    celeba_copy(d, 11, start=20, bad=True)
    names = sorted(p.name for p in d.iterdir())
    (d / "groups.csv").write_text("file,group\n" + "".join(f"{n},{'AB'[i % 2]}\n" for i, n in enumerate(names)))
    return str(d)


@pytest.fixture(scope="module")
def one(images, tmp_path_factory):
    """The reference: one process, dense forward."""
    out = str(tmp_path_factory.mktemp("one") / "out")
    subprocess.run(_cmd(images, out, out + "_cache", ["--noincremental"]), cwd=ROOT, env=_env(), check=True,
                   capture_output=True)
    return out


def _steps(folder):
    d = os.path.join(folder, "checkpoints")
    return sorted(int(s) for s in os.listdir(d) if s.isdigit()) if os.path.isdir(d) else []


def test_two_processes_equal_one(images, one, tmp_path):
    outs = [str(tmp_path / f"two_p{k}") for k in range(2)]
    coord = f"localhost:{_free_port()}"
    procs = [subprocess.Popen(_cmd(images, outs[k], str(tmp_path / f"cache2_{k}"),
                                   ["--num_processes=2", f"--process_id={k}", f"--coordinator={coord}",
                                    "--incremental"]),
                              cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for k in range(2)]
    for p in procs:
        out, _ = p.communicate(timeout=400)
        assert p.returncode == 0, out.decode()[-3000:]
    two = outs[0]
    np.testing.assert_allclose(np.load(os.path.join(two, "cms.npy")), np.load(os.path.join(one, "cms.npy")),
                               rtol=0, atol=1e-6)
    for g in "AB":  # per-group sums, reduced across the processes
        np.testing.assert_allclose(np.load(os.path.join(two, f"cms_group_{g}.npy")),
                                   np.load(os.path.join(one, f"cms_group_{g}.npy")), rtol=0, atol=1e-6)
    s1, s2 = (json.load(open(os.path.join(p, "summary.json"))) for p in (one, two))
    assert s2["processes"] == 2 and (s1["forward"], s2["forward"]) == ("dense", "incremental")
    assert (s1["images_total"], s1["images_done"]) == (s2["images_total"], s2["images_done"]) == (12, 11)
    assert [k["file"] for k in s2["images_skipped"]] == [k["file"] for k in s1["images_skipped"]]
    d1, d2 = np.load(os.path.join(one, "drops.npz")), np.load(os.path.join(two, "drops.npz"))
    assert list(d1["files"]) == list(d2["files"])
    np.testing.assert_allclose(d2["drops"], d1["drops"], atol=1e-6)
    # Each process read a disjoint half; process 1 wrote no output of the run, only its own state.
    assert [p["images_total"] for p in s2["per_process"]] == [6, 6]
    assert os.listdir(outs[1]) == ["process_001"]
    assert not os.path.exists(os.path.join(outs[0], "process_001"))


def test_two_processes_killed_then_resumed_equal_one(images, one, tmp_path):
    """SIGKILL both processes once process 1 has checkpointed; both resume from their own checkpoints."""
    outs = [str(tmp_path / f"p{k}") for k in range(2)]

    def start(resume):
        coord = f"localhost:{_free_port()}"
        extra = ["--num_processes=2", f"--coordinator={coord}", "--checkpoint_every_s=0", "--chunk_images=1"]
        return [subprocess.Popen(_cmd(images, outs[k], str(tmp_path / f"cache{k}"),
                                      extra + [f"--process_id={k}"] + (["--resume"] if resume else [])),
                                 cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                for k in range(2)]

    procs = start(False)
    p1 = os.path.join(outs[1], "process_001")
    t0 = time.monotonic()
    while not [s for s in _steps(p1) if s >= 2] and time.monotonic() - t0 < 300:
        time.sleep(0.05)
    for p in procs[::-1]:
        p.kill()
        p.wait()
    steps = _steps(p1)
    assert steps and steps[-1] < 6, f"process 1 was not killed mid-run (steps {steps})"
    for p in start(True):
        out, _ = p.communicate(timeout=400)
        assert p.returncode == 0, out.decode()[-3000:]
    np.testing.assert_allclose(np.load(os.path.join(outs[0], "cms.npy")), np.load(os.path.join(one, "cms.npy")),
                               rtol=0, atol=1e-6)
    s1, s2 = (json.load(open(os.path.join(p, "summary.json"))) for p in (one, outs[0]))
    assert (s2["images_total"], s2["images_done"]) == (s1["images_total"], s1["images_done"])
    d1, d2 = np.load(os.path.join(one, "drops.npz")), np.load(os.path.join(outs[0], "drops.npz"))
    assert list(d1["files"]) == list(d2["files"])  # each image once, in order
    np.testing.assert_allclose(d2["drops"], d1["drops"], atol=1e-6)
