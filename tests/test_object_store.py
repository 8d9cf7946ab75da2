"""Object stores: the main job with ``--out_dir=gs://...`` against a local GCS emulator.

`gcp-storage-emulator` (a `test` extra) serves the GCS JSON API from memory on 127.0.0.1; the job
reaches it through `cms_jax.storage` → `etils.epath` → fsspec → gcsfs, as it would reach a real
bucket (``STORAGE_EMULATOR_HOST``, anonymous token). Every output, drop shard and Orbax checkpoint
of the job goes to the bucket; only the landmark cache is a local folder (shared by the runs, so
MediaPipe runs once per face). The results are compared with one local run of the same config.
"""
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest

pytest.importorskip("gcsfs", reason="gcsfs absent: pip install -e .[test]")
pytest.importorskip("gcp_storage_emulator", reason="gcp-storage-emulator absent: pip install -e .[test]")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = "cms-test"
LAYOUT_WARNING = "Could not determine bucket type"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Emulator:
    """The emulator's JSON API, read directly (no gcsfs in the test process)."""

    def __init__(self, url):
        self.url = url

    def names(self, prefix):
        q = urllib.parse.urlencode({"prefix": prefix})
        with urllib.request.urlopen(f"{self.url}/storage/v1/b/{BUCKET}/o?{q}", timeout=10) as f:
            return sorted(i["name"] for i in json.load(f).get("items", []))

    def read(self, name):
        quoted = urllib.parse.quote(name, safe="")
        with urllib.request.urlopen(f"{self.url}/download/storage/v1/b/{BUCKET}/o/{quoted}?alt=media",
                                    timeout=10) as f:
            return f.read()

    def npy(self, name):
        return np.load(io.BytesIO(self.read(name)))

    def npz(self, name):
        return np.load(io.BytesIO(self.read(name)))

    def json(self, name):
        return json.loads(self.read(name))


@pytest.fixture(scope="module")
def gcs():
    """gcp-storage-emulator in its own process on a free localhost port, in memory, one bucket."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gcp_storage_emulator", "start", "--host=127.0.0.1",
                             f"--port={port}", "--in-memory", f"--default-bucket={BUCKET}", "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    while True:
        try:
            urllib.request.urlopen(f"{url}/storage/v1/b/{BUCKET}", timeout=1).close()
            break
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None or time.monotonic() - t0 > 30:
                proc.kill()
                pytest.fail(f"gcp-storage-emulator did not start (exit {proc.poll()})")
            time.sleep(0.1)
    yield Emulator(url)
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _env(gcs=None):
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # one device per process: the subprocess is a real run
    env["PYTHONPATH"] = ROOT
    if gcs is not None:
        env.update(STORAGE_EMULATOR_HOST=gcs.url,  # gcsfs's endpoint
                   FSSPEC_GCS_TOKEN="anon", FSSPEC_GCS_PROJECT="cms-test",  # fsspec's per-protocol config
                   NO_GCE_CHECK="true")  # no probe of a metadata server for credentials
    return env


def _cmd(images, out, cache, extra=()):
    return [sys.executable, "-m", "experiments.cms", "--model=tiny", f"--images={images}", f"--out_dir={out}",
            f"--align_cache={cache}", "--workers=0", "--chunk_images=1", "--batch_size=256", *extra]


@pytest.fixture(scope="module")
def images(tmp_path_factory, celeba_copy):
    return celeba_copy(tmp_path_factory.mktemp("faces"), 6, bad=True)


@pytest.fixture(scope="module")
def local(images, tmp_path_factory):
    """The reference: the same config, one process, a local folder; its landmark cache is the others'."""
    base = tmp_path_factory.mktemp("local")
    out, cache = str(base / "out"), str(base / "align_cache")
    subprocess.run(_cmd(images, out, cache), cwd=ROOT, env=_env(), check=True, capture_output=True)
    load = lambda name: open(os.path.join(out, name), "rb").read()  # noqa: E731
    return {"cache": cache, "cms": np.load(os.path.join(out, "cms.npy")),
            "drops": np.load(io.BytesIO(load("drops.npz"))), "summary": json.loads(load("summary.json"))}


