"""Grid occlusion map of Zeiler & Fergus: the image-plane occlusion baseline (Section 2, Fig. 6a).

A square of ``patch`` pixels filled with ``fill`` slides over the image with
``stride``; each placement scores the occluded image, and every pixel receives
the mean confidence drop S = M(I) - M(I*) of the placements covering it (the
same count normalisation as the paper's Eq. 5, here on the image grid instead
of along the face mesh).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from cms_jax.baselines.common import check_images, pick, select_targets


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
                   static_argnames=("apply_fn", "patch", "stride", "softmax", "batch_size"))
def grid_occlusion(apply_fn: Callable, params: Any, x: jax.Array,
                   targets: jax.Array | None = None, *, patch: int = 16, stride: int = 8,
                   fill: float = 0.0, softmax: bool = True, batch_size: int = 64) -> jax.Array:
    """Zeiler & Fergus occlusion sensitivity map.

    Args:
      apply_fn: apply_fn(params, x) -> (B, K) scores.
      params: model parameters.
      x: (B, H, W, C) preprocessed images.
      targets: (B,) class indices, or None for the predicted class.
      patch: side of the occluding square, pixels.
      stride: step between placements, pixels.
      fill: value written into the occluded square (in preprocessed units).
      softmax: apply softmax to the outputs before scoring (False when apply_fn
        already returns probabilities or for regression outputs).
      batch_size: occluded images per forward pass.

    Returns:
      (B, H, W) float32 maps of mean confidence drop (positive = evidence).
    """
    x = check_images(x)
    if patch < 1 or stride < 1:
        raise ValueError(f"patch and stride must be >= 1, got patch={patch}, stride={stride}")
    b, h, w, _ = x.shape

    def conf(out):
        return jax.nn.softmax(out, axis=-1) if softmax else out

    base_out = conf(apply_fn(params, x))
    t = select_targets(base_out, targets)
    base = pick(base_out, t)
    rows = jnp.asarray(_cover(h, patch, stride))
    cols = jnp.asarray(_cover(w, patch, stride))
    py, px = rows.shape[0], cols.shape[0]

    def drop_one(k):
        i, rest = k // (py * px), k % (py * px)
        mask = (rows[rest // px][:, None] * cols[rest % px][None, :])[..., None]
        occluded = x[i] * (1.0 - mask) + fill * mask
        return base[i] - conf(apply_fn(params, occluded[None]))[0, t[i]]

    drops = jax.lax.map(drop_one, jnp.arange(b * py * px), batch_size=batch_size)
    drops = drops.reshape(b, py, px)
    total = jnp.einsum("bij,iy,jx->byx", drops, rows, cols)
    count = rows.sum(0)[:, None] * cols.sum(0)[None, :]
    return total / jnp.maximum(count, 1.0)
