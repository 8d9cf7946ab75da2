"""The running CMS of a job (Eq. 6): its accumulator state, per group too, as a checkpoint holds it.

`RunSums` adds each scored chunk's CIS maps (Eqs. 4-5, each image at its own
canonical side) to a `CMSAccumulator` state, reads each image's group once
per chunk from the tables of ``--groups`` (read once per run), and converts the
state to and from the plain dict of the Orbax checkpoint, where the position
in the image order travels with it.
"""
from __future__ import annotations

import numpy as np

from cms_jax import sources
from cms_jax.accumulate import CMSAccumulator


class RunSums:
    """Accumulator state of one run.

    Attributes:
      acc: the `CMSAccumulator` (canvas, reduce, group names).
      state: its current state (sum, count, covered; per group when ``--groups``).
    """

    def __init__(self, cfg, canon):
        """An empty state on ``canon``'s canvas, with the groups of ``cfg.groups`` and ``cfg.reduce``."""
        self._canon_xy = canon.vertices
        groups = sources.values(cfg.groups) if cfg.groups else ()
        self._group_of = sources.reader(cfg.groups) if cfg.groups else None  # tables read once
        self.acc = CMSAccumulator(canon.canvas_hw, reduce=cfg.reduce, groups=groups)
        self.state = self.acc.empty_state()

    @property
    def count(self) -> int:
        """Images accumulated so far."""
        return int(self.state["count"])

    def add(self, result) -> None:
        """Add a scored chunk's CIS maps (Eqs. 4-5; ``result``: a `scoring.ChunkResult`) to the sums (Eq. 6)."""
        group_of = self._group_of(result.files) if self._group_of else None
        self.state = self.acc.add_drops(self.state, result.drops, result.valid, self._canon_xy, result.sides,
                                        group_of=group_of)

    def checkpoint(self, next_index: int) -> dict:
        """Checkpointable state: the sums and counts, and the position in the image order."""
        return {**self.state, "next_index": np.asarray(next_index, np.int64)}

    def restore(self, state: dict) -> int:
        """Take the sums from a checkpoint's ``state``; returns its ``next_index``."""
        self.state = {k: np.asarray(state[k]) for k in self.acc.empty_state()}
        return int(state["next_index"])

    def merge_from(self, states: list[dict]) -> None:
        """Replace the state by the sum of ``states`` (every process's, in process order, float64)."""
        total = self.acc.empty_state()
        for s in states:
            total = self.acc.merge(total, s)
        self.state = total

    def cms(self) -> np.ndarray:
        """The CMS so far (Eq. 6: mean of the CIS maps, or their sum)."""
        return self.acc.result(self.state)

    def group_maps(self) -> dict[str, np.ndarray]:
        """Each group's CMS so far (empty without ``--groups``)."""
        return self.acc.group_results(self.state) if self.acc.groups else {}
