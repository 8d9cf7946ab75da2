"""Class activation maps: GradCAM, GradCAM++ and ScoreCAM (baselines of Section 4.2, Figs. 2, 9, 10).

All three weight the channels of a target layer A = features_fn(params, x)
(B, h, w, C) and return relu(sum_c w_c A_c), bilinearly upsampled to the input
size. The target layer is whatever the model's ``features_fn`` returns (VGG:
conv5_3 after its ReLU; mini-XCEPTION: the last convolutional block); pass other
features_fn/head_fn pairs to explain another layer. The class score is the raw
head output (logit, or probability for models whose head ends in softmax), as
pytorch-grad-cam's ClassifierOutputTarget uses it.

The formulas follow pytorch-grad-cam (jacobgil/pytorch-grad-cam), the
implementation the issue asks us to agree with:
  GradCAM:   w_c = mean_ij g_cij
  GradCAM++: alpha = g^2 / (2 g^2 + sum_ij(A_c) g^3 + eps), alpha = 0 where g = 0,
             w_c = sum_ij relu(g_cij) alpha_cij      (Chattopadhyay et al., Eq. 19)
  ScoreCAM:  channel maps upsampled (align_corners=True), min-max normalised,
             multiplied into the input, the masked inputs scored, w = softmax(scores)
Maps are returned unnormalised; metrics.normalize_heatmaps does Eq. 8.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from cms_jax.baselines.common import (check_images, pick, resize_align_corners,
                                      resize_bilinear, select_targets)


def _grads(features_fn, head_fn, params, x, targets):
    """Target-layer activations A, d score / dA, and the targets used."""
    acts = features_fn(params, x)

    def total_score(a):
        out = head_fn(params, a)
        t = select_targets(jax.lax.stop_gradient(out), targets)
        # Images are independent, so the gradient of the sum is each image's gradient.
        return jnp.sum(pick(out, t)), t

    grads, t = jax.grad(total_score, has_aux=True)(acts)
    return acts, grads, t


def _finish(acts, weights, hw, upsample):
    cam = jnp.maximum(jnp.einsum("bhwc,bc->bhw", acts, weights), 0.0)
    return resize_bilinear(cam, hw) if upsample else cam


@functools.partial(jax.jit, static_argnames=("features_fn", "head_fn", "upsample"))
def gradcam(features_fn: Callable, head_fn: Callable, params: Any, x: jax.Array,
            targets: jax.Array | None = None, *, upsample: bool = True) -> jax.Array:
    """GradCAM (Selvaraju et al.): channel weights = spatial mean of the gradients.

    Args:
      features_fn: features_fn(params, x) -> A (B, h, w, C), the target layer.
      head_fn: head_fn(params, A) -> (B, K) class scores.
      params: model parameters (pytree).
      x: (B, H, W, C) preprocessed images.
      targets: (B,) class indices, or None for the predicted class.
      upsample: False returns the (B, h, w) map at the target layer's resolution.

    Returns:
      (B, H, W) float32 heatmaps (non-negative, unnormalised).
    """
    x = check_images(x)
    acts, grads, _ = _grads(features_fn, head_fn, params, x, targets)
    return _finish(acts, jnp.mean(grads, axis=(1, 2)), x.shape[1:3], upsample)


@functools.partial(jax.jit, static_argnames=("features_fn", "head_fn", "upsample", "eps"))
def gradcam_plusplus(features_fn: Callable, head_fn: Callable, params: Any, x: jax.Array,
                     targets: jax.Array | None = None, *, upsample: bool = True,
                     eps: float = 1e-6) -> jax.Array:
    """GradCAM++ (Chattopadhyay et al., Eq. 19) as pytorch-grad-cam writes it.

    Args:
      features_fn, head_fn, params, x, targets, upsample: as in ``gradcam``.
      eps: added to the alpha denominator (pytorch-grad-cam uses 1e-6). With
        eps=0 a zero denominator is replaced by 1 (the original authors' guard).

    Returns:
      (B, H, W) float32 heatmaps (non-negative, unnormalised).
    """
    x = check_images(x)
    acts, g, _ = _grads(features_fn, head_fn, params, x, targets)
    g2 = g * g
    sum_acts = jnp.sum(acts, axis=(1, 2), keepdims=True)
    denom = 2.0 * g2 + sum_acts * g2 * g + eps
    denom = jnp.where(denom == 0.0, 1.0, denom)
    # alpha is zeroed where the gradient is 0, as in pytorch-grad-cam.
    alpha = jnp.where(g != 0.0, g2 / denom, 0.0)
    weights = jnp.sum(jnp.maximum(g, 0.0) * alpha, axis=(1, 2))
    return _finish(acts, weights, x.shape[1:3], upsample)


@functools.partial(jax.jit,
                   static_argnames=("features_fn", "head_fn", "upsample", "batch_size"))
def scorecam(features_fn: Callable, head_fn: Callable, params: Any, x: jax.Array,
             targets: jax.Array | None = None, *, upsample: bool = True,
             batch_size: int = 32) -> jax.Array:
    """ScoreCAM (Wang et al.): channels weighted by the softmax of masked-input scores.

    Needs B * C forward passes (C = target-layer channels, 512 for VGG conv5_3);
    they run inside one jitted lax.map, ``batch_size`` masked images at a time.

    Args:
      features_fn, head_fn, params, x, targets, upsample: as in ``gradcam``.
      batch_size: masked images per forward pass (memory vs speed).

    Returns:
      (B, H, W) float32 heatmaps (non-negative, unnormalised).
    """
    x = check_images(x)
    acts = features_fn(params, x)
    t = select_targets(head_fn(params, acts), targets)
    b, _, _, c = acts.shape
    hw = x.shape[1:3]
    chans = jnp.moveaxis(acts, -1, 1)  # (B, C, h, w)

    def score_one(k):
        i, j = k // c, k % c
        m = resize_align_corners(chans[i, j], hw)
        m = (m - m.min()) / (m.max() - m.min() + 1e-8)  # pytorch-grad-cam's epsilon
        out = head_fn(params, features_fn(params, (x[i] * m[..., None])[None]))
        return out[0, t[i]]

    scores = jax.lax.map(score_one, jnp.arange(b * c), batch_size=batch_size)
    weights = jax.nn.softmax(scores.reshape(b, c), axis=-1)
    return _finish(acts, weights, hw, upsample)
