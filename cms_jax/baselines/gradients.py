"""Gradient saliency: vanilla gradients, SmoothGrad, guided backprop, guided GradCAM++.

Baselines shown next to CMS in the paper's Fig. 2 style grids (Section 4). Each
takes apply_fn(params, x) -> (B, K) and differentiates the target class score
with respect to the input. A (B, H, W, C) gradient becomes a (B, H, W) heatmap
by the maximum absolute value over colour channels (Simonyan et al.).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from cms_jax.baselines.cams import gradcam_plusplus
from cms_jax.baselines.common import check_images, pick, select_targets
from cms_jax.baselines.guided_relu import with_guided_relus


def _input_grads(apply_fn, params, x, targets):
    def total(xx):
        out = apply_fn(params, xx)
        t = select_targets(jax.lax.stop_gradient(out), targets)
        return jnp.sum(pick(out, t)), t

    return jax.grad(total, has_aux=True)(x)


def _to_map(g: jax.Array) -> jax.Array:
    return jnp.max(jnp.abs(g), axis=-1)


@functools.partial(jax.jit, static_argnames=("apply_fn",))
def vanilla_gradients(apply_fn: Callable, params: Any, x: jax.Array,
                      targets: jax.Array | None = None) -> jax.Array:
    """|d score / d x| (Simonyan et al.).

    Args:
      apply_fn: apply_fn(params, x) -> (B, K) scores.
      params: model parameters.
      x: (B, H, W, C) preprocessed images.
      targets: (B,) class indices, or None for the predicted class.

    Returns:
      (B, H, W) float32 heatmaps.
    """
    g, _ = _input_grads(apply_fn, params, check_images(x), targets)
    return _to_map(g)


@functools.partial(jax.jit, static_argnames=("apply_fn", "num_samples"))
def smoothgrad(apply_fn: Callable, params: Any, x: jax.Array, targets: jax.Array | None = None,
               *, key: jax.Array | None = None, num_samples: int = 16,
               noise_level: float = 0.15) -> jax.Array:
    """SmoothGrad (Smilkov et al.): gradients averaged over noisy copies of the input.

    Args:
      apply_fn, params, x, targets: as in ``vanilla_gradients``. The target is fixed
        from the clean image so every noisy copy explains the same class.
      key: PRNG key for the noise (default PRNGKey(0), so results are reproducible).
      num_samples: noisy copies per image.
      noise_level: noise std as a fraction of each image's value range (paper: 0.1-0.2).

    Returns:
      (B, H, W) float32 heatmaps.
    """
    x = check_images(x)
    key = jax.random.PRNGKey(0) if key is None else key
    t = select_targets(apply_fn(params, x), targets)
    span = jnp.max(x, axis=(1, 2, 3), keepdims=True) - jnp.min(x, axis=(1, 2, 3), keepdims=True)
    sigma = noise_level * span

    def one(k):
        noisy = x + sigma * jax.random.normal(k, x.shape, x.dtype)
        return _input_grads(apply_fn, params, noisy, t)[0]

    grads = jax.lax.map(one, jax.random.split(key, num_samples))
    return _to_map(jnp.mean(grads, axis=0))


@functools.partial(jax.jit, static_argnames=("apply_fn",))
def guided_backprop(apply_fn: Callable, params: Any, x: jax.Array,
                    targets: jax.Array | None = None) -> jax.Array:
    """Guided backpropagation (Springenberg et al.) through every ReLU of the model.

    The model's ReLUs are swapped for guided ones by a jaxpr rewrite
    (``guided_relu.with_guided_relus``), so models need no activation hook.

    Args:
      apply_fn, params, x, targets: as in ``vanilla_gradients``.

    Returns:
      (B, H, W) float32 heatmaps.
    """
    g, _ = _input_grads(with_guided_relus(apply_fn), params, check_images(x), targets)
    return _to_map(g)


def guided_gradcam_plusplus(features_fn: Callable, head_fn: Callable, params: Any,
                            x: jax.Array, targets: jax.Array | None = None) -> jax.Array:
    """Guided GradCAM++: guided-backprop map times the upsampled GradCAM++ map.

    Args:
      features_fn, head_fn, params, x, targets: as in ``cams.gradcam``.

    Returns:
      (B, H, W) float32 heatmaps.
    """
    x = check_images(x)
    if targets is None:  # both factors must explain the same class
        targets = select_targets(head_fn(params, features_fn(params, x)), None)
    apply_fn = _composed(features_fn, head_fn)
    return guided_backprop(apply_fn, params, x, targets) * gradcam_plusplus(
        features_fn, head_fn, params, x, targets)


@functools.lru_cache(maxsize=32)
def _composed(features_fn, head_fn):
    # Cached so jit sees the same function object each call and does not retrace.
    return lambda params, x: head_fn(params, features_fn(params, x))
