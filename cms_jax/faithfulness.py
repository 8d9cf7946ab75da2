"""Faithfulness as the field measures it: Deletion / Insertion AUC (RISE) and ROAD (MoRF / LeRF).

These complement the paper's Eqs. 7-11 (`cms_jax.metrics`), which darken every pixel at
once by its saliency. Here pixels are removed *in the order of the map*:

* **Deletion** (Petsiuk et al. 2018, RISE, Sec. 4.1): starting from the image, the
  pixels are replaced by ``fill`` most salient first, ``step`` at a time; the curve is
  the target's confidence after each step, its AUC (trapezoid over the removed
  fraction 0..1) is low for a faithful map.
* **Insertion**: starting from a baseline image (a blurred copy, as RISE does, or the
  fill), the pixels of the image are put back most salient first; a high AUC is good.
* **ROAD** (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for
  Attribution Methods"): a fraction k of the pixels is removed, most relevant first
  (MoRF: the confidence should fall fast) or least relevant first (LeRF: it should
  stay), and the removed pixels are *imputed* rather than blacked out, so the score
  cannot come from the shape of the hole: noisy linear imputation sets each removed
  pixel to the weighted mean of its 8 neighbours (direct 1/6, diagonal 1/12, the
  weights renormalised at the border and around other removed pixels), solved jointly
  as one sparse linear system per image and channel, plus Gaussian noise of
  ``noise`` std. The summary is the two curves' means and LeRF - MoRF (> 0 good).

Ties in a map (a constant region, a zero background) are broken by a fixed random
permutation (``seed``), so a flat map scores like a random order, never like the
raster order. ``score_fn`` is any (N, H, W, C) -> (N,) confidence of the target; the
caller fixes the target (predicted or true) once per image, so every compared map is
judged on the same number.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

ScoreFn = Callable[[np.ndarray], np.ndarray]


def order(saliency: np.ndarray, seed: int = 0) -> np.ndarray:
    """(H*W,) flat pixel indices, most salient first; ties broken by a fixed random permutation."""
    s = np.asarray(saliency, np.float64).ravel()
    if not np.all(np.isfinite(s)):
        raise ValueError("saliency map contains NaN or inf")
    perm = np.random.default_rng(seed).permutation(s.size)
    return perm[np.argsort(-s[perm], kind="stable")]


def auc(curve: np.ndarray) -> float:
    """Area under a curve sampled at evenly spaced fractions 0..1 (trapezoid rule)."""
    c = np.asarray(curve, np.float64)
    if c.size < 2:
        raise ValueError(f"a curve needs at least 2 points, got {c.size}")
    return float((c[:-1] + c[1:]).sum() / (2 * (c.size - 1)))


def _counts(n_pixels: int, steps: int) -> np.ndarray:
    """Pixels removed after each of 0..steps steps (evenly spaced, ending at all of them)."""
    return np.round(np.linspace(0, n_pixels, steps + 1)).astype(int)


def _scores(score_fn: ScoreFn, copies: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([np.asarray(score_fn(copies[s:s + batch]), np.float64).reshape(-1)
                           for s in range(0, len(copies), batch)])


def deletion_curve(score_fn: ScoreFn, x: np.ndarray, saliency: np.ndarray, *, steps: int = 32,
                   fill: float = 0.0, seed: int = 0, batch: int = 64) -> np.ndarray:
    """(steps + 1,) confidence as the most salient pixels of ``x`` (H, W, C) are set to ``fill``."""
    h, w = x.shape[:2]
    _check(x, saliency)
    idx = order(saliency, seed)
    copies = np.repeat(x[None].astype(np.float32), steps + 1, 0).reshape(steps + 1, h * w, -1)
    for i, n in enumerate(_counts(h * w, steps)):
        copies[i, idx[:n]] = fill
    return _scores(score_fn, copies.reshape(steps + 1, *x.shape), batch)


def insertion_curve(score_fn: ScoreFn, x: np.ndarray, saliency: np.ndarray, baseline: np.ndarray, *,
                    steps: int = 32, seed: int = 0, batch: int = 64) -> np.ndarray:
    """(steps + 1,) confidence as the most salient pixels of ``x`` replace those of ``baseline``."""
    h, w = x.shape[:2]
    _check(x, saliency)
    if baseline.shape != x.shape:
        raise ValueError(f"insertion baseline has shape {baseline.shape}, the image {x.shape}")
    idx = order(saliency, seed)
    src = x.reshape(h * w, -1).astype(np.float32)
    copies = np.repeat(baseline[None].astype(np.float32), steps + 1, 0).reshape(steps + 1, h * w, -1)
    for i, n in enumerate(_counts(h * w, steps)):
        copies[i, idx[:n]] = src[idx[:n]]
    return _scores(score_fn, copies.reshape(steps + 1, *x.shape), batch)


def blur_baseline(x: np.ndarray, sigma: float = 5.0) -> np.ndarray:
    """The RISE insertion baseline: ``x`` under a Gaussian blur of ``sigma`` pixels."""
    import cv2
    out = cv2.GaussianBlur(np.ascontiguousarray(x, np.float32), (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return out.reshape(x.shape)  # cv2 drops a single channel


_DIRECT, _DIAGONAL = 1.0 / 6.0, 1.0 / 12.0
_NEIGHBOURS = [(-1, 0, _DIRECT), (1, 0, _DIRECT), (0, -1, _DIRECT), (0, 1, _DIRECT),
               (-1, -1, _DIAGONAL), (-1, 1, _DIAGONAL), (1, -1, _DIAGONAL), (1, 1, _DIAGONAL)]


def linear_impute(x: np.ndarray, removed: np.ndarray, *, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """ROAD's noisy linear imputation: each removed pixel the weighted mean of its 8 neighbours.

    Args:
      x: (H, W, C) image; removed: (H, W) bool, the pixels to impute.
      noise: std of the Gaussian noise added to the imputed pixels.

    Returns:
      (H, W, C) float32: ``x`` where kept; where removed, the solution of
      ``v_p = sum_q w_pq v_q / sum_q w_pq`` over p's in-image neighbours q (kept ones fixed),
      plus noise. A removed region with no kept pixel around it takes the image's kept mean.
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    h, w, c = x.shape
    rem = np.asarray(removed, bool)
    if rem.shape != (h, w):
        raise ValueError(f"removed mask has shape {rem.shape}, the image {(h, w)}")
    out = np.asarray(x, np.float64).copy()
    ys, xs = np.nonzero(rem)
    n = ys.size
    if n == 0:
        return out.astype(np.float32)
    if n == h * w:
        raise ValueError("linear_impute: every pixel is removed; nothing to impute from")
    num = -np.ones((h, w), int)
    num[ys, xs] = np.arange(n)
    rows, cols, vals = [], [], []
    rhs = np.zeros((n, c))
    total = np.zeros(n)
    for dy, dx, wt in _NEIGHBOURS:
        qy, qx = ys + dy, xs + dx
        inside = (qy >= 0) & (qy < h) & (qx >= 0) & (qx < w)
        p, qy, qx = np.nonzero(inside)[0], qy[inside], qx[inside]
        total[p] += wt
        unknown = num[qy, qx] >= 0
        rows.append(p[unknown])
        cols.append(num[qy[unknown], qx[unknown]])
        vals.append(np.full(unknown.sum(), -wt))
        np.add.at(rhs, p[~unknown], wt * out[qy[~unknown], qx[~unknown]])
    a = sp.csr_matrix((np.concatenate(vals + [total]), (np.concatenate(rows + [np.arange(n)]),
                                                        np.concatenate(cols + [np.arange(n)]))), shape=(n, n))
    # a component of removed pixels touching no kept one is singular: anchor it weakly at the kept mean
    a = a + sp.identity(n) * 1e-9
    rhs += 1e-9 * out[~rem].mean(0)
    sol = spsolve(a.tocsc(), rhs)
    sol = sol.reshape(n, c)
    if noise > 0:
        sol += np.random.default_rng(seed).normal(0.0, noise, sol.shape)
    out[ys, xs] = sol
    return out.astype(np.float32)


