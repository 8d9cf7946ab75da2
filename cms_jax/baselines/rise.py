"""RISE (Petsiuk, Das & Saenko 2018): the black-box rival of occlusion, batched on the device.

N random masks: a ``cells`` x ``cells`` grid of cells kept with probability ``p``,
upsampled bilinearly to (cells + 1) cells of the input's size and cropped at a random
shift of up to one cell (so the mask edges fall anywhere, not on a fixed grid). Each
masked copy ``x * M + fill * (1 - M)`` is scored, and the saliency is the
confidence-weighted mean mask,

    S(u) = 1 / (N p) * sum_i phi(x ⊙ M_i) M_i(u),

with phi the occlusion's own confidence (`cms_jax.occlusion.phi`), so RISE, grid
occlusion and the CIS score the same quantity. Like the CIS it needs only the
model's outputs. The masks are shared by every image of a call (as the official
code does) and come from ``seed``; `masks` exposes them for tests and audits.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from cms_jax import occlusion as occ
from cms_jax.baselines.common import check_images


def masks(seed: int, n: int, hw: tuple[int, int], cells: int = 8, p: float = 0.5) -> jax.Array:
    """(n, H, W) float32 RISE masks in [0, 1] (module docstring)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"RISE keep probability p must be in (0, 1), got {p}")
    if cells < 1 or n < 1:
        raise ValueError(f"RISE needs n >= 1 masks and cells >= 1, got n={n}, cells={cells}")
    h, w = hw
    ch, cw = -(-h // cells), -(-w // cells)
    k_grid, k_y, k_x = jax.random.split(jax.random.key(seed), 3)
    grid = jax.random.bernoulli(k_grid, p, (n, cells, cells)).astype(jnp.float32)
    up = jax.image.resize(grid, (n, (cells + 1) * ch, (cells + 1) * cw), method="bilinear")
    dy = jax.random.randint(k_y, (n,), 0, ch)
    dx = jax.random.randint(k_x, (n,), 0, cw)
    return jax.vmap(lambda m, y, x: jax.lax.dynamic_slice(m, (y, x), (h, w)))(up, dy, dx)


@functools.partial(jax.jit, static_argnames=("apply_fn", "n_masks", "cells", "p", "mode", "batch_size"))
def rise(apply_fn: Callable, params: Any, x: jax.Array, targets: jax.Array | None = None, *,
         n_masks: int = 2000, cells: int = 8, p: float = 0.5, fill: float = 0.0, mode: str = "softmax",
         batch_size: int = 64, seed: int = 0) -> jax.Array:
    """RISE saliency maps.

    Args:
      apply_fn, params: the model (``apply_fn(params, x) -> (B, K)``).
      x: (B, H, W, C) preprocessed images.
      targets: (B,) classes, or None for the predicted class; under mode 'cosine' (B, D)
        reference embeddings, or None for each image's clean embedding.
      n_masks, cells, p: the masks (`masks`); fill: the value behind a mask (normalised input).
      mode: `cms_jax.occlusion.score_mode` of the model.
      batch_size: masked copies per forward pass.

    Returns:
      (B, H, W) float32 maps, S of the module docstring.
    """
    x = check_images(x)
    b, h, w, _ = x.shape
    base_out = apply_fn(params, x)
    if mode == "cosine":
        t = base_out.astype(jnp.float32) if targets is None else jnp.asarray(targets, jnp.float32)
    else:
        t = jnp.full((b,), -1, jnp.int32) if targets is None else jnp.asarray(targets, jnp.int32).reshape(b)
    _, cls = occ.phi(base_out, mode, t)
    t = t if mode == "cosine" else cls
    m = masks(seed, n_masks, (h, w), cells, p)

    def score(k):
        i, j = k // n_masks, k % n_masks
        copy = x[i] * m[j][..., None] + fill * (1.0 - m[j][..., None])
        return occ.phi(apply_fn(params, copy[None]), mode, t[i][None])[0][0]

    conf = jax.lax.map(score, jnp.arange(b * n_masks), batch_size=batch_size).reshape(b, n_masks)
    return jnp.einsum("bn,nhw->bhw", conf, m) / (n_masks * p)
