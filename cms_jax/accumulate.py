"""Canonical Model Saliency, Eq. 6: the mean of CIS maps over a test set.

:class:`CMSAccumulator` is streaming: it keeps a running float64 sum of CIS
maps and the number of images, so memory does not grow with the number of
images.  Its state is a plain dict of numpy arrays (checkpointable with Orbax)
and two states over the same canonical canvas merge by adding sums and counts,
across processes or resumed runs.  The paper's Eq. 6 is a mean
(default); the official code sums CIS maps (``reduce='sum'``).

Per-image drop vectors are the canonical record of a CIS; keeping them is the
caller's job, and :func:`cms_from_drops` forms the CMS of any subset from them
without rescoring.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cms_jax.occlusion import square_bounds
from cms_jax.projection import normalise, splat_rows

REDUCES = ("mean", "sum")


@functools.partial(jax.jit, static_argnames=("canvas_hw",))
def _sum_of_cis(values, ok, bounds, canvas_hw):
    """Sum over a batch of images of their CIS maps P_i (Eqs. 4-5)."""
    b = values.shape[0]
    rows = splat_rows(jnp.concatenate([jnp.where(ok, values, 0.0), ok.astype(jnp.float32)]),
                      bounds, canvas_hw)
    return normalise(rows[:b], rows[b:]).sum(axis=0)


class CMSAccumulator:
    """Streaming, mergeable CMS (Eq. 6) over CIS maps on one canonical canvas.

    The accumulator object holds only configuration; the running state is a
    plain dict ``{'sum': float64 (H_F, W_F), 'count': int64 ()}`` that the
    caller owns, checkpoints (Orbax) and merges.  Extra keys in a state (e.g.
    a run's progress) are carried through untouched.

    Example::

        acc = CMSAccumulator((619, 619))
        state = acc.empty_state()
        state = acc.add_drops(state, result.drops, result.valid, canon_xy, f)
        cms = acc.result(state)                 # (H_F, W_F) float32
    """

    def __init__(self, canvas_hw: tuple[int, int], *, reduce: str = "mean", batch: int = 8):
        """Builds the accumulator.

        Args:
            canvas_hw: (H_F, W_F) of the canonical canvas.
            reduce: 'mean' (Eq. 6) or 'sum' (the official code).
            batch: CIS maps computed together on the device (a fixed shape,
                so repeated calls never retrace).
        """
        if reduce not in REDUCES:
            raise ValueError(f"reduce must be one of {REDUCES}, got {reduce!r}")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.canvas_hw = (int(canvas_hw[0]), int(canvas_hw[1]))
        self.reduce = reduce
        self.batch = int(batch)

    def empty_state(self) -> dict[str, np.ndarray]:
        """A state with no image: zero sum map, count 0."""
        return {"sum": np.zeros(self.canvas_hw, np.float64), "count": np.asarray(0, np.int64)}

    def _check(self, state: dict[str, Any], name: str) -> None:
        if np.shape(state.get("sum")) != self.canvas_hw or "count" not in state:
            raise ValueError(f"{name}: state must hold 'sum' of shape {self.canvas_hw} and 'count', got "
                             f"keys {sorted(state)} with sum shape {np.shape(state.get('sum'))}")

    def add_drops(self, state: dict[str, Any], drops: np.ndarray, valid: np.ndarray | None,
                  canon_xy: np.ndarray, f: float) -> dict[str, Any]:
        """Adds the CIS maps (Eqs. 4-5) of one (V,) or many (N, V) drop vectors.

        Args:
            state: current state (not modified).
            drops: per-vertex drops S_v, (V,) or (N, V).
            valid: matching bool mask, or None (all valid).
            canon_xy: (V, 2) canonical vertex positions in canvas pixels.
            f: canonical square side ``f = sz * H_F / H_I``.

        Returns:
            The new state.
        """
        self._check(state, "add_drops")
        drops = np.atleast_2d(np.asarray(drops, np.float32))
        canon_xy = np.asarray(canon_xy, np.float64)
        if canon_xy.ndim != 2 or canon_xy.shape != (drops.shape[1], 2):
            raise ValueError(f"canon_xy must be (V, 2) with V = drops.shape[1] = {drops.shape[1]}, "
                             f"got {canon_xy.shape}")
        ok = (np.ones(drops.shape, bool) if valid is None
              else np.broadcast_to(np.asarray(valid, bool), drops.shape))
        ok = ok & np.isfinite(drops)
        bounds = jnp.asarray(square_bounds(canon_xy, f, self.canvas_hw))
        total = np.asarray(state["sum"], np.float64).copy()
        for s in range(0, len(drops), self.batch):
            d, o = drops[s:s + self.batch], ok[s:s + self.batch]
            pad = self.batch - len(d)  # padded images have no valid vertex, so P_i = 0
            d = np.pad(d, ((0, pad), (0, 0)))
            o = np.pad(o, ((0, pad), (0, 0)))
            total += np.asarray(_sum_of_cis(d, o, bounds, self.canvas_hw), np.float64)
        out = dict(state)
        out["sum"] = total
        out["count"] = np.asarray(int(state["count"]) + len(drops), np.int64)
        return out

    def merge(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        """Sum of two states (other processes, resumed runs); ``a``'s extra keys are kept."""
        self._check(a, "merge")
        self._check(b, "merge")
        out = dict(a)
        out["sum"] = np.asarray(a["sum"], np.float64) + np.asarray(b["sum"], np.float64)
        out["count"] = np.asarray(int(a["count"]) + int(b["count"]), np.int64)
        return out

    def result(self, state: dict[str, Any]) -> np.ndarray:
        """The CMS: mean (Eq. 6) or sum of the CIS maps in ``state``, (H_F, W_F) float32."""
        self._check(state, "result")
        total = np.asarray(state["sum"], np.float64)
        if self.reduce == "sum":
            return total.astype(np.float32)
        return (total / max(int(state["count"]), 1)).astype(np.float32)


def cms_from_drops(drops: np.ndarray, valid: np.ndarray | None, canon_xy: np.ndarray,
                   canvas_hw: tuple[int, int], f: float, reduce: str = "mean") -> np.ndarray:
    """The CMS (Eq. 6) of stored per-image drop vectors, without rescoring.

    Args:
        drops: (N, V) drops of the images in the subset or group.
        valid: (N, V) bool or None (all valid).
        canon_xy: (V, 2) canonical vertex positions.
        canvas_hw: (H_F, W_F).
        f: canonical square side.
        reduce: 'mean' (Eq. 6) or 'sum'.

    Returns:
        (H_F, W_F) float32 CMS.
    """
    acc = CMSAccumulator(canvas_hw, reduce=reduce)
    return acc.result(acc.add_drops(acc.empty_state(), drops, valid, canon_xy, f))
