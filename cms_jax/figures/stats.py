"""How alike two saliency maps are: Pearson, Spearman rank correlation and SSIM (Figs. 5 and 7).

Adebayo et al.'s sanity check compares a map with the trained model's map by
Spearman rank correlation and by SSIM (Wang et al. 2004). scikit-image is not
a dependency, so SSIM is written here: Gaussian window (sigma 1.5), K1 = 0.01,
K2 = 0.03, on maps min-max scaled to [0, 1] over the pixels compared, averaged
over those pixels.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage, stats


def _pick(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"maps must have the same shape, got {a.shape} and {b.shape}")
    if mask is None:
        return a.ravel(), b.ravel()
    mask = np.asarray(mask, bool)
    if mask.shape != a.shape:
        raise ValueError(f"mask must be {a.shape}, got {mask.shape}")
    return a[mask], b[mask]


def pearson(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Pearson correlation of two maps over ``mask``; 0.0 when either is constant there."""
    x, y = _pick(a, b, mask)
    if x.size < 2 or x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def spearman(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Spearman rank correlation of two maps over ``mask``; 0.0 when either is constant there."""
    x, y = _pick(a, b, mask)
    if x.size < 2 or x.std() == 0 or y.std() == 0:
        return 0.0
    return float(stats.spearmanr(x, y).statistic)


def _unit(m: np.ndarray, mask: np.ndarray) -> np.ndarray:
    sel = m[mask]
    lo, hi = float(sel.min()), float(sel.max())
    return np.where(mask, (m - lo) / (hi - lo), 0.0) if hi > lo else np.zeros_like(m)


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> float:
    """Structural similarity (Wang et al. 2004) of two 2-D maps, each min-max scaled to [0, 1].

    Args:
      a, b: (H, W) maps.
      mask: bool (H, W): pixels to scale over and average the SSIM map over (None = all).
      sigma: standard deviation of the Gaussian window, pixels.
      k1, k2: the stabilising constants, for a data range of 1.

    Returns:
      The mean SSIM, in [-1, 1]; 1 for identical maps.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2:
        raise ValueError(f"ssim expects 2-D maps, got shape {a.shape}")
    mask = np.ones(a.shape, bool) if mask is None else np.asarray(mask, bool)
    _pick(a, b, mask)  # shape checks
    x, y = _unit(a, mask), _unit(b, mask)
    c1, c2 = k1 ** 2, k2 ** 2

    def blur(m):
        return ndimage.gaussian_filter(m, sigma, mode="reflect", truncate=3.5)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s[mask].mean())


def hog(m: np.ndarray, mask: np.ndarray | None = None, cell: int = 8, bins: int = 9) -> np.ndarray:
    """Histogram of oriented gradients of a 2-D map (Dalal & Triggs; Adebayo et al.'s third similarity).

    The map is min-max scaled over ``mask`` (0 outside), its Sobel gradients binned by unsigned
    orientation into ``bins`` per ``cell`` x ``cell`` cell (weighted by magnitude), and each 2 x 2
    block of cells L2-normalised. Returns the flat descriptor.
    """
    import cv2
    m = np.asarray(m, np.float64)
    mask = np.ones(m.shape, bool) if mask is None else np.asarray(mask, bool)
    x = _unit(m, mask)
    gx = cv2.Sobel(x, cv2.CV_64F, 1, 0, ksize=3)
    gy = cv2.Sobel(x, cv2.CV_64F, 0, 1, ksize=3)
    mag, ang = np.hypot(gx, gy), np.mod(np.arctan2(gy, gx), np.pi)
    h, w = (m.shape[0] // cell) * cell, (m.shape[1] // cell) * cell
    b = np.minimum((ang[:h, :w] / np.pi * bins).astype(int), bins - 1)
    onehot = np.eye(bins)[b] * mag[:h, :w, None]
    cells = onehot.reshape(h // cell, cell, w // cell, cell, bins).sum((1, 3))
    blocks = np.concatenate([cells[:-1, :-1], cells[1:, :-1], cells[:-1, 1:], cells[1:, 1:]], -1)
    blocks /= np.sqrt((blocks ** 2).sum(-1, keepdims=True) + 1e-12)
    return blocks.ravel()


def hog_similarity(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Pearson correlation of the HOG descriptors of two maps (1 for identical maps)."""
    ha, hb = hog(a, mask), hog(b, mask)
    if ha.std() == 0 or hb.std() == 0:
        return 0.0
    return float(np.corrcoef(ha, hb)[0, 1])


def compare(reference: np.ndarray, other: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """Pearson, Spearman, Spearman of absolute values (Adebayo et al.), SSIM and HOG similarity of
    ``other`` vs ``reference``."""
    return {"pearson": pearson(reference, other, mask), "spearman": spearman(reference, other, mask),
            "spearman_abs": spearman(np.abs(reference), np.abs(other), mask),
            "ssim": ssim(reference, other, mask), "hog": hog_similarity(reference, other, mask)}
