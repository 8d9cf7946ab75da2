"""Rendering maps for people: jet heatmaps (red high) over a face, PNG files.

A map is a rendering of the per-vertex drop vector (STYLE.md: "the per-vertex
drop vector is the canonical representation; a map is its rendering"). Pixels
no vertex reached (N = 0 in Eq. 5) are drawn as the bare face.
"""
from __future__ import annotations

import os

import cv2
import numpy as np


def minmax_scale(values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Min-max scale to [0, 1] over ``mask`` (all pixels when None); constant maps give 0.

    For display only: not Eq. 5's count normalisation (`projection.count_normalise`) nor Eq. 8's
    heatmap normalisation (`metrics.normalize_heatmaps`).
    """
    v = np.asarray(values, np.float64)
    sel = v[mask] if mask is not None and mask.any() else v
    lo, hi = (float(sel.min()), float(sel.max())) if sel.size else (0.0, 0.0)
    out = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
    return np.clip(out, 0.0, 1.0)


def jet(values01: np.ndarray) -> np.ndarray:
    """uint8 RGB jet colours (blue low, red high) for values in [0, 1]."""
    v = np.clip(np.asarray(values01, np.float64), 0, 1)
    u8 = np.round(v * 255).astype(np.uint8)
    return cv2.applyColorMap(u8, cv2.COLORMAP_JET)[..., ::-1].copy()


def overlay(face_rgb: np.ndarray, heat: np.ndarray, mask: np.ndarray | None = None,
            alpha: float = 0.55, vrange: tuple[float, float] | None = None) -> np.ndarray:
    """Blend a heatmap over a face image of the same size; pixels outside ``mask`` stay the face.

    Args:
      face_rgb: uint8 (H, W, 3).
      heat: (H, W) values (any range; min-max scaled inside ``mask``).
      mask: bool (H, W), where the map is defined (N > 0); None = everywhere.
      alpha: weight of the heatmap colours.
      vrange: fixed (low, high) for the colour scale instead of the min-max in ``mask``.
    """
    face = np.asarray(face_rgb)
    if face.ndim == 2:
        face = np.repeat(face[..., None], 3, axis=-1)
    if face.shape[:2] != heat.shape:
        face = cv2.resize(face, (heat.shape[1], heat.shape[0]), interpolation=cv2.INTER_AREA)
    if vrange is None:
        scaled = minmax_scale(heat, mask)
    else:
        lo, hi = vrange
        scaled = (np.asarray(heat, np.float64) - lo) / (hi - lo) if hi > lo else np.zeros(heat.shape)
    colours = jet(scaled).astype(np.float32)
    blended = (1 - alpha) * face.astype(np.float32) + alpha * colours
    if mask is not None:
        blended = np.where(mask[..., None], blended, face.astype(np.float32))
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def save_png(path: str, rgb: np.ndarray) -> str:
    """Write a uint8 RGB (or gray) image as PNG; the folder is created."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8:
        raise ValueError(f"save_png {path}: expected uint8, got {arr.dtype}")
    bgr = arr[..., ::-1] if arr.ndim == 3 else arr
    if not cv2.imwrite(path, np.ascontiguousarray(bgr)):
        raise OSError(f"could not write PNG {path}")
    return path


def grid(tiles: list[np.ndarray], cols: int, pad: int = 4) -> np.ndarray:
    """Tile equally sized uint8 RGB images into rows of ``cols`` with white gaps."""
    if not tiles:
        raise ValueError("grid: no tiles")
    h, w = tiles[0].shape[:2]
    rows = (len(tiles) + cols - 1) // cols
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        t = t if t.ndim == 3 else np.repeat(t[..., None], 3, -1)
        if t.shape[:2] != (h, w):
            t = cv2.resize(t, (w, h), interpolation=cv2.INTER_AREA)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = t
    return out
