"""Shared pieces of the baseline saliency methods: targets, resizing, model unpacking.

The baselines (GradCAM, GradCAM++, ScoreCAM, gradients, grid occlusion) are the
comparison methods of Section 4.2 of the paper (Figs. 2, 8-10); every one returns
heatmaps of shape (B, H, W) at the model input size.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np


def select_targets(outputs: jax.Array, targets: jax.Array | None) -> jax.Array:
    """Target class per image: the given ones, or the arg-max of the model output.

    Args:
      outputs: (B, K) model scores.
      targets: (B,) int class indices, or None for the predicted class.

    Returns:
      (B,) int32 class indices.
    """
    if targets is None:
        return jnp.argmax(outputs, axis=-1).astype(jnp.int32)
    return jnp.asarray(targets, jnp.int32).reshape(outputs.shape[0])


def pick(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """outputs[b, targets[b]] for every b: (B, K), (B,) -> (B,)."""
    return jnp.take_along_axis(outputs, targets[:, None], axis=1)[:, 0]


def resize_bilinear(maps: jax.Array, hw: tuple[int, int]) -> jax.Array:
    """Bilinear resize (half-pixel centres, as cv2.resize) of (B, h, w) maps to (B, H, W)."""
    return jax.image.resize(maps, (maps.shape[0], *hw), method="bilinear")


def _align_corners_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation matrix with align_corners=True sampling."""
    m = np.zeros((n_out, n_in), np.float32)
    if n_in == 1 or n_out == 1:
        m[:, 0] = 1.0
        return m
    src = np.arange(n_out) * (n_in - 1) / (n_out - 1)
    lo = np.clip(np.floor(src).astype(int), 0, n_in - 2)
    frac = (src - lo).astype(np.float32)
    m[np.arange(n_out), lo] = 1.0 - frac
    m[np.arange(n_out), lo + 1] += frac
    return m


def resize_align_corners(maps: jax.Array, hw: tuple[int, int]) -> jax.Array:
    """Bilinear resize with align_corners=True of (..., h, w) maps to (..., H, W).

    This is torch.nn.UpsamplingBilinear2d, which pytorch-grad-cam's ScoreCAM uses
    to upsample channel maps into input masks; matching it keeps our ScoreCAM
    identical to that widely used implementation.
    """
    h, w = maps.shape[-2:]
    my = jnp.asarray(_align_corners_matrix(h, hw[0]))
    mx = jnp.asarray(_align_corners_matrix(w, hw[1]))
    return jnp.einsum("Yh,...hw,Xw->...YX", my, maps, mx)


def unpack_model(model: Any, logits: bool = True) -> tuple[Callable, Callable, Any]:
    """(features_fn, head_fn, params) of a FaceModel, with a clear error when it has no split.

    Args:
      model: a cms_jax.models.FaceModel (anything with features_fn, head_fn, params).
      logits: use the head without its final softmax (``head_logits_fn``) where the model has
        one: on a softmax output GradCAM's gradients saturate and ScoreCAM's weights flatten.

    Returns:
      The features function, the head function and the parameters.
    """
    features_fn = getattr(model, "features_fn", None)
    head_fn = (logits and getattr(model, "head_logits_fn", None)) or getattr(model, "head_fn", None)
    if features_fn is None or head_fn is None:
        raise ValueError(
            f"model {getattr(model, 'name', model)!r} has no features_fn/head_fn split, so CAM "
            "methods have no target layer; use grid occlusion or CMS for black-box models")
    return features_fn, head_fn, model.params


def check_images(x: jax.Array, name: str = "x") -> jax.Array:
    """Validate a (B, H, W, C) float image batch."""
    x = jnp.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"{name} must be a (B, H, W, C) image batch, got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{name} must be float (preprocessed model input), got dtype {x.dtype}")
    return x
