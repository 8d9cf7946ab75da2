"""A progress line for long runs: count, rate and ETA, at most once a second."""
from __future__ import annotations

import sys
import time


class Progress:
    """Prints ``done/total  rate img/s  ETA`` to stderr, throttled."""

    def __init__(self, total: int, done: int = 0, label: str = "cms", stream=None, every_s: float = 1.0):
        self.total, self.done, self.label = total, done, label
        self.start_done = done
        self.t0 = time.monotonic()
        self.last = 0.0
        self.every_s = every_s
        self.stream = stream or sys.stderr

    @property
    def rate(self) -> float:
        dt = time.monotonic() - self.t0
        return (self.done - self.start_done) / dt if dt > 0 else 0.0

    def update(self, n: int, skipped: int = 0, force: bool = False) -> None:
        self.done += n
        now = time.monotonic()
        if not force and now - self.last < self.every_s and self.done < self.total:
            return
        self.last = now
        rate = self.rate
        left = self.total - self.done
        eta = left / rate if rate > 0 else float("inf")
        eta_s = "--:--" if eta == float("inf") else time.strftime("%H:%M:%S", time.gmtime(eta))
        self.stream.write(f"\r[{self.label}] {self.done}/{self.total} images  "
                          f"{rate:.1f} img/s  skipped {skipped}  ETA {eta_s}   ")
        if self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()
