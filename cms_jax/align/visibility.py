"""Which mesh vertices face the camera (left out of P* and N when they don't).

In a turned head, part of the mesh faces away from the camera: its vertices
project onto the image but the face surface there is hidden, so the occlusion
score of Eq. 1 at that position says nothing about that facial point.
A vertex is visible when its area-weighted normal points toward the camera.

Sign convention: triangles are wound so that a front-facing triangle has a
positive signed area in image coordinates (x right, y down); CanonicalFace
orients its triangles that way, and the same triangles apply to every image.
"""
from __future__ import annotations

import numpy as np


def signed_areas(xy: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Signed areas (T,) of triangles in image coordinates (x right, y down)."""
    xy = np.asarray(xy, np.float64)
    t = np.asarray(triangles, np.int64)
    a, b, c = xy[t[:, 0]], xy[t[:, 1]], xy[t[:, 2]]
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1]))


def visible_vertices(xy: np.ndarray, triangles: np.ndarray, z: np.ndarray | None = None,
                     min_cos: float = 0.0) -> np.ndarray:
    """Marks the vertices whose surface faces the camera.

    Args:
      xy: (V, 2) vertex positions in the image (pixels).
      triangles: (T, 3), wound front-facing = positive area (module docstring).
      z: optional (V,) depth in the same units as xy (any sign convention):
        with it, the facing test uses the full 3-D normal and ``min_cos``.
      min_cos: a vertex is visible when the cosine between its normal and the
        viewing direction exceeds this (0 = any front-facing tilt; needs z
        to mean more than the sign).

    Returns:
      bool (V,): True where visible. Vertices in no triangle count as visible.
    """
    xy = np.asarray(xy, np.float64)
    t = np.asarray(triangles, np.int64)
    v = len(xy)
    if z is None:
        nz = signed_areas(xy, t)
        acc = np.zeros(v)
        for i in range(3):
            np.add.at(acc, t[:, i], nz)
        used = np.zeros(v, bool)
        used[t.ravel()] = True
        return ~used | (acc > 0)
    p = np.concatenate([xy, np.asarray(z, np.float64).reshape(-1, 1)], 1)
    a, b, c = p[t[:, 0]], p[t[:, 1]], p[t[:, 2]]
    n = np.cross(b - a, c - a)  # z component = 2 x signed 2-D area
    acc = np.zeros((v, 3))
    for i in range(3):
        np.add.at(acc, t[:, i], n)
    norm = np.linalg.norm(acc, axis=1)
    cos = np.where(norm > 0, acc[:, 2] / np.maximum(norm, 1e-12), 1.0)
    return cos > min_cos
