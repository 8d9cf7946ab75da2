"""Ctrl-C and preemption: SIGINT or SIGTERM stops the job at the next chunk, with a checkpoint.

Python's default SIGINT raises KeyboardInterrupt wherever the main thread is.
Inside XLA's first compile that unwinds the interpreter while compiler threads
still run (seen: a traceback, then ``Fatal Python error: Segmentation fault``,
exit 139), and anywhere else it loses what was scored since the last periodic
checkpoint. Under `guard` both signals only set a flag and print one line: the
job finishes the chunk in hand (a compile in progress included), saves a
checkpoint of everything scored (`run.score_share`) and raises `Interrupted`,
which the command turns into "resume with ... --resume" and exit status
128 + signal (130 for SIGINT, 143 for SIGTERM). A second signal stops at once
(``os._exit``, no unwinding): the last checkpoint stands and a resume redoes
what came after it.

Host workers ignore SIGINT (`cms_jax.workers.exit_with_parent`), so a
terminal's Ctrl-C, sent to the whole process group, reaches the job alone;
they exit with it. `Interrupted` is a KeyboardInterrupt, so ``except
Exception`` does not swallow it and a notebook shows an interrupted cell.
In a multi-host run each process stops on its own signal.
"""
from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The job stopped on a signal after saving what it had scored.

    Attributes:
      signum: the signal (SIGINT or SIGTERM).
      done: images of this process's share read so far (scored or skipped).
      total: images in this process's share.
      scored: images scored so far.
      resumable: a checkpoint holds them (False: stopped before the first one).
    """

    def __init__(self, signum: int, done: int = 0, total: int = 0, scored: int = 0, resumable: bool = False):
        self.signum, self.done, self.total, self.scored, self.resumable = signum, done, total, scored, resumable
        super().__init__(f"{signal.Signals(signum).name}: {done} of {total} images done ({scored} scored)"
                         + ("; checkpoint saved" if resumable else "; nothing saved yet"))

    @property
    def exit_code(self) -> int:
        """The shell's status for death by this signal: 128 + signum."""
        return 128 + int(self.signum)


class StopRequest:
    """The flag the signal handlers set; the job reads it between chunks."""

    def __init__(self):
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None

    def handle(self, signum, frame) -> None:
        del frame
        name = signal.Signals(signum).name
        if self.signum is not None:
            print(f"\ncms: second {name}: stopping now; what was scored after the last checkpoint is redone "
                  f"by --resume", file=sys.stderr, flush=True)
            os._exit(128 + int(signum))
        self.signum = signum
        print(f"\ncms: {name}: stopping after the images being scored, with a checkpoint "
              f"(send it again to stop at once)", file=sys.stderr, flush=True)

    def raise_if_set(self, **progress) -> None:
        """Raise `Interrupted` (with ``progress``: done, total, scored, resumable) if a signal came."""
        if self.signum is not None:
            raise Interrupted(self.signum, **progress)


_ACTIVE: StopRequest | None = None


@contextlib.contextmanager
def guard():
    """SIGINT/SIGTERM set a `StopRequest` inside this block (re-entrant: an inner guard shares it).

    Outside the main thread handlers cannot be installed: the request is then never set and the
    signals keep their handlers.
    """
    global _ACTIVE
    if _ACTIVE is not None:
        yield _ACTIVE
        return
    req = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield req
        return
    old = {s: signal.signal(s, req.handle) for s in SIGNALS}
    _ACTIVE = req
    try:
        yield req
    finally:
        _ACTIVE = None
        for s, h in old.items():
            signal.signal(s, h)


def resume_command(argv, *, resume: bool = True, prog: str | None = None) -> str:
    """The command line that continues this run: the same flags, --resume instead of --overwrite.

    ``prog`` names the command (default: ``cms-jax`` or ``python -m experiments.cms``, by argv[0]).
    """
    if prog is None:
        prog = "cms-jax" if os.path.basename(argv[0]) == "cms-jax" else "python -m experiments.cms"
    drop = ("--resume", "--noresume", "--overwrite", "--nooverwrite")
    args = [a for a in argv[1:] if a.split("=")[0] not in drop]
    return " ".join([prog, *map(shlex.quote, args)] + (["--resume"] if resume else []))
