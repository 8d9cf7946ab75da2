"""A progress line for long runs (count, rate, ETA) and the seconds each stage of a run takes."""
from __future__ import annotations

import collections
import contextlib
import sys
import time


class StageTimer:
    """Wall seconds per named stage, summed over a run: ``with timer("score"): ...``.

    One ``perf_counter`` pair per timed block, so the overhead is well under a
    microsecond per chunk. Stages must not nest if their sum is to be compared
    with the run's wall time.
    """

    def __init__(self):
        self.seconds: dict[str, float] = collections.defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, stage: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - t

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] += float(seconds)

    def iterate(self, iterable, stage: str):
        """Yield from ``iterable``, timing each wait for the next item as ``stage``."""
        it = iter(iterable)
        while True:
            with self(stage):
                try:
                    item = next(it)
                except StopIteration:
                    return
            yield item

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in self.seconds.items()}


class Progress:
    """One line, rewritten in place: ``[label] done/total unit  rate unit/s  note  ETA``, throttled.

    The one progress printer of the project: the CMS job counts images (note: images
    skipped), fine-tuning counts optimiser steps (note: the loss and images/s).

    Args:
      total: count at the end.
      done: count already done (a resumed run); the rate counts from here.
      label: shown in brackets.
      unit: what is counted ('images', 'steps').
      stream: where the line goes (default stderr).
      every_s: at most one line per this many seconds (the last one always).
    """

    def __init__(self, total: int, done: int = 0, label: str = "cms", unit: str = "images", stream=None,
                 every_s: float = 1.0):
        self.total, self.done, self.label, self.unit = total, done, label, unit
        self.start_done = done
        self.t0 = time.monotonic()
        self.last = -float("inf")  # the first line is always printed (monotonic() may be < every_s after boot)
        self.every_s = every_s
        self.stream = stream or sys.stderr
        self._ended = False

    @property
    def rate(self) -> float:
        """Count per second since the start (or the resume)."""
        dt = time.monotonic() - self.t0
        return (self.done - self.start_done) / dt if dt > 0 else 0.0

    def update(self, n: int, note=None, force: bool = False) -> None:
        """Add ``n`` to the count and print the line when due.

        Args:
          n: newly done.
          note: text after the rate, or a function returning it (called only when the line is
            printed, e.g. one that reads a device value).
          force: print even within ``every_s`` of the last line.
        """
        self.done += n
        now = time.monotonic()
        if self._ended or (not force and now - self.last < self.every_s and self.done < self.total):
            return
        self.last = now
        rate = self.rate
        left = self.total - self.done
        eta = left / rate if rate > 0 else float("inf")
        eta_s = "--:--:--" if eta == float("inf") else time.strftime("%H:%M:%S", time.gmtime(eta))
        text = note() if callable(note) else note
        rate_s = f"{rate:.1f}" if rate >= 10 else f"{rate:.2f}"
        self.stream.write(f"\r[{self.label}] {self.done}/{self.total} {self.unit}  {rate_s} {self.unit}/s  "
                          + (f"{text}  " if text else "") + f"ETA {eta_s}   ")
        if self.done >= self.total and not self._ended:
            self.stream.write("\n")
            self._ended = True
        self.stream.flush()

    def close(self) -> None:
        """End the line (once), e.g. when a run stops before ``total``."""
        if not self._ended:
            self.stream.write("\n")
            self.stream.flush()
            self._ended = True


def peak_rss_mb() -> float:
    """This process's own peak resident memory (``VmHWM``).

    Not ``getrusage().ru_maxrss``: Linux carries that over fork and exec, so a job started by a
    big parent (a test runner) would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    import resource
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def memory_mb() -> dict[str, float]:
    """Resident memory now: this process (``rss_mb``, and its peak so far) and its worker processes."""
    import psutil

    me = psutil.Process()
    kids = 0.0
    for child in me.children(recursive=True):
        try:
            kids += child.memory_info().rss
        except psutil.Error:  # exited meanwhile
            pass
    return {"rss_mb": round(me.memory_info().rss / 2**20, 1),
            "peak_rss_mb": peak_rss_mb(),
            "workers_rss_mb": round(kids / 2**20, 1)}


class ThroughputLog:
    """One row per ``every`` images of a process's shard: images/s over those images, and memory.

    The rows answer "does throughput hold, does memory stay flat" for a long run; they survive a
    resume (``rows`` goes into the checkpoint), and the first interval after a resume is timed
    from the restart.
    """

    def __init__(self, rows: list[dict] | None = None, done: int = 0, seconds_before: float = 0.0,
                 every: int = 1000):
        self.rows = list(rows or [])
        self.every = every
        self._t0 = time.monotonic()
        self._before = seconds_before
        self._last = (done, self._t0)

    def update(self, done: int) -> None:
        if done // self.every <= self._last[0] // self.every:
            return
        now = time.monotonic()
        n, t = self._last
        self.rows.append({"images": done, "seconds": round(self._before + now - self._t0, 1),
                          "images_per_second": round((done - n) / max(now - t, 1e-9), 3), **memory_mb()})
        self._last = (done, now)
