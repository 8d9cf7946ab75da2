"""A map drawn for reading: colours over a gray face, region outlines, a colour bar with units.

The panel keeps the canvas's size and pixel grid (one map pixel, one panel
pixel), so ``cms.png`` is the map of ``cms.npy`` as it is. The colour bar is
inset in the bottom-right corner, outside the face, on a white box.
"""
from __future__ import annotations

import cv2
import numpy as np

from cms_jax.render.colours import Scale

OUTLINE_RGB = (25, 25, 25)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def backdrop(face_rgb: np.ndarray, hw: tuple[int, int] | None = None) -> np.ndarray:
    """The face in light gray (float32 RGB), so the map's colours read as the colour bar's."""
    face = np.asarray(face_rgb)
    if face.ndim == 2:
        face = np.repeat(face[..., None], 3, axis=-1)
    if hw is not None and face.shape[:2] != tuple(hw):
        face = cv2.resize(face, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)
    gray = face[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.repeat((60.0 + 0.75 * gray)[..., None], 3, axis=-1)


def overlay(face_rgb: np.ndarray, values: np.ndarray, mask: np.ndarray | None, scale: Scale,
            alpha=0.65) -> np.ndarray:
    """uint8 RGB: ``scale`` colours of ``values`` blended over the gray face where ``mask``.

    Args:
      alpha: weight of the colours, a number or an (H, W) array (e.g. faded where not significant).
    """
    base = backdrop(face_rgb, values.shape)
    a = np.broadcast_to(np.asarray(alpha, np.float32), values.shape)[..., None]
    out = (1 - a) * base + a * scale.rgb(values).astype(np.float32)
    if mask is not None:
        out = np.where(np.asarray(mask, bool)[..., None], out, base)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def magnitude_alpha(scale: Scale, values: np.ndarray, low: float = 0.15, high: float = 0.8) -> np.ndarray:
    """Colour weight growing with the value's distance from the scale's neutral point (zero when
    diverging, ``lo`` otherwise), so a photo stays visible where its map says little."""
    t = scale.position(values)
    m = np.abs(2 * t - 1) if scale.diverging else t
    return (low + (high - low) * m).astype(np.float32)


def label_edges(masks: dict[str, np.ndarray]) -> np.ndarray:
    """bool (H, W): the 1-px boundaries between the regions of disjoint masks (the region outlines)."""
    lab = np.zeros(next(iter(masks.values())).shape, np.int32)
    for i, m in enumerate(masks.values(), 1):
        lab[np.asarray(m, bool)] = i
    edge = np.zeros(lab.shape, bool)
    edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    edge[1:, :] |= lab[1:, :] != lab[:-1, :]
    return edge


def draw_edges(rgb: np.ndarray, edges: np.ndarray, colour=OUTLINE_RGB, opacity: float = 0.7) -> np.ndarray:
    """``rgb`` with ``edges`` pixels drawn as thin lines."""
    out = rgb.astype(np.float32)
    out[edges] = (1 - opacity) * out[edges] + opacity * np.asarray(colour, np.float32)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def fmt(v: float) -> str:
    """A tick label: three significant digits, 0 as '0'."""
    return "0" if v == 0 else f"{v:.3g}"


def colour_bar(scale: Scale, length: int, *, font_scale: float = 0.45,
               thickness: int = 0) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A horizontal colour bar with its unit above and tick labels below, on white.

    The bar's pixel columns run linearly from ``scale.lo`` (first) to ``scale.hi`` (last);
    both ends are always labelled, zero too when its label has room.

    Returns:
      (uint8 RGB image, (x0, y0, x1, y1) of the bar inside it, end-exclusive).
    """
    th = max(1, int(round(font_scale * 2)))
    (_, text_h), base = cv2.getTextSize("0.9", _FONT, font_scale, th)
    pad = max(3, text_h // 2)
    bar_h = thickness or max(6, int(round(text_h * 1.1)))
    unit_w = cv2.getTextSize(scale.unit, _FONT, font_scale, th)[0][0] if scale.unit else 0
    width = max(length, unit_w) + 2 * pad
    x0, y0 = pad, pad + (text_h + base + pad if scale.unit else 0)
    ty = y0 + bar_h + pad // 2 + 4 + text_h  # baseline of the tick labels
    img = np.full((ty + base + pad, width, 3), 255, np.uint8)
    img[y0:y0 + bar_h, x0:x0 + length] = scale.rgb(np.linspace(scale.lo, scale.hi, length))[None]
    if scale.unit:
        cv2.putText(img, scale.unit, (pad, pad + text_h), _FONT, font_scale, (0, 0, 0), th, cv2.LINE_AA)
    span = scale.hi - scale.lo
    taken = []
    for v in sorted(scale.ticks(), key=lambda t: t == 0.0 and scale.lo < 0 < scale.hi):  # the ends first
        x = x0 + (int(round((v - scale.lo) / span * (length - 1))) if span > 0 else 0)
        img[y0 + bar_h:y0 + bar_h + 4, x:x + 1] = 0  # tick mark
        label = fmt(v)
        w = cv2.getTextSize(label, _FONT, font_scale, th)[0][0]
        tx = min(max(x - w // 2, 0), width - w)
        if any(tx < b + 4 and tx + w + 4 > a for a, b in taken):
            continue  # zero's label would overlap an end's: its tick mark alone shows it
        taken.append((tx, tx + w))
        cv2.putText(img, label, (tx, ty), _FONT, font_scale, (0, 0, 0), th, cv2.LINE_AA)
    return img, (x0, y0, x0 + length, y0 + bar_h)


def legend_for(scale: Scale, width: int) -> np.ndarray:
    """The colour bar sized for a panel ``width`` pixels wide (about a third of it)."""
    return colour_bar(scale, max(40, int(width * 0.3)), font_scale=max(0.35, width / 1150))[0]


def inset(rgb: np.ndarray, legend: np.ndarray, margin: int = 4, opacity: float = 0.9) -> np.ndarray:
    """``rgb`` with ``legend`` pasted in its bottom-right corner (clipped to fit)."""
    out = rgb.copy()
    h, w = out.shape[:2]
    lh, lw = min(legend.shape[0], h - margin), min(legend.shape[1], w - margin)
    box = out[h - margin - lh:h - margin, w - margin - lw:w - margin].astype(np.float32)
    box = (1 - opacity) * box + opacity * legend[:lh, :lw].astype(np.float32)
    out[h - margin - lh:h - margin, w - margin - lw:w - margin] = np.round(box).astype(np.uint8)
    return out


def with_legend(rgb: np.ndarray, scale: Scale, width: int | None = None) -> np.ndarray:
    """``rgb`` (a panel drawn without its bar) shrunk to ``width`` px when given, then the bar inset at
    that size, so a small panel in the report has a sharp, readable bar."""
    if width and width < rgb.shape[1]:
        h = int(round(rgb.shape[0] * width / rgb.shape[1]))
        rgb = cv2.resize(rgb, (width, h), interpolation=cv2.INTER_AREA)
    return inset(rgb, legend_for(scale, rgb.shape[1]))


def map_panel(face_rgb: np.ndarray, values: np.ndarray, mask: np.ndarray | None, scale: Scale, *,
              edges: np.ndarray | None = None, alpha=0.65, legend: bool = True) -> np.ndarray:
    """A map over the face, with region outlines and an inset colour bar in ``scale``'s units.

    Args:
      face_rgb: the canonical face's display image (any size; resized to the map).
      values: (H, W) map; mask: where it is defined (pixels outside show the face).
      scale: its colours (see `colours.fit`).
      edges: bool (H, W) outline pixels (see `label_edges`), or None.
      alpha: weight of the colours (number or (H, W)).
      legend: inset the colour bar.
    """
    out = overlay(face_rgb, values, mask, scale, alpha)
    if edges is not None:
        out = draw_edges(out, edges)
    return with_legend(out, scale) if legend else out
