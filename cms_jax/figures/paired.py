"""Means with 95% bootstrap CIs, and paired comparisons of methods scored on the same faces.

Every verdict that compares two methods on one set of faces is paired: the
bootstrap resamples *faces* and recomputes both means on the same draw, so the
CI of the difference carries the faces' shared difficulty out. The test beside
it is Wilcoxon's signed-rank test for a continuous per-face number, or McNemar's
exact test (a two-sided binomial on the discordant faces) for a yes/no one
(Eq. 10's "confidence increased").
"""
from __future__ import annotations

import numpy as np


def bootstrap_mean(values: np.ndarray, *, draws: int = 1000, seed: int = 0) -> dict:
    """``{"mean", "ci": [lo, hi], "n"}``: the mean of ``values`` (N,) and its 95% percentile CI over faces."""
    v = np.asarray(values, np.float64)
    if v.ndim != 1 or not len(v):
        raise ValueError(f"bootstrap_mean needs a non-empty (N,) array, got shape {v.shape}")
    idx = np.random.default_rng(seed).integers(0, len(v), (draws, len(v)))
    means = v[idx].mean(1)
    return {"mean": float(v.mean()), "ci": [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))],
            "n": int(len(v))}


def paired(a: np.ndarray, b: np.ndarray, *, binary: bool = False, draws: int = 1000, seed: int = 0) -> dict:
    """The per-face difference a - b: mean, 95% paired bootstrap CI, and its test.

    Returns:
      ``{"diff", "ci", "n", "test", "p"}``; ``test`` is "wilcoxon" or, with ``binary``, "mcnemar".
      A difference that is zero on every face has p = 1.
    """
    from scipy import stats

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired: a {a.shape} and b {b.shape} must be the same (N,) faces")
    d = bootstrap_mean(a - b, draws=draws, seed=seed)
    out = {"diff": d["mean"], "ci": d["ci"], "n": d["n"]}
    if binary:
        up, down = int(((a > 0) & ~(b > 0)).sum()), int((~(a > 0) & (b > 0)).sum())
        p = 1.0 if up + down == 0 else float(stats.binomtest(up, up + down, 0.5).pvalue)
        return {**out, "test": "mcnemar", "p": p, "discordant": [up, down]}
    nz = a - b
    p = 1.0 if not np.any(nz != 0) else float(stats.wilcoxon(a, b, zero_method="wilcox").pvalue)
    return {**out, "test": "wilcoxon", "p": p}
