"""Triangle subdivision: a denser vertex set for the 1:1 mapping M_I <-> M_F.

The paper's PRNet mesh has N = 2,194 points (the official code's stride-20
subsample); MediaPipe gives 468. Level-k midpoint subdivision adds one vertex
per edge per level (level 1: 468 + 1,365 edges = 1,833 vertices). Each new
vertex is a fixed linear combination of the original ones, recorded in a
sparse interpolation matrix W (V', V), so that the same W applied to image
positions (M_I) and to canonical positions (M_F) keeps the correspondence
exact: row n of W @ M_I and of W @ M_F name the same facial point.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def _subdivide_once(triangles: np.ndarray, num_vertices: int):
    t = np.asarray(triangles, np.int64)
    e = np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]])
    e.sort(axis=1)
    edges, inv = np.unique(e, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    n_t = len(t)
    mab, mbc, mca = (num_vertices + inv[i * n_t:(i + 1) * n_t] for i in range(3))
    a, b, c = t[:, 0], t[:, 1], t[:, 2]
    # Four children per triangle, each with the parent's winding.
    new_tri = np.concatenate([
        np.stack([a, mab, mca], 1), np.stack([mab, b, mbc], 1),
        np.stack([mca, mbc, c], 1), np.stack([mab, mbc, mca], 1)])
    n_e = len(edges)
    rows = np.concatenate([np.arange(num_vertices), np.repeat(num_vertices + np.arange(n_e), 2)])
    cols = np.concatenate([np.arange(num_vertices), edges.ravel()])
    vals = np.concatenate([np.ones(num_vertices), np.full(2 * n_e, 0.5)])
    w = sp.csr_matrix((vals, (rows, cols)), shape=(num_vertices + n_e, num_vertices))
    return w, new_tri


def subdivide(triangles: np.ndarray, num_vertices: int, level: int = 1):
    """Midpoint-subdivides a triangle mesh ``level`` times.

    Args:
      triangles: (T, 3) vertex indices.
      num_vertices: V, the number of vertices of the input mesh.
      level: k >= 0; each level splits every triangle into four.

    Returns:
      (W scipy.sparse.csr_matrix (V', V) with rows summing to 1, the first V
      rows the identity; triangles int64 (4**k T, 3) over the V' vertices).
    """
    if level < 0:
        raise ValueError(f"subdivision level {level} is negative")
    w = sp.identity(num_vertices, format="csr")
    tri = np.asarray(triangles, np.int64)
    for _ in range(level):
        wi, tri = _subdivide_once(tri, w.shape[0])
        w = (wi @ w).tocsr()
    w.sum_duplicates()  # canonical CSR: sorted column indices per row
    return w, tri


def apply(w, positions: np.ndarray) -> np.ndarray:
    """Interpolates per-vertex data (V, ...) to the subdivided vertices (V', ...)."""
    p = np.asarray(positions)
    out = w @ p.reshape(p.shape[0], -1).astype(np.float64)
    return out.reshape((w.shape[0],) + p.shape[1:]).astype(p.dtype if p.dtype.kind == "f" else np.float32)