def _assert_equal_to_local(gcs, prefix, local):
    np.testing.assert_allclose(gcs.npy(f"{prefix}/cms.npy"), local["cms"], rtol=0, atol=1e-6)
    s, r = gcs.json(f"{prefix}/summary.json"), local["summary"]
    assert (s["images_total"], s["images_done"]) == (r["images_total"], r["images_done"]) == (7, 6)
    assert [k["file"] for k in s["images_skipped"]] == [k["file"] for k in r["images_skipped"]]
    assert [os.path.basename(k["file"]) for k in s["images_skipped"]] == ["zz_bad.jpg"]
    d, e = gcs.npz(f"{prefix}/drops.npz"), local["drops"]
    assert list(d["files"]) == list(e["files"])  # each image once, in order
    np.testing.assert_allclose(d["drops"], e["drops"], atol=1e-6)
    return s


def _committed_steps(gcs, prefix):
    """Orbax steps on an object store are complete when their commit_success.txt exists."""
    pat = re.compile(rf"{re.escape(prefix)}/checkpoints/(\d+)/commit_success\.txt$")
    return sorted(int(m.group(1)) for n in gcs.names(f"{prefix}/checkpoints/") if (m := pat.match(n)))


def _check_log(stderr):
    """One line names the backend; gcsfs's bucket-layout warning is not repeated per call."""
    assert len(re.findall(r"^storage: gs:// through etils\.epath, fsspec gcsfs", stderr, re.M)) == 1, stderr[-3000:]
    assert stderr.count(LAYOUT_WARNING) <= 1, stderr[-3000:]


def test_sigkill_then_resume_in_bucket_equals_local(gcs, images, local, tmp_path):
    prefix = "killed"
    out = f"gs://{BUCKET}/{prefix}"
    args = _cmd(images, out, local["cache"], ["--checkpoint_every_s=0"])
    proc = subprocess.Popen(args, cwd=ROOT, env=_env(gcs), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    while proc.poll() is None and not _committed_steps(gcs, prefix) and time.monotonic() - t0 < 120:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before its first checkpoint reached the bucket"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps = _committed_steps(gcs, prefix)
    assert steps and steps[-1] < 7 and not gcs.names(f"{prefix}/summary.json"), "not killed mid-run"

    r = subprocess.run(args + ["--resume"], cwd=ROOT, env=_env(gcs), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    _check_log(r.stderr)
    _assert_equal_to_local(gcs, prefix, local)
    names = gcs.names(f"{prefix}/")
    for f in ("cms.png", "report.html", "regions.json"):
        assert f"{prefix}/{f}" in names
    assert _committed_steps(gcs, prefix)[-1] == 7  # one step per image, none counted twice


def test_two_processes_to_buckets_equal_one_local(gcs, images, local):
    """Two JAX processes (coordinator on localhost), each writing only to its own bucket prefix."""
    coord = f"localhost:{_free_port()}"
    procs = [subprocess.Popen(_cmd(images, f"gs://{BUCKET}/two_p{k}", local["cache"],
                                   ["--num_processes=2", f"--process_id={k}", f"--coordinator={coord}"]),
                              cwd=ROOT, env=_env(gcs), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for k in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        _check_log(err)
    s = _assert_equal_to_local(gcs, "two_p0", local)
    assert s["processes"] == 2 and [p["images_total"] for p in s["per_process"]] == [4, 3]
    # Process 1 wrote only its own state (checkpoints, drop shards) under its own prefix.
    assert {n.split("/")[1] for n in gcs.names("two_p1/")} == {"process_001"}
    assert not gcs.names("two_p0/process_001/")


def test_gcsfs_layout_warning_passes_once(caplog):
    """The filter `storage.announce` puts on gcsfs's logger: the first such warning shows, its repeats do not."""
    import logging

    from cms_jax import storage

    storage._announced.discard("gs")
    storage.announce(f"gs://{BUCKET}/x")
    log = logging.getLogger("gcsfs")
    with caplog.at_level(logging.WARNING, logger="gcsfs"):
        for _ in range(5):  # the message gcsfs.extended_gcsfs logs before every operation
            log.warning(f"{LAYOUT_WARNING} for bucket name {BUCKET}: Timeout of 60.0s exceeded, "
                        "falling back to GCSFileSystem")
        log.warning("another gcsfs warning")
        log.warning("another gcsfs warning")
    msgs = [r.getMessage() for r in caplog.records]
    assert sum(LAYOUT_WARNING in m for m in msgs) == 1
    assert msgs.count("another gcsfs warning") == 2