def road_curves(score_fn: ScoreFn, x: np.ndarray, saliency: np.ndarray, *,
                fractions=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), noise: float = 0.01,
                seed: int = 0, batch: int = 64) -> dict[str, np.ndarray]:
    """ROAD: the confidence with each fraction of pixels removed and imputed, MoRF and LeRF.

    Returns:
      ``{"morf": (K,), "lerf": (K,)}`` at ``fractions``.
    """
    h, w = x.shape[:2]
    _check(x, saliency)
    idx = order(saliency, seed)
    copies = []
    for rev in (False, True):
        ranked = idx[::-1] if rev else idx
        for k, f in enumerate(fractions):
            rem = np.zeros(h * w, bool)
            rem[ranked[:int(round(f * h * w))]] = True
            copies.append(linear_impute(x, rem.reshape(h, w), noise=noise, seed=seed + k))
    s = _scores(score_fn, np.stack(copies), batch)
    return {"morf": s[:len(fractions)], "lerf": s[len(fractions):]}


def _check(x: np.ndarray, saliency: np.ndarray) -> None:
    if x.ndim != 3:
        raise ValueError(f"image must be (H, W, C), got shape {x.shape}")
    if np.shape(saliency) != x.shape[:2]:
        raise ValueError(f"saliency map has shape {np.shape(saliency)}, the image {x.shape[:2]}")


def evaluate(score_fn: ScoreFn, images: np.ndarray, maps: dict[str, np.ndarray], *, steps: int = 32,
             fill: float = 0.0, blur_sigma: float = 5.0, road_noise: float = 0.01,
             road_fractions=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), seed: int = 0,
             batch: int = 64) -> dict[str, dict[str, np.ndarray]]:
    """Per image and method: deletion and insertion AUC, ROAD MoRF / LeRF means and their gap.

    Args:
      images: (N, H, W, C) model inputs; maps: method -> (N, H, W) saliency on the same images.

    Returns:
      method -> {"deletion", "insertion", "road_morf", "road_lerf", "road_gap"}: (N,) arrays.
    """
    out = {m: {k: np.zeros(len(images)) for k in ("deletion", "insertion", "road_morf", "road_lerf",
                                                   "road_gap")} for m in maps}
    for i, x in enumerate(images):
        base = blur_baseline(x, blur_sigma)
        for m, stack in maps.items():
            r = out[m]
            r["deletion"][i] = auc(deletion_curve(score_fn, x, stack[i], steps=steps, fill=fill, seed=seed,
                                                  batch=batch))
            r["insertion"][i] = auc(insertion_curve(score_fn, x, stack[i], base, steps=steps, seed=seed,
                                                    batch=batch))
            road = road_curves(score_fn, x, stack[i], fractions=road_fractions, noise=road_noise, seed=seed,
                               batch=batch)
            r["road_morf"][i], r["road_lerf"][i] = road["morf"].mean(), road["lerf"].mean()
            r["road_gap"][i] = r["road_lerf"][i] - r["road_morf"][i]
    return out
