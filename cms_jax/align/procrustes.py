"""Similarity (Procrustes) fit between two point sets.

Used to compare an image's aligned mesh M_I with the canonical M_F: after the
best rotation, uniform scale and translation, the residual measures how well
the alignment matches the canonical face; the sign of the fitted linear map's
determinant reveals a mirrored (left/right swapped) alignment.
"""
from __future__ import annotations

import numpy as np


def similarity_fit(src: np.ndarray, dst: np.ndarray, allow_reflection: bool = False):
    """Least-squares s, R, t with dst ~ s * src @ R.T + t (Umeyama 1991).

    Args:
      src, dst: (N, D) corresponding points.
      allow_reflection: let R be any orthogonal matrix (det -1 allowed), to
        detect mirrored point sets.

    Returns:
      (fitted float64 (N, D) = s * src @ R.T + t, s, R (D, D), t (D,)).
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.shape != dst.shape:
        raise ValueError(f"similarity_fit: shapes differ {src.shape} vs {dst.shape}")
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    u, sig, vt = np.linalg.svd(b.T @ a)
    d = np.ones(len(sig))
    if not allow_reflection and np.linalg.det(u @ vt) < 0:
        d[-1] = -1.0
    r = u @ np.diag(d) @ vt
    s = (sig * d).sum() / max((a ** 2).sum(), 1e-300)
    t = md - s * ms @ r.T
    return s * src @ r.T + t, s, r, t
