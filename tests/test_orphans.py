"""Nothing outlives the job: its worker processes exit when the main process dies (cms_jax/workers.py).

The job tests start ``experiments.cms`` with two Grain workers, wait until they are aligning faces,
kill the main process (SIGKILL as a preempted VM or the OOM killer would, then SIGTERM) and
require every process it started (workers, multiprocessing's resource tracker) to be gone within
10 s. The pool test does the same to a process inside ``align_files`` (the figure scripts' and
``bench_align``'s path). The helper tests go one level down: a spawned process starts a worker that
calls `exit_with_parent`, and is SIGKILLed.
"""
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from cms_jax.workers import exit_with_parent, parent_token

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GONE_S = 10.0


def _alive(p: psutil.Process) -> bool:
    """A process is gone when it no longer exists or is a zombie (nobody may reap an orphan here)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


def _describe(procs) -> list[str]:
    return [f"{p.pid}: {_cmdline(p)[:120]}" for p in procs]


def _kill(procs) -> None:
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass


def _wait_gone(procs, timeout: float = GONE_S) -> list[str]:
    """Polls until every process is gone; returns the survivors, described, then killed (the test
    leaves none behind)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout and any(_alive(p) for p in procs):
        time.sleep(0.05)
    left = [p for p in procs if _alive(p)]
    described = _describe(left)
    # Workers first: multiprocessing's resource tracker then leaves by itself and frees the job's
    # semaphores in /dev/shm (killed, it would leave them there).
    trackers = [p for p in left if "resource_tracker" in _cmdline(p)]
    _kill([p for p in left if p not in trackers])
    psutil.wait_procs(trackers, timeout=5)
    _kill(trackers)
    return described


# ----------------------------------------------------------------------------- the main job


@pytest.fixture(scope="module")
def images(tmp_path_factory, celeba_copy):
    # More files than the loader prepares ahead (64): its workers wait on the job, alive, until killed.
    return celeba_copy(tmp_path_factory.mktemp("faces"), 100)


def _job(images, out):
    cmd = [sys.executable, "-m", "experiments.cms", "--model=tiny", f"--images={images}", f"--out_dir={out}",
           f"--align_cache={out}_cache", "--workers=2", "--chunk_images=1", "--batch_size=256"]
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # a real run: one device
    env["PYTHONPATH"] = ROOT
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _aligned(cache: str) -> int:
    """Landmark cache entries written so far: files the workers have aligned."""
    return sum(len(files) for _, _, files in os.walk(cache))


def _workers(proc: psutil.Process) -> list:
    """The multiprocessing (spawn) workers among the live descendants."""
    return [c for c in proc.children(recursive=True) if "spawn_main" in _cmdline(c)]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_job_workers_exit_when_the_job_is_killed(images, tmp_path, sig):
    out = str(tmp_path / "out")
    proc = _job(images, out)
    main = psutil.Process(proc.pid)
    # Mid-run: both workers up and aligning (past their start-up, so guarded by then).
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < 120:
        if len(_workers(main)) >= 2 and _aligned(out + "_cache") >= 2:
            break
        time.sleep(0.05)
    kids = main.children(recursive=True)
    ready = proc.poll() is None and len(_workers(main)) >= 2
    proc.send_signal(sig if ready else signal.SIGKILL)
    proc.wait()
    left = _wait_gone(kids)  # also kills what is left: the test leaves nothing behind
    assert ready, f"the job ended, or had no workers, before it could be killed: {_describe(kids)}"
    assert not left, f"{len(left)} of {len(kids)} processes outlived the job: {left}"


def test_loader_workers_outlive_a_restarted_prefetch_thread(images):
    """Grain starts its workers from prefetch threads that ``set_state`` restarts (as a resume does):
    a parent-death signal tied to such a thread would kill the workers of a live job."""
    from cms_jax import models
    from cms_jax.data.prepare import FacePreparer
    files = [os.path.join(images, n) for n in sorted(os.listdir(images))[:12]]
    prep = FacePreparer(models.load("tiny"), workers=2, in_flight=4)
    try:
        it = prep.loader(files)
        assert [next(it).path for _ in range(3)] == files[:3]
        state, workers = it.get_state(), _workers(psutil.Process())
        assert len(workers) == 2
        assert [next(it).path for _ in range(3)] == files[3:6]
        it.set_state(state)
        time.sleep(0.5)  # a parent-death signal would have struck by now (and the next read hang)
        assert all(_alive(w) for w in workers)  # the same workers, still there (they end with the list)
        assert [next(it).path for _ in range(3)] == files[3:6]
        assert [p.path for p in it] == files[6:]
    finally:
        prep.close()


