"""Triangle rasterisation on the canonical canvas: which triangle covers each
pixel and with what barycentric weights.

Used for the display image of the canonical face F (a shaded rendering of the
mesh, or the mean of aligned faces warped triangle by triangle into F), i.e.
the backdrop on which the canonical maps of Eqs. 4-6 are drawn.
"""
from __future__ import annotations

import cv2
import numpy as np

_SHIFT = 4  # sub-pixel bits for cv2.fillConvexPoly


def rasterize(vertices: np.ndarray, triangles: np.ndarray, hw: tuple[int, int],
              depth: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Maps every canvas pixel to the triangle drawn there.

    Args:
      vertices: (V, 2) positions in canvas pixels (continuous coordinates).
      triangles: (T, 3) vertex indices.
      hw: canvas (H, W).
      depth: optional (V,) depth, larger = nearer the viewer; nearer
        triangles are painted last and so win where triangles overlap.

    Returns:
      (tri_id int32 (H, W), -1 where no triangle; bary float32 (H, W, 3),
      the weights of the triangle's three vertices at the pixel centre).
    """
    h, w = int(hw[0]), int(hw[1])
    vertices = np.asarray(vertices, np.float64)
    triangles = np.asarray(triangles, np.int64)
    tri_id = np.full((h, w), -1, np.int32)
    order = np.arange(len(triangles))
    if depth is not None:
        order = np.argsort(np.asarray(depth, np.float64)[triangles].mean(1), kind="stable")
    # Pixel centres sit at integer + 0.5 in continuous coordinates; OpenCV
    # draws in index coordinates (centre = integer), hence the -0.5.
    pts = np.round((vertices - 0.5) * (1 << _SHIFT)).astype(np.int32)
    for t in order:
        cv2.fillConvexPoly(tri_id, pts[triangles[t]], int(t), lineType=cv2.LINE_8, shift=_SHIFT)
    bary = np.zeros((h, w, 3), np.float32)
    ys, xs = np.nonzero(tri_id >= 0)
    if len(ys):
        tri = triangles[tri_id[ys, xs]]
        a, b, c = vertices[tri[:, 0]], vertices[tri[:, 1]], vertices[tri[:, 2]]
        p = np.stack([xs + 0.5, ys + 0.5], 1)
        v0, v1, v2 = b - a, c - a, p - a
        den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
        den = np.where(np.abs(den) < 1e-12, 1e-12, den)
        l1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / den
        l2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / den
        # Edge pixels drawn by the rasteriser may fall a hair outside.
        lam = np.clip(np.stack([1 - l1 - l2, l1, l2], 1), 0, 1)
        bary[ys, xs] = lam / lam.sum(1, keepdims=True)
    return tri_id, bary


def vertex_normals(pos3: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Unit vertex normals (area-weighted) of a 3-D mesh, pointing to +z overall."""
    pos3 = np.asarray(pos3, np.float64)
    a, b, c = (pos3[triangles[:, i]] for i in range(3))
    fn = np.cross(b - a, c - a)
    if fn[:, 2].sum() < 0:
        fn = -fn
    vn = np.zeros_like(pos3)
    for i in range(3):
        np.add.at(vn, triangles[:, i], fn)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)


def shade(vertices: np.ndarray, triangles: np.ndarray, hw: tuple[int, int],
          pos3: np.ndarray, color=(224, 190, 170), background=(255, 255, 255)) -> np.ndarray:
    """Smooth-shaded Lambert rendering of a mesh (normals interpolated per pixel).

    Args:
      vertices: (V, 2) canvas positions.
      triangles: (T, 3).
      hw: canvas (H, W).
      pos3: (V, 3) 3-D positions with x right, y up, z toward the viewer.
      color: RGB of the lit surface; background: RGB elsewhere.

    Returns:
      uint8 (H, W, 3) image.
    """
    tri_id, bary = rasterize(vertices, triangles, hw, depth=np.asarray(pos3)[:, 2])
    vn = vertex_normals(pos3, triangles)
    n = np.einsum("hwk,hwkc->hwc", bary, vn[np.asarray(triangles)[np.maximum(tri_id, 0)]])
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    light = np.array([-0.35, 0.45, 1.0])
    light /= np.linalg.norm(light)
    lum = 0.3 + 0.7 * np.clip(n @ light, 0, 1)
    out = np.empty((*tri_id.shape, 3), np.float32)
    out[:] = np.asarray(background, np.float32)
    covered = tri_id >= 0
    out[covered] = lum[covered, None] * np.asarray(color, np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def warp_to_canvas(rgb: np.ndarray, xy: np.ndarray, tri_id: np.ndarray,
                   bary: np.ndarray, triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Warps an image into the canvas, piecewise-affinely per triangle.

    Args:
      rgb: uint8 (H, W, 3) source image.
      xy: (V, 2) the mesh vertices in the source image.
      tri_id, bary: from ``rasterize`` on the canonical vertices.
      triangles: (T, 3).

    Returns:
      (warped float32 (H_F, W_F, 3), mask bool (H_F, W_F) of covered pixels).
    """
    covered = tri_id >= 0
    src = np.einsum("hwk,hwkc->hwc", bary,
                    np.asarray(xy, np.float64)[np.asarray(triangles)[np.maximum(tri_id, 0)]])
    map_xy = (src - 0.5).astype(np.float32)  # continuous -> OpenCV index coordinates
    out = cv2.remap(rgb, map_xy[..., 0], map_xy[..., 1], cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    out[~covered] = 0
    return out, covered
