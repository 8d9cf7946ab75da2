"""Projection onto the canonical face, Eqs. 4-5 (Algorithm 1, lines 4 and 8-14).

Each vertex value is splatted (scatter-added) into a square of side
``f = sz * H_F / H_I`` around its canonical position, with the official
code's bounds ``x1 = max(0, floor(x - f/2)); x2 = min(floor(x1 + f), W_F)``
(same for y), a count map N alongside, and ``P = P* / N`` with P = 0 where
N = 0 (density normalisation, Eq. 5).

The scatter-add of axis-aligned squares is computed exactly as a separable
product: ``P*[y, x] = sum_v 1[y in rows_v] * value_v * 1[x in cols_v]``, i.e.
``Ry^T diag(values) Rx`` with 0/1 indicator matrices.  Every canvas pixel
sums only the values whose square covers it (no cancellation), it maps onto
matrix units, and a scan over vertex chunks keeps memory bounded for any V.
The same splat onto an image's own vertices reprojects a CMS onto that image
(Fig. 6d).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cms_jax.occlusion import square_bounds

_CHUNK = 2048  # vertices per scan step: (chunk x (H + W)) indicator floats live at once


@functools.partial(jax.jit, static_argnames=("canvas_hw",))
def splat_rows(weights: jax.Array, bounds: jax.Array, canvas_hw: tuple[int, int]) -> jax.Array:
    """Scatter-adds each row of per-vertex weights into the vertices' squares.

    Args:
        weights: (M, V) float32, M independent maps (e.g. values and counts).
        bounds: (V, 4) int32 ``(x1, x2, y1, y2)`` from :func:`square_bounds`.
        canvas_hw: static (H, W) of the canvas.

    Returns:
        (M, H, W) float32 sums ``P*`` for each row of ``weights``.
    """
    h, w = canvas_hw
    m, v = weights.shape
    chunk = min(_CHUNK, max(v, 1))
    vp = -(-v // chunk) * chunk
    # Padded vertices get an empty square (x1 = x2 = 0) and weight 0.
    weights = jnp.pad(weights.astype(jnp.float32), ((0, 0), (0, vp - v)))
    bounds = jnp.pad(bounds.astype(jnp.int32), ((0, vp - v), (0, 0)))
    weights = weights.reshape(m, vp // chunk, chunk).transpose(1, 0, 2)
    bounds = bounds.reshape(vp // chunk, chunk, 4)
    cols = jnp.arange(w, dtype=jnp.int32)[None, :]
    rows = jnp.arange(h, dtype=jnp.int32)[None, :]

    def body(acc, xs):
        wc, bc = xs
        rx = ((cols >= bc[:, 0:1]) & (cols < bc[:, 1:2])).astype(jnp.float32)  # (c, W)
        ry = ((rows >= bc[:, 2:3]) & (rows < bc[:, 3:4])).astype(jnp.float32)  # (c, H)
        # HIGHEST: accelerators would otherwise round the values to bf16/tf32.
        acc = acc + jnp.einsum("mc,ch,cw->mhw", wc, ry, rx,
                               precision=jax.lax.Precision.HIGHEST)
        return acc, None

    acc, _ = jax.lax.scan(body, jnp.zeros((m, h, w), jnp.float32), (weights, bounds))
    return acc


def count_normalise(p_star: jax.Array, count: jax.Array) -> jax.Array:
    """Eq. 5: ``P = P* / N`` where N > 0, and 0 where N = 0 (density normalisation, not min-max)."""
    return jnp.where(count > 0, p_star / jnp.maximum(count, 1), 0.0)


def _prepare(values, xy, hw, size, valid):
    values = np.asarray(values, np.float32)
    xy = np.asarray(xy)
    if values.ndim != 1 or xy.shape != (values.shape[0], 2):
        raise ValueError(f"values must be (V,) and xy (V, 2); got {values.shape} and {xy.shape}")
    ok = np.ones(len(values), bool) if valid is None else np.asarray(valid, bool)
    if ok.shape != values.shape:
        raise ValueError(f"valid must be (V,) = {values.shape}, got {ok.shape}")
    ok = ok & np.isfinite(xy).all(axis=1) & np.isfinite(values)
    bounds = square_bounds(xy, size, hw)
    weights = np.stack([np.where(ok, values, 0.0), ok.astype(np.float32)]).astype(np.float32)
    return weights, bounds


def splat(values: np.ndarray, xy: np.ndarray, canvas_hw: tuple[int, int], size: float,
          valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 4: the un-normalised splat P* and the count map N.

    Args:
        values: (V,) per-vertex values (drops S_v).
        xy: (V, 2) positions on the canvas (x = column, y = row).
        canvas_hw: (H, W) of the canvas.
        size: square side f in canvas pixels (may be fractional).
        valid: optional (V,) bool; invalid vertices contribute nothing.

    Returns:
        ``(P*, N)``, both (H, W) float32 numpy arrays.
    """
    weights, bounds = _prepare(values, xy, canvas_hw, size, valid)
    out = np.asarray(splat_rows(jnp.asarray(weights), jnp.asarray(bounds), tuple(map(int, canvas_hw))))
    return out[0], out[1]


