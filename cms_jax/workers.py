"""Worker processes die with the job: nothing the job starts outlives it.

A job killed outright (SIGKILL from a preempted VM or the out-of-memory killer,
SIGTERM, a crash) runs no clean-up, so its spawned host workers (the Grain
loader's, ``pipeline/prepare.py``; the landmarker pool's, ``align/batch.py``)
used to live on as orphans of PID 1, ~360 MB each, two more per kill-and-resume
cycle. Each worker calls `exit_with_parent` once, first thing, with the
`parent_token` its parent took just before starting it:

- Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, so the kernel kills the worker
  the moment its parent dies. The kernel ties that signal to the parent
  *thread* that created the worker, not to the process, so it is set only when
  that thread lives as long as the worker: the main thread, or a thread that
  joins its workers before it ends (``align_files``' pool). Grain starts its
  workers from its own prefetch threads, which stop and restart while the
  loader lives (``set_state`` on resume), so its workers skip it.
- Everywhere, and the only guard of Grain's workers: a daemon thread polling
  ``os.getppid()`` against the parent's pid recorded before spawning, calling
  ``os._exit`` within `POLL_S` seconds once it changes (the worker was
  re-parented). It also covers the race of a parent dead before the worker
  got this far: the first check is immediate.

Workers also ignore SIGINT and SIGTERM: a terminal's Ctrl-C reaches the whole
process group, a preempted machine's SIGTERM every process, and the job, not
its workers, decides how to stop (`pipeline.interrupt`).

The hooks: ``multiprocessing.Pool``'s ``initializer`` for the landmarker pool;
for Grain, the unpickling of the ``_PrepareFace`` transform in the worker
(its ``__setstate__``), because Grain 0.2.18's ``DataLoader`` takes no
``worker_init_fn`` (only the lower-level ``mp_prefetch`` does, and moving to
it would change the loader state kept in every run's checkpoint). Grain
unpickles the operations in the worker before it reads any record, and
pickles them in the very thread that then starts the worker, so the token
taken in ``__getstate__`` names that thread.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

POLL_S = 0.5  # seconds between parent checks in the watch thread
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_GUARDED: set[int] = set()  # parent pids this process already watches


def parent_token(pdeathsig: bool | None = None) -> tuple[int, bool]:
    """Taken in the parent, in the thread that starts the worker, just before it does.

    Args:
      pdeathsig: whether the worker may use the parent-death signal; default:
        only when this is the main thread (see the module docstring).

    Returns:
      ``(parent pid, pdeathsig)``: picklable, the arguments of `exit_with_parent`.
    """
    if pdeathsig is None:
        pdeathsig = threading.current_thread() is threading.main_thread()
    return os.getpid(), bool(pdeathsig)


def exit_with_parent(parent_pid: int, pdeathsig: bool = False, poll_s: float = POLL_S) -> bool:
    """Makes this worker process exit by itself when ``parent_pid`` dies.

    A no-op in the parent itself (an object unpickled where it was pickled) and
    on a second call for the same parent.

    Args:
      parent_pid: the parent's pid, recorded before this process started.
      pdeathsig: also set Linux's parent-death signal (SIGKILL).
      poll_s: seconds between checks of the watch thread.

    Returns:
      True when this call installed the guard.
    """
    if os.getpid() == parent_pid or parent_pid in _GUARDED:
        return False
    _GUARDED.add(parent_pid)
    _ignore_stop_signals()
    if pdeathsig and sys.platform.startswith("linux"):
        _set_pdeathsig(signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before we got here
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid, poll_s), name="exit-with-parent",
                     daemon=True).start()
    return True


def _ignore_stop_signals() -> None:
    # A terminal's Ctrl-C goes to the whole process group, a preempted machine's SIGTERM to every
    # process: the job stops itself at its next chunk (`pipeline.interrupt`) and its workers exit
    # with it; a worker that died first would only break the loader under it. Only the main
    # thread may set handlers.
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


def _set_pdeathsig(sig: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)  # this process's own symbols: libc's prctl among them
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        err = ctypes.get_errno()  # the watch thread still guards this worker
        print(f"exit_with_parent: prctl(PR_SET_PDEATHSIG) failed: {os.strerror(err)}", file=sys.stderr)


def _watch(parent_pid: int, poll_s: float) -> None:
    while os.getppid() == parent_pid:
        time.sleep(poll_s)
    os._exit(1)  # no clean-up: the job that would read our results is gone
