"""The engine's work items (image, square) of Eq. 1: each distinct one scored once, batches packed.

Two kinds of exact waste are removed before anything reaches a device:

* **Repeated squares.** Neighbouring mesh vertices often round to the same
  occlusion square (Eqs. 2-3 floor the corner): on 20 real faces (gender crop,
  sz = 4) 22.6% of the copies repeated another copy's square of the same image.
  `unique_items` keeps one item per distinct (image, box); its drop is
  scattered back to every vertex that shares it. Same image, same square: the
  same occluded copy, so the drops are unchanged.
* **Padding.** Device batches have a fixed size so nothing retraces; the last
  batch of a group was padded to it (10.2% of the computed copies of a
  16-image chunk at 1024 a batch). `batch_plan` covers the remainder with a
  short ladder of smaller sizes (b/2, b/4, b/8), each compiled once, so at most
  b/8 - 1 copies per group are padding. The job scores a chunk as one group and
  checkpoints it, so items do not wait for the next chunk's batch.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from cms_jax import sharding as shd

MIN_LADDER_BATCH = 128  # below this a batch's fixed cost outweighs the padding it saves


def unique_items(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One work item per distinct (image, square).

    Args:
      image: (M,) int image of each item.
      boxes: (M, 4) int32 squares ``(x1, x2, y1, y2)``.

    Returns:
      ``(keep, inverse)``: indices of the items to score, in (image, x1, x2, y1, y2)
      order (a batch holds neighbouring squares of one image), and for each item
      the position in ``keep`` of its representative: ``scored[inverse]`` gives
      every item's value.
    """
    if len(image) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    key = np.concatenate([np.asarray(image, np.int64)[:, None], np.asarray(boxes, np.int64)], axis=1)
    _, keep, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    return keep, inverse.reshape(-1)


def ladder(batch: int, num_devices: int) -> list[int]:
    """Batch sizes a group's items are cut into: ``batch`` and its halvings down to b/8.

    Each is a multiple of ``num_devices``; sizes under `MIN_LADDER_BATCH` are left out
    (so a small batch has one size, as before).
    """
    sizes = [batch]
    for k in (2, 4, 8):
        s = shd.round_up(-(-batch // k), num_devices)
        if s >= MIN_LADDER_BATCH and s < sizes[-1]:
            sizes.append(s)
    return sizes


@dataclasses.dataclass(frozen=True)
class Batch:
    """Items ``[start, end)`` of a group, computed as a device batch of ``size`` (>= end - start)."""
    start: int
    end: int
    size: int


def batch_plan(n: int, sizes: list[int]) -> list[Batch]:
    """Cuts ``n`` items into batches of the ladder ``sizes`` (largest first) with the least padding.

    Full batches of ``sizes[0]``; the remainder takes the largest size that it fills,
    repeatedly, and its last piece the smallest size that holds it.
    """
    out, s = [], 0
    while s < n:
        r = n - s
        fits = [b for b in sizes if b <= r]
        size = fits[0] if fits else min(b for b in sizes if b >= r)
        out.append(Batch(s, min(n, s + size), size))
        s += size
    return out


@dataclasses.dataclass
class ItemCounts:
    """What an engine scored, summed over its runs (the job's ``summary.json["work_items"]``).

    Attributes:
      vertices: valid (image, vertex) pairs asked for.
      unique: distinct (image, square) copies among them (scored).
      computed: copies the devices computed, padding included.
    """
    vertices: int = 0
    unique: int = 0
    computed: int = 0

    def add(self, vertices: int, unique: int, computed: int) -> None:
        self.vertices += int(vertices)
        self.unique += int(unique)
        self.computed += int(computed)

    def add_counts(self, counts: dict) -> None:
        """Adds another count's `as_dict` (a checkpoint's, another process's)."""
        self.add(counts["vertices"], counts["unique"], counts["computed"])

    def as_dict(self) -> dict:
        """Counts plus the share removed by deduplication and the share of padding."""
        return {"vertices": self.vertices, "unique": self.unique, "computed": self.computed,
                "dedup_share": round(1 - self.unique / self.vertices, 4) if self.vertices else 0.0,
                "padding_share": round(1 - self.unique / self.computed, 4) if self.computed else 0.0}