# ----------------------------------------------------------------------------- align_files' pool


def _align_caller(paths: list[str]) -> None:
    """The intermediate process: aligns files with two pool workers (the figures', bench_align's path)."""
    from cms_jax.align import align_files
    align_files(paths, workers=2)


def _reader_of(fifo: str):
    """A write end of ``fifo`` once some process has it open for reading, else None."""
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO: no reader yet
        return None


def test_align_pool_workers_exit_when_the_caller_is_killed(tmp_path, shared_dir):
    # Named pipes that never deliver: each worker blocks reading its first file, as on a hung
    # network disk, so no broken result pipe would ever tell it that its parent is gone.
    fifos = [str(tmp_path / f"stuck{i}.jpg") for i in range(4)]
    for f in fifos:
        os.mkfifo(f)
    caller = multiprocessing.get_context("spawn").Process(target=_align_caller, args=(fifos,))
    caller.start()
    me = psutil.Process(caller.pid)
    ends = {}
    try:
        t0 = time.monotonic()  # wait until both workers (past their initializer) are reading
        while len(ends) < 2 and caller.is_alive() and time.monotonic() - t0 < 60:
            for f in fifos:
                if f not in ends and (fd := _reader_of(f)) is not None:
                    ends[f] = fd
            time.sleep(0.05)
        kids = me.children(recursive=True)
        ready = caller.is_alive() and len(ends) == 2 and len(_workers(me)) == 2
        os.kill(caller.pid, signal.SIGKILL)
        caller.join()
        left = _wait_gone(kids)
    finally:
        for fd in ends.values():
            os.close(fd)
    assert ready, f"the workers never blocked on their files: {_describe(kids)}"
    assert not left, f"{len(left)} of {len(kids)} processes outlived the caller: {left}"


# ----------------------------------------------------------------------------- the helper


def _report_pid(pid_file: str) -> None:
    with open(pid_file + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(pid_file + ".tmp", pid_file)


def _worker(token, poll_s: float, pid_file: str, orphaned_first: bool) -> None:
    """A worker that guards itself and then idles; reports its pid once guarded."""
    if orphaned_first:  # the race: the parent dies before the worker reaches its guard
        _report_pid(pid_file)
        while os.getppid() == token[0]:
            time.sleep(0.01)
    assert exit_with_parent(*token, poll_s=poll_s)
    assert not exit_with_parent(*token, poll_s=poll_s)  # once per parent
    _report_pid(pid_file)
    time.sleep(120)


def _parent(pdeathsig: bool, poll_s: float, pid_file: str, orphaned_first: bool) -> None:
    """The intermediate process: starts one worker, then idles until it is killed."""
    assert not exit_with_parent(*parent_token(), poll_s=poll_s)  # a no-op in the parent itself
    ctx = multiprocessing.get_context("spawn")
    ctx.Process(target=_worker, args=(parent_token(pdeathsig), poll_s, pid_file, orphaned_first)).start()
    time.sleep(120)


@pytest.mark.parametrize("pdeathsig,poll_s,orphaned_first", [
    (True, 60.0, False),   # only the parent-death signal can end it in time
    (False, 0.1, False),   # only the watch thread can
    (True, 60.0, True),    # the parent was dead before the guard: it exits at once
], ids=["pdeathsig", "watch", "parent_dead_first"])
def test_exit_with_parent(tmp_path, pdeathsig, poll_s, orphaned_first):
    if pdeathsig and not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux only")
    pid_file = str(tmp_path / "worker.pid")
    parent = multiprocessing.get_context("spawn").Process(
        target=_parent, args=(pdeathsig, poll_s, pid_file, orphaned_first))
    parent.start()
    try:
        t0 = time.monotonic()
        while not os.path.exists(pid_file) and parent.is_alive() and time.monotonic() - t0 < 60:
            time.sleep(0.02)
        assert os.path.exists(pid_file), "the worker never reported"
        child = psutil.Process(int(open(pid_file).read()))
        assert child.ppid() == parent.pid
    finally:
        os.kill(parent.pid, signal.SIGKILL)
        parent.join()
    assert not _wait_gone([child], timeout=5.0), "the worker outlived its parent"
