"""Colour scales in the score's units: sequential, or diverging centred at zero.

A drop (Eq. 1) can be negative where occlusion raised the confidence. A map
with negative values is drawn with a diverging table (blue below zero, white
at zero, red above) on a scale symmetric about zero, so equal colours mean
equal magnitudes on both sides; its colour bar still spans only the map's
own range ``[min, max]``. A map without negative values uses a sequential
table (turbo: blue low, red high, as the paper's jet) over ``[min, max]``.
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np

# ColorBrewer RdBu, 11 classes, from blue (low) to red (high); the middle class is the zero colour.
_RDBU = np.array([[5, 48, 97], [33, 102, 172], [67, 147, 195], [146, 197, 222], [209, 229, 240],
                  [247, 247, 247], [253, 219, 199], [244, 165, 130], [214, 96, 77], [178, 24, 43],
                  [103, 0, 31]], np.float64)
ZERO_RGB = tuple(int(c) for c in _RDBU[5])


def _diverging_table(n: int = 257) -> np.ndarray:
    """(n, 3) uint8; n odd so that entry n // 2 is exactly the zero colour."""
    knots = np.linspace(0.0, 1.0, len(_RDBU))
    t = np.linspace(0.0, 1.0, n)
    return np.round(np.stack([np.interp(t, knots, _RDBU[:, c]) for c in range(3)], 1)).astype(np.uint8)


def _sequential_table() -> np.ndarray:
    """(256, 3) uint8 RGB turbo (an improved jet)."""
    return cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_TURBO)[:, 0, ::-1].copy()


DIVERGING = _diverging_table()
SEQUENTIAL = _sequential_table()


@dataclasses.dataclass(frozen=True)
class Scale:
    """How values become colours: the map's range ``[lo, hi]`` and its table.

    Attributes:
      lo, hi: the smallest and largest value shown (the colour bar's ends).
      diverging: zero is the table's middle (white) and the scale is symmetric about
        zero with half-width ``max(|lo|, |hi|)``; else ``lo``..``hi`` spans the table.
      unit: what the values are, for the colour bar (e.g. 'drop in probability').
    """
    lo: float
    hi: float
    diverging: bool = False
    unit: str = ""

    @property
    def table(self) -> np.ndarray:
        return DIVERGING if self.diverging else SEQUENTIAL

    def position(self, values) -> np.ndarray:
        """Where each value falls on the table, in [0, 1]."""
        v = np.asarray(values, np.float64)
        if self.diverging:
            lim = max(abs(self.lo), abs(self.hi))
            t = 0.5 + 0.5 * v / lim if lim > 0 else np.full(v.shape, 0.5)
        else:
            t = (v - self.lo) / (self.hi - self.lo) if self.hi > self.lo else np.zeros(v.shape)
        return np.clip(t, 0.0, 1.0)

    def rgb(self, values) -> np.ndarray:
        """uint8 (..., 3) colours of ``values``."""
        table = self.table
        return table[np.round(self.position(values) * (len(table) - 1)).astype(np.int64)]

    def ticks(self) -> list[float]:
        """The colour bar's labelled values: its ends, and zero when it lies inside (any table)."""
        out = [self.lo, self.hi]
        if self.lo < 0 < self.hi:
            out.insert(1, 0.0)
        return out


def fit(values, mask=None, *, unit: str = "", diverging: bool | None = None) -> Scale:
    """The scale of a map: its range over ``mask``, diverging when it has negative values.

    Args:
      values: the map (any shape).
      mask: bool, where the map is defined (N > 0 in Eq. 5); None = everywhere.
      unit: the values' unit, for the colour bar.
      diverging: force the table (default: diverging iff the range has a negative value).
    """
    v = np.asarray(values, np.float64)
    sel = v[np.asarray(mask, bool)] if mask is not None else v.ravel()
    sel = sel[np.isfinite(sel)]
    lo, hi = (float(sel.min()), float(sel.max())) if sel.size else (0.0, 0.0)
    return Scale(lo, hi, bool(lo < 0) if diverging is None else bool(diverging), unit)


def joint(scales: list[Scale]) -> Scale:
    """One scale covering several maps (e.g. every group's CMS), so their colours compare."""
    lo, hi = min(s.lo for s in scales), max(s.hi for s in scales)
    return Scale(lo, hi, lo < 0 or any(s.diverging for s in scales), scales[0].unit)


def score_unit(summary: dict) -> str:
    """What a run's drops measure (Eq. 1), from its summary: 'drop in probability', ...

    Probability or logit of the target class (``score``), cosine similarity for
    embeddings, the target output's own units for regression; 'sum over images of'
    when the CMS is a sum (``reduce='sum'``).
    """
    out = summary.get("model_output", "classes")
    if out == "embedding":
        what = "cosine similarity"
    elif out == "regression":
        what = f"{(summary.get('config') or {}).get('target') or 'output'} (model units)"
    else:
        what = "logit" if summary.get("score") == "logit" else "probability"
    prefix = "sum over images of the " if summary.get("reduce") == "sum" else ""
    return f"{prefix}drop in {what}"
