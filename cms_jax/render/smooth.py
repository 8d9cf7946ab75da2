"""A smooth rendering of per-vertex values for display: linear over each mesh triangle.

The paper's map (Eqs. 4-5) splats each vertex's drop into a square of side f
and averages overlaps, which shows f-sized blocks. For reading, the same
vertex values can instead be interpolated barycentrically over the canonical
mesh's triangles: each pixel centre inside a triangle gets the weighted mean
of its three vertices' values, so the rendering equals the vertex values at
the vertices and is linear in between. This is a display only; ``cms.npy``
stays the exact Eq. 4-5 map.

The CMS's vertex values follow the run's Eq. 6 reduction at the vertex level:
``mean`` averages each vertex's drop over all images (an image that did not
see the vertex adds 0, as its CIS adds 0 there), ``covered`` over the images
that saw it, ``sum`` adds them.
"""
from __future__ import annotations

import numpy as np

from cms_jax.align import raster


def vertex_values(drops: np.ndarray, valid: np.ndarray, reduce: str = "mean",
                  batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-vertex CMS values from per-image drops (Eq. 6 at the vertices).

    Args:
      drops: (N, V) per-image drops S_v (Eq. 1).
      valid: (N, V) bool, the vertices each image scored.
      reduce: 'mean', 'covered' or 'sum' (see the module docstring).
      batch: images summed at a time.

    Returns:
      ((V,) float64 values, (V,) bool: the vertex was seen by some image).
    """
    if reduce not in ("mean", "covered", "sum"):
        raise ValueError(f"reduce must be 'mean', 'covered' or 'sum', got {reduce!r}")
    total, seen = np.zeros(np.shape(drops)[1]), np.zeros(np.shape(drops)[1], np.int64)
    for lo in range(0, len(drops), batch):  # streamed: (N, V) float64 never exists
        d = np.asarray(drops[lo:lo + batch], np.float64)
        ok = np.asarray(valid[lo:lo + batch], bool) & np.isfinite(d)
        total += np.where(ok, d, 0.0).sum(0)
        seen += ok.sum(0)
    if reduce == "sum":
        vals = total
    elif reduce == "covered":
        vals = np.where(seen > 0, total / np.maximum(seen, 1), 0.0)
    else:
        vals = total / max(len(drops), 1)
    return vals, seen > 0


def smooth_map(values: np.ndarray, vertices: np.ndarray, triangles: np.ndarray, hw: tuple[int, int],
               depth: np.ndarray | None = None, defined: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Barycentric interpolation of vertex values over the triangles covering each pixel centre.

    Args:
      values: (V,) per-vertex values.
      vertices: (V, 2) canvas positions (x column, y row; continuous pixel coordinates).
      triangles: (T, 3) vertex indices.
      hw: (H, W) of the canvas.
      depth: (V,) depth, larger = nearer (the nearer triangle wins where triangles overlap).
      defined: (V,) bool; triangles with an undefined vertex are left out.

    Returns:
      ((H, W) float32 map, 0 off the mesh; (H, W) bool mask of the pixels it covers).
    """
    tri = np.asarray(triangles, np.int64)
    if defined is not None:
        tri = tri[np.asarray(defined, bool)[tri].all(1)]
    if not len(tri):
        return np.zeros(hw, np.float32), np.zeros(hw, bool)
    tri_id, _ = raster.rasterize(vertices, tri, hw, depth)
    mask = tri_id >= 0
    ys, xs = np.nonzero(mask)
    corners = tri[tri_id[ys, xs]]                                   # (P, 3)
    p = np.asarray(vertices, np.float64)[corners]                   # (P, 3, 2)
    # Unclipped barycentric weights at the pixel centre: the rasteriser also paints edge pixels whose
    # centre lies a little outside the triangle; extending the triangle's linear function there keeps
    # the rendering exact for linear data and continuous across edges.
    e1, e2, q = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0], np.stack([xs + 0.5, ys + 0.5], 1) - p[:, 0]
    den = e1[:, 0] * e2[:, 1] - e2[:, 0] * e1[:, 1]
    den = np.where(np.abs(den) < 1e-12, 1e-12, den)
    l1 = (q[:, 0] * e2[:, 1] - e2[:, 0] * q[:, 1]) / den
    l2 = (e1[:, 0] * q[:, 1] - q[:, 0] * e1[:, 1]) / den
    v = np.asarray(values, np.float64)[corners]
    out = np.zeros(tuple(hw), np.float64)
    out[ys, xs] = (1 - l1 - l2) * v[:, 0] + l1 * v[:, 1] + l2 * v[:, 2]
    return out.astype(np.float32), mask
