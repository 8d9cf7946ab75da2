"""When a run must stop loudly instead of writing an empty or misleading result.

One bad image never stops a run: it is skipped with its reason. A systematic
failure does, with a non-zero exit, the first traceback and the counts:

* the same exception (type and message, file names left out) recurs in
  ``consecutive`` chunks in a row: a model bug, out of memory, a broken
  install; the last checkpoint is kept, so a fixed run resumes from it;
* no image was scored at all;
* more than ``max_skip_fraction`` of the images were skipped (for any reason,
  "no face" included): the outputs are written, then the run fails, because a
  CMS of the few faces that passed is not the CMS of the data set.
"""
from __future__ import annotations

import os
import re


class RunFailed(RuntimeError):
    """A CMS run stopped for a systematic reason (the message says which, with counts)."""


def signature(exc: BaseException, path: str = "") -> str:
    """What makes two exceptions 'the same': the type and first message line, file names removed."""
    msg = str(exc).splitlines()[0] if str(exc) else ""
    for p in sorted({path, os.path.basename(path)} - {""}, key=len, reverse=True):
        msg = msg.replace(p, "<file>")
    msg = re.sub(r"0x[0-9a-f]+", "0x…", msg)
    return f"{type(exc).__name__}: {msg[:200]}"


class FailurePolicy:
    """Tracks exceptions chunk by chunk and decides when a run has failed systematically.

    Args:
      consecutive: stop when one exception signature appears in this many chunks in a row.
      max_skip_fraction: at the end, fail when skipped / total is above this (1.0 disables).
    """

    def __init__(self, consecutive: int = 3, max_skip_fraction: float = 0.5):
        if consecutive < 1:
            raise ValueError(f"consecutive must be >= 1, got {consecutive}")
        if not 0.0 <= max_skip_fraction <= 1.0:
            raise ValueError(f"max_skip_fraction must be in [0, 1], got {max_skip_fraction}")
        self.consecutive = consecutive
        self.max_skip_fraction = max_skip_fraction
        self.first_traceback: str | None = None
        self._streak: dict[str, int] = {}
        self.exceptions = 0

    def chunk(self, errors: list[tuple[str, str]], counts: str) -> None:
        """Record one chunk's exceptions as ``(signature, traceback)``; raise `RunFailed` on a streak."""
        self.exceptions += len(errors)
        for _, tb in errors[:1]:
            self.first_traceback = self.first_traceback or tb
        sigs = {s for s, _ in errors}
        self._streak = {s: self._streak.get(s, 0) + 1 for s in sigs}
        worst = max(self._streak.items(), key=lambda kv: kv[1], default=(None, 0))
        if worst[1] >= self.consecutive:
            raise RunFailed(f"the same exception in {worst[1]} consecutive chunks, stopping: {worst[0]}\n"
                            f"{counts}\nfirst traceback:\n{self.first_traceback}")

    def final(self, *, total: int, done: int, skipped: int, reasons: dict[str, int]) -> None:
        """Raise `RunFailed` when no image was scored or too many were skipped."""
        counts = f"{total} images: {done} scored, {skipped} skipped ({_top(reasons)})"
        tb = f"\nfirst traceback:\n{self.first_traceback}" if self.first_traceback else ""
        if total and done == 0:
            raise RunFailed(f"no image was scored. {counts}{tb}")
        if total and skipped / total > self.max_skip_fraction:
            raise RunFailed(f"{skipped / total:.1%} of the images were skipped, more than "
                            f"--max_skip_fraction={self.max_skip_fraction}. {counts}{tb}")


def _top(reasons: dict[str, int], k: int = 5) -> str:
    items = sorted(reasons.items(), key=lambda kv: -kv[1])
    out = "; ".join(f"{n} x {r}" for r, n in items[:k])
    return out + (f"; and {len(items) - k} other reasons" if len(items) > k else "") if items else "none"


def reason_counts(skipped: list[dict]) -> dict[str, int]:
    """Skipped images counted by reason (exception messages grouped by their type)."""
    out: dict[str, int] = {}
    for s in skipped:
        r = s["reason"]
        key = r.split(":")[0] + ": " + r.split(":")[1].strip() if r.startswith(("error:", "scoring failed:")) else r
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))
