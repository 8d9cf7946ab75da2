"""Canonical Model Saliency, Eq. 6: the mean of CIS maps over a test set.

:class:`CMSAccumulator` is streaming: it keeps a running float64 sum of CIS
maps and the number of images, so memory does not grow with the number of
images.  Its state is a plain dict of numpy arrays (checkpointable with Orbax)
and two states over the same canonical canvas merge by adding sums and counts,
across processes or resumed runs.  The paper's Eq. 6 is a mean
(default); the official code sums CIS maps (``reduce='sum'``).

Eq. 6's mean divides by every image, also at pixels an image's CIS does not
reach (its vertices there were invisible or outside the crop: its map is 0
there). Where coverage varies (profile faces, crops that cut the chin) this
quietly lowers the CMS. ``reduce='covered'`` divides each pixel's sum by the
number of images whose CIS reaches it instead; the state always counts them
(``covered``), so either reading is available.

Per-image drop vectors are the canonical record of a CIS; keeping them is the
caller's job, and :func:`cms_from_drops` forms the CMS of any subset from them
without rescoring. Each image's CIS is splatted with its own canonical side
f_i (Algorithm 1, line 4): one side for every image of a run with ``loose`` or
``tight`` crops, one per image with ``whole`` crops (drops.npz keeps them).
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cms_jax.occlusion import square_bounds
from cms_jax.projection import count_normalise, splat_rows

REDUCES = ("mean", "sum", "covered")


@functools.partial(jax.jit, static_argnames=("canvas_hw", "normalise"))
def _sum_of_cis(values, ok, bounds, member, canvas_hw, normalise=True):
    """Sums over a batch of images of their CIS maps P_i (Eqs. 4-5): all of them, and per group.

    ``bounds`` is (V, 4) when every image has the same canonical side (one splat of all rows) or
    (B, V, 4), each image's squares at its own side. ``member`` (B, G) is 1 where image b belongs
    to group g (or any weight: a bootstrap draw's count of image b); returns the sums of the maps
    ((H, W), (G, H, W)) and the numbers of images covering each pixel (same shapes). Without
    ``normalise`` the maps are the raw splats P* (Eq. 4).
    """
    b = values.shape[0]
    vals, ones = jnp.where(ok, values, 0.0), ok.astype(jnp.float32)
    if bounds.ndim == 2:
        rows = splat_rows(jnp.concatenate([vals, ones]), bounds, canvas_hw)
        p_star, count = rows[:b], rows[b:]
    else:
        rows = jax.vmap(lambda w, bd: splat_rows(w, bd, canvas_hw))(jnp.stack([vals, ones], 1), bounds)
        p_star, count = rows[:, 0], rows[:, 1]
    maps = count_normalise(p_star, count) if normalise else p_star
    reach = (count > 0).astype(jnp.float32)  # pixels each image's CIS covers (N_i > 0, Eq. 5)
    return (maps.sum(axis=0), jnp.einsum("bhw,bg->ghw", maps, member), reach.sum(axis=0),
            jnp.einsum("bhw,bg->ghw", reach, member))


def per_image_sides(f, n: int) -> np.ndarray:
    """The canonical side of each of ``n`` images, float64 (n,), from one side or one per image.

    Raises:
        ValueError: ``f`` is neither a scalar nor (n,), or a side is not finite and > 0.
    """
    sides = np.asarray(f, np.float64)
    if sides.ndim > 1 or (sides.ndim == 1 and sides.shape != (n,)):
        raise ValueError(f"f must be one canonical side or one per image ({n},), got shape {sides.shape}")
    sides = np.broadcast_to(sides, (n,))
    bad = ~(np.isfinite(sides) & (sides > 0))
    if bad.any():
        raise ValueError(f"canonical sides must be finite and > 0, got {sides[bad][:5]}")
    return sides


def _bounds(canon_xy: np.ndarray, f, n: int, canvas_hw: tuple[int, int]) -> np.ndarray:
    """The canonical squares: (V, 4) when all ``n`` images share one side, else (n, V, 4)."""
    sides = per_image_sides(f, n)
    if len(sides) > 1 and (sides != sides[0]).any():  # each image's squares at its own side
        return np.stack([square_bounds(canon_xy, side, canvas_hw) for side in sides])
    return square_bounds(canon_xy, sides[0] if len(sides) else 1.0, canvas_hw)  # loose and tight crops


def weighted_cis_sums(drops: np.ndarray, valid: np.ndarray | None, canon_xy: np.ndarray, f,
                      canvas_hw: tuple[int, int], weights: np.ndarray, *, normalise: bool = True,
                      batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``sum_b w[b, g] P_b`` for G weightings of the same N images' CIS maps (Eqs. 4-5), in one pass.

    With ``weights`` the multinomial counts of G bootstrap draws of the faces, row g divided by N
    is draw g's CMS (Eq. 6's mean); every draw comes from one splat of each image.

    Args:
        drops, valid: (N, V) per-vertex drops and their mask (None: all valid).
        canon_xy: (V, 2) canonical vertex positions; f: one canonical side or (N,).
        canvas_hw: (H_F, W_F).
        weights: (N, G) float weights.
        normalise: count-normalised CIS maps P (Eq. 5); False: the raw splats P* (Eq. 4).
        batch: images splatted together.

    Returns:
        ``(sums, covered)``, both (G, H_F, W_F) float32: the weighted sums of the maps, and of the
        images whose CIS reaches each pixel (for ``reduce='covered'``).
    """
    drops = np.atleast_2d(np.asarray(drops, np.float32))
    w = np.asarray(weights, np.float32)
    if w.ndim != 2 or len(w) != len(drops):
        raise ValueError(f"weights must be (N, G) with N = {len(drops)} images, got {w.shape}")
    ok = (np.ones(drops.shape, bool) if valid is None else np.broadcast_to(np.asarray(valid, bool), drops.shape))
    ok = ok & np.isfinite(drops)
    bounds = _bounds(np.asarray(canon_xy, np.float64), f, len(drops), canvas_hw)
    hw = (int(canvas_hw[0]), int(canvas_hw[1]))
    sums = jnp.zeros((w.shape[1],) + hw, jnp.float32)
    cover = jnp.zeros_like(sums)
    for s in range(0, len(drops), batch):
        d, o, m = drops[s:s + batch], ok[s:s + batch], w[s:s + batch]
        pad = batch - len(d)
        d, o, m = (np.pad(a, ((0, pad), (0, 0))) for a in (d, o, m))
        bd = bounds if bounds.ndim == 2 else np.pad(bounds[s:s + batch], ((0, pad), (0, 0), (0, 0)))
        _, per, _, cov = _sum_of_cis(d, o, jnp.asarray(bd), m, hw, normalise)
        sums, cover = sums + per, cover + cov
    return np.asarray(sums), np.asarray(cover)


class CMSAccumulator:
    """Streaming, mergeable CMS (Eq. 6) over CIS maps on one canonical canvas.

    The accumulator object holds only configuration; the running state is a
    plain dict ``{'sum': float64 (H_F, W_F), 'count': int64 ()}`` that the
    caller owns, checkpoints (Orbax) and merges.  With ``groups`` (names of
    image groups, e.g. races) the state also holds ``group_sum`` float64
    (G, H_F, W_F) and ``group_count`` int64 (G,): the Eq. 6 sums of each group,
    from the same rendered CIS maps.  Extra keys in a state (e.g. a run's
    progress) are carried through untouched.

    Example::

        acc = CMSAccumulator((619, 619))
        state = acc.empty_state()
        state = acc.add_drops(state, result.drops, result.valid, canon_xy, result.sides)
        cms = acc.result(state)                 # (H_F, W_F) float32
    """

    def __init__(self, canvas_hw: tuple[int, int], *, reduce: str = "mean", batch: int = 8,
                 groups: tuple[str, ...] = ()):
        """Builds the accumulator.

        Args:
            canvas_hw: (H_F, W_F) of the canonical canvas.
            reduce: 'mean' (Eq. 6), 'sum' (the official code) or 'covered'
                (each pixel's sum over the images whose CIS reaches it).
            batch: CIS maps computed together on the device (a fixed shape,
                so repeated calls never retrace).
            groups: names of the groups whose sums are kept too (empty: none).
        """
        if reduce not in REDUCES:
            raise ValueError(f"reduce must be one of {REDUCES}, got {reduce!r}")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.canvas_hw = (int(canvas_hw[0]), int(canvas_hw[1]))
        self.reduce = reduce
        self.batch = int(batch)
        self.groups = tuple(groups)

    def empty_state(self) -> dict[str, np.ndarray]:
        """A state with no image: zero sum map, count 0 (and zero group sums and counts)."""
        out = {"sum": np.zeros(self.canvas_hw, np.float64), "count": np.asarray(0, np.int64),
               "covered": np.zeros(self.canvas_hw, np.float64)}
        if self.groups:
            out["group_sum"] = np.zeros((len(self.groups),) + self.canvas_hw, np.float64)
            out["group_count"] = np.zeros(len(self.groups), np.int64)
            out["group_covered"] = np.zeros((len(self.groups),) + self.canvas_hw, np.float64)
        return out

    def _check(self, state: dict[str, Any], name: str) -> None:
        if np.shape(state.get("sum")) != self.canvas_hw or "count" not in state:
            raise ValueError(f"{name}: state must hold 'sum' of shape {self.canvas_hw} and 'count', got "
                             f"keys {sorted(state)} with sum shape {np.shape(state.get('sum'))}")

    def add_drops(self, state: dict[str, Any], drops: np.ndarray, valid: np.ndarray | None,
                  canon_xy: np.ndarray, f, group_of=None) -> dict[str, Any]:
        """Adds the CIS maps (Eqs. 4-5) of one (V,) or many (N, V) drop vectors.

        Args:
            state: current state (not modified).
            drops: per-vertex drops S_v, (V,) or (N, V).
            valid: matching bool mask, or None (all valid).
            canon_xy: (V, 2) canonical vertex positions in canvas pixels.
            f: the canonical square side, one for every image or an (N,) array, one per
                image (``whole`` crops: `cms_jax.scoring.geometry.face_canonical_side`).
            group_of: each image's group name (or None: in no group), when the
                accumulator keeps group sums.

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
        member = np.zeros((len(drops), max(len(self.groups), 1)), np.float32)
        if self.groups:
            if group_of is None or len(group_of) != len(drops):
                raise ValueError(f"add_drops: this accumulator keeps groups {self.groups}; give group_of, "
                                 f"one name (or None) per image")
            index = {g: i for i, g in enumerate(self.groups)}
            for b, g in enumerate(group_of):
                if g is not None:
                    if g not in index:
                        raise ValueError(f"add_drops: group {g!r} is not one of {self.groups}")
                    member[b, index[g]] = 1.0
        bounds = _bounds(canon_xy, f, len(drops), self.canvas_hw)
        total = np.asarray(state["sum"], np.float64).copy()
        covered = np.asarray(state.get("covered", np.zeros(self.canvas_hw)), np.float64).copy()
        by_group = np.zeros(member.shape[1:] + self.canvas_hw, np.float64)
        cov_group = np.zeros_like(by_group)
        for s in range(0, len(drops), self.batch):
            d, o, m = drops[s:s + self.batch], ok[s:s + self.batch], member[s:s + self.batch]
            pad = self.batch - len(d)  # padded images have no valid vertex, so P_i = 0
            d, o, m = (np.pad(a, ((0, pad), (0, 0))) for a in (d, o, m))
            bd = bounds if bounds.ndim == 2 else np.pad(bounds[s:s + self.batch], ((0, pad), (0, 0), (0, 0)))
            all_, per, cov, cov_per = _sum_of_cis(d, o, jnp.asarray(bd), m, self.canvas_hw)
            total += np.asarray(all_, np.float64)
            by_group += np.asarray(per, np.float64)
            covered += np.asarray(cov, np.float64)
            cov_group += np.asarray(cov_per, np.float64)
        out = dict(state)
        out["sum"] = total
        out["count"] = np.asarray(int(state["count"]) + len(drops), np.int64)
        out["covered"] = covered
        if self.groups:
            out["group_covered"] = np.asarray(state["group_covered"], np.float64) + cov_group
            out["group_sum"] = np.asarray(state["group_sum"], np.float64) + by_group
            out["group_count"] = np.asarray(state["group_count"], np.int64) + member.sum(0).astype(np.int64)
        return out

    def merge(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        """Sum of two states (other processes, resumed runs); ``a``'s extra keys are kept."""
        self._check(a, "merge")
        self._check(b, "merge")
        out = dict(a)
        out["sum"] = np.asarray(a["sum"], np.float64) + np.asarray(b["sum"], np.float64)
        out["count"] = np.asarray(int(a["count"]) + int(b["count"]), np.int64)
        out["covered"] = np.asarray(a.get("covered", 0.0), np.float64) + np.asarray(b.get("covered", 0.0), np.float64)
        for k in ("group_sum", "group_count", "group_covered"):
            if self.groups:
                out[k] = np.asarray(a[k]) + np.asarray(b[k])
        return out

    def group_results(self, state: dict[str, Any], min_size: int = 1) -> dict[str, np.ndarray]:
        """Each group's CMS (Eq. 6 over its images), for groups with at least ``min_size`` images."""
        out = {}
        for i, g in enumerate(self.groups):
            n = int(state["group_count"][i])
            if n >= min_size:
                out[g] = self._reduce(np.asarray(state["group_sum"][i], np.float64), n,
                                      np.asarray(state["group_covered"][i], np.float64))
        return out

    def result(self, state: dict[str, Any]) -> np.ndarray:
        """The CMS: mean (Eq. 6) or sum of the CIS maps in ``state``, (H_F, W_F) float32."""
        self._check(state, "result")
        return self._reduce(np.asarray(state["sum"], np.float64), int(state["count"]),
                            np.asarray(state.get("covered", np.zeros(self.canvas_hw)), np.float64))

    def _reduce(self, total: np.ndarray, count: int, covered: np.ndarray) -> np.ndarray:
        if self.reduce == "sum":
            return total.astype(np.float32)
        if self.reduce == "covered":
            return np.where(covered > 0, total / np.maximum(covered, 1.0), 0.0).astype(np.float32)
        return (total / max(count, 1)).astype(np.float32)


def cms_from_drops(drops: np.ndarray, valid: np.ndarray | None, canon_xy: np.ndarray,
                   canvas_hw: tuple[int, int], f, reduce: str = "mean") -> np.ndarray:
    """The CMS (Eq. 6) of stored per-image drop vectors, without rescoring.

    Args:
        drops: (N, V) drops of the images in the subset or group.
        valid: (N, V) bool or None (all valid).
        canon_xy: (V, 2) canonical vertex positions.
        canvas_hw: (H_F, W_F).
        f: canonical square side, one for all or (N,) one per image (drops.npz's ``canonical_side``).
        reduce: 'mean' (Eq. 6), 'sum' or 'covered'.

    Returns:
        (H_F, W_F) float32 CMS.
    """
    acc = CMSAccumulator(canvas_hw, reduce=reduce)
    return acc.result(acc.add_drops(acc.empty_state(), drops, valid, canon_xy, f))