def canonical_map(values: np.ndarray, canon_xy: np.ndarray, canvas_hw: tuple[int, int],
                  side: float, valid: np.ndarray | None = None) -> np.ndarray:
    """Eqs. 4-5: the count-normalised splat of per-vertex values (a CIS map).

    Args:
        values: (V,) per-vertex drops.
        canon_xy: (V, 2) canonical positions in canvas pixels.
        canvas_hw: (H_F, W_F).
        side: the canonical square side f in canvas pixels (not the occlusion side sz in
            input pixels): `paper_canonical_side`, or this image's side from the pipeline's
            `cms_jax.scoring.geometry.face_canonical_side`.
        valid: optional (V,) bool mask of vertices to use.

    Returns:
        (H_F, W_F) float32 map P.
    """
    p_star, count = splat(values, canon_xy, canvas_hw, side, valid)
    return np.asarray(count_normalise(p_star, count), np.float32)


def square_coverage(xy: np.ndarray, hw: tuple[int, int], sides) -> np.ndarray:
    """bool (H, W): the pixels that the square of some point reaches, for any side in ``sides``.

    The union over the sides of ``splat(ones, xy, hw, side)[1] > 0`` (N > 0 in Eq. 5 with every
    point), computed exactly on integer square bounds (a 2-D difference array), so a run whose
    images each have their own canonical side (``whole`` crops) costs one pass per distinct side.

    Args:
        xy: (V, 2) positions (x = column, y = row).
        hw: (H, W) of the canvas.
        sides: a square side or an array of them (e.g. a run's per-image canonical sides).
    """
    h, w = int(hw[0]), int(hw[1])
    diff = np.zeros((h + 1) * (w + 1), np.int64)
    unique = np.unique(np.asarray(sides, np.float64).ravel())
    for lo in range(0, len(unique), 512):  # bounded memory for 20,000 distinct sides
        b = np.concatenate([square_bounds(xy, s, (h, w)) for s in unique[lo:lo + 512]]).astype(np.int64)
        b = b[(b[:, 0] < b[:, 1]) & (b[:, 2] < b[:, 3])]  # empty squares reach nothing
        x1, x2, y1, y2 = b.T
        for rows, cols, sign in ((y1, x1, 1), (y1, x2, -1), (y2, x1, -1), (y2, x2, 1)):
            diff += sign * np.bincount(rows * (w + 1) + cols, minlength=diff.size)
    return diff.reshape(h + 1, w + 1).cumsum(0).cumsum(1)[:h, :w] > 0


def paper_canonical_side(patch_size: float, canvas_h: int, input_h: int) -> float:
    """Algorithm 1 line 4, as the paper writes it: ``f = sz * H_F / H_I``.

    Right when the face fills the model input as it fills the canvas (the paper's whole
    CelebA images); the main job uses `cms_jax.scoring.geometry.face_canonical_side`, which
    scales by the face's height instead (per image for ``whole`` crops).

    Args:
        patch_size: the occlusion side sz in input pixels.
        canvas_h: H_F, the canonical canvas height.
        input_h: H_I, the model input height.
    """
    return float(patch_size) * canvas_h / input_h


def reproject(values: np.ndarray, image_xy: np.ndarray, image_hw: tuple[int, int],
              patch_size: float, valid: np.ndarray | None = None) -> np.ndarray:
    """A per-vertex map (e.g. a CMS sampled at the canonical vertices) drawn on an image (Fig. 6d).

    Args:
        values: (V,) per-vertex values.
        image_xy: (V, 2) the image's own vertex positions in its pixels.
        image_hw: (H, W) of the image.
        patch_size: square side in image pixels (the occlusion side ``sz``).
        valid: optional (V,) bool (e.g. visible vertices).

    Returns:
        (H, W) float32 count-normalised map on the image.
    """
    return canonical_map(values, image_xy, image_hw, patch_size, valid)


def sample_at(canvas_map: np.ndarray, xy: np.ndarray, method: str = "bilinear") -> np.ndarray:
    """Per-vertex values of a map read at positions ``xy`` (the inverse of a splat).

    Args:
        canvas_map: (H, W) map (e.g. a CMS on the canonical face).
        xy: (V, 2) positions in map pixels (x = column, y = row); clamped to the map.
        method: 'bilinear' or 'nearest'.

    Returns:
        (V,) float32 values.
    """
    if method not in ("bilinear", "nearest"):
        raise ValueError(f"method must be 'bilinear' or 'nearest', got {method!r}")
    m = jnp.asarray(canvas_map, jnp.float32)
    if m.ndim != 2:
        raise ValueError(f"canvas_map must be (H, W), got shape {m.shape}")
    xy = jnp.asarray(xy, jnp.float32)
    coords = [xy[:, 1], xy[:, 0]]  # map_coordinates wants (row, col)
    order = 1 if method == "bilinear" else 0
    if order == 0:
        coords = [jnp.round(c) for c in coords]
    return np.asarray(jax.scipy.ndimage.map_coordinates(m, coords, order=order, mode="nearest"))
