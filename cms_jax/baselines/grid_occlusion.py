"""Grid occlusion map of Zeiler & Fergus: the image-plane occlusion baseline (Section 2, Fig. 6a).

A square of ``patch`` pixels filled with ``fill`` slides over the image with
``stride``; each placement scores the occluded image, and every pixel receives
the mean confidence drop S = M(I) - M(I*) of the placements covering it (the
same count normalisation as the paper's Eq. 5, here on the image grid instead
of along the face mesh).  M is the occlusion's own confidence phi of Eq. 1
(`cms_jax.occlusion.phi`: softmax, sigmoid for one logit, raw value, or cosine to
the clean embedding), so this map and the CIS of a face score the same quantity.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from cms_jax import occlusion as occ
from cms_jax.baselines.common import check_images


def _starts(size: int, patch: int, stride: int) -> np.ndarray:
    """Top-left offsets along one axis; the last placement touches the far edge."""
    last = max(size - patch, 0)
    starts = list(range(0, last + 1, stride))
    if starts[-1] != last:
        starts.append(last)
    return np.asarray(starts)


def _cover(size: int, patch: int, stride: int) -> np.ndarray:
    """(P, size) 0/1 matrix: row p marks the pixels covered by placement p."""
    starts = _starts(size, patch, stride)
    idx = np.arange(size)
    return ((idx[None] >= starts[:, None]) & (idx[None] < starts[:, None] + patch)).astype(np.float32)


@functools.partial(jax.jit,
                   static_argnames=("apply_fn", "patch", "stride", "mode", "batch_size"))
def grid_occlusion(apply_fn: Callable, params: Any, x: jax.Array,
                   targets: jax.Array | None = None, *, patch: int = 16, stride: int = 8,
                   fill: float = 0.0, mode: str = "softmax", batch_size: int = 64) -> jax.Array:
    """Zeiler & Fergus occlusion sensitivity map.

    Args:
      apply_fn: apply_fn(params, x) -> (B, K) scores.
      params: model parameters.
      x: (B, H, W, C) preprocessed images.
      targets: (B,) class indices, or None for the predicted class; under mode 'cosine'
        (B, D) reference embeddings, or None for each image's own clean embedding.
      patch: side of the occluding square, pixels.
      stride: step between placements, pixels.
      fill: value written into the occluded square (in preprocessed units).
      mode: how outputs become the confidence, `cms_jax.occlusion.score_mode` of the
        model ('softmax', 'raw' or 'cosine').
      batch_size: occluded images per forward pass.

    Returns:
      (B, H, W) float32 maps of mean confidence drop (positive = evidence).
    """
    x = check_images(x)
    if patch < 1 or stride < 1:
        raise ValueError(f"patch and stride must be >= 1, got patch={patch}, stride={stride}")
    b, h, w, _ = x.shape

    base_out = apply_fn(params, x)
    if mode == "cosine":
        t = base_out.astype(jnp.float32) if targets is None else jnp.asarray(targets, jnp.float32)
        if t.shape != base_out.shape:
            raise ValueError(f"grid_occlusion: under mode 'cosine' targets are (B, D) = {base_out.shape} "
                             f"reference embeddings, got shape {t.shape}")
    else:
        t = jnp.full((b,), -1, jnp.int32) if targets is None else jnp.asarray(targets, jnp.int32).reshape(b)
    base, cls = occ.phi(base_out, mode, t)
    t = t if mode == "cosine" else cls
    rows = jnp.asarray(_cover(h, patch, stride))
    cols = jnp.asarray(_cover(w, patch, stride))
    py, px = rows.shape[0], cols.shape[0]

    def drop_one(k):
        i, rest = k // (py * px), k % (py * px)
        mask = (rows[rest // px][:, None] * cols[rest % px][None, :])[..., None]
        occluded = x[i] * (1.0 - mask) + fill * mask
        return base[i] - occ.phi(apply_fn(params, occluded[None]), mode, t[i][None])[0][0]

    drops = jax.lax.map(drop_one, jnp.arange(b * py * px), batch_size=batch_size)
    drops = drops.reshape(b, py, px)
    total = jnp.einsum("bij,iy,jx->byx", drops, rows, cols)
    count = rows.sum(0)[:, None] * cols.sum(0)[None, :]
    return total / jnp.maximum(count, 1.0)
