"""Model-specific face crops, carrying the mesh M_I into crop coordinates.

A model sees its own crop of the image, resized to its input size; the
occlusion of Eq. 1 happens in that crop, so the vertices must be expressed in
the crop's pixels. All positions use continuous pixel coordinates (pixel
(r, c) covers [c, c+1) x [r, r+1)), in which a crop is a translation and a
resize is a pure scale (OpenCV's ``resize`` uses the same half-pixel-centre
convention), so vertices map exactly.

Policies:
  ``loose``: square box of side ``max(w, h) * (1 + margin)`` around the
    landmark box (context around the face, as models trained on IMDB-WIKI
    crops expect; margin ~0.8).
  ``tight``: the same with a small margin (~0.1).
  ``whole``: the whole image resized to the input (the paper resizes whole
    178x218 CelebA images to 224x224); the margin is ignored.
Where a box leaves the image, the border pixels are replicated.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

POLICIES = ("loose", "tight", "whole")


def crop_box(xy: np.ndarray, policy: str, margin: float, out_hw: tuple[int, int],
             image_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """The crop rectangle (x0, y0, width, height) in integer image pixels.

    Args:
      xy: (V, 2) landmarks in image pixels.
      policy: ``loose`` | ``tight`` | ``whole``.
      margin: extra context as a fraction of the face-box side.
      out_hw: model input (H, W); the box has the same aspect ratio.
      image_hw: (H, W) of the image.

    Returns:
      (x0, y0, w, h); may extend past the image.
    """
    if policy not in POLICIES:
        raise ValueError(f"crop policy {policy!r}: expected one of {POLICIES}")
    if policy == "whole":
        return 0, 0, int(image_hw[1]), int(image_hw[0])
    if margin < 0:
        raise ValueError(f"crop margin {margin} is negative")
    xy = np.asarray(xy, np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2 or not np.isfinite(xy).all():
        raise ValueError(f"landmarks must be finite (V, 2), got shape {xy.shape}")
    (x0, y0), (x1, y1) = xy.min(0), xy.max(0)
    side = max(x1 - x0, y1 - y0, 1.0) * (1.0 + margin)
    oh, ow = out_hw
    h = max(1, int(round(side)))
    w = max(1, int(round(side * ow / oh)))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return int(math.floor(cx - w / 2 + 0.5)), int(math.floor(cy - h / 2 + 0.5)), w, h


def crop_face(rgb: np.ndarray, xy: np.ndarray, policy: str = "loose", margin: float = 0.8,
              out_hw: tuple[int, int] = (64, 64)) -> tuple[np.ndarray, np.ndarray]:
    """Crops the face for a model and maps the vertices into the crop.

    Args:
      rgb: uint8 (H, W, 3) image.
      xy: float (V, 2) vertex positions in image pixels (x column, y row).
      policy: ``loose`` | ``tight`` | ``whole`` (see module docstring).
      margin: extra context as a fraction of the face-box side.
      out_hw: (H, W) of the model input.

    Returns:
      (crop uint8 (out_h, out_w, 3), xy_in_crop float32 (V, 2)).
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"crop_face expects uint8 (H, W, C), got {rgb.dtype} {rgb.shape}")
    oh, ow = int(out_hw[0]), int(out_hw[1])
    H, W = rgb.shape[:2]
    x0, y0, w, h = crop_box(xy, policy, margin, (oh, ow), (H, W))
    pad = max(0, -x0, -y0, x0 + w - W, y0 + h - H)
    src = rgb
    if pad:
        src = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    patch = src[y0 + pad:y0 + pad + h, x0 + pad:x0 + pad + w]
    # INTER_AREA averages when shrinking (no aliasing); linear when enlarging.
    interp = cv2.INTER_AREA if (w > ow or h > oh) else cv2.INTER_LINEAR
    crop = cv2.resize(patch, (ow, oh), interpolation=interp)
    if crop.ndim == 2:
        crop = crop[..., None]
    scale = np.array([ow / w, oh / h], np.float64)
    xy_c = (np.asarray(xy, np.float64) - np.array([x0, y0])) * scale
    return np.ascontiguousarray(crop), xy_c.astype(np.float32)
