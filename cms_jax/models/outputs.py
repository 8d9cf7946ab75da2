"""Confidences for models whose output is not a class score (phi(I, c) of Eq. 1).

The paper turns real-valued tasks into classes (Sec. 4.1 and Supp. S1): head
pose as 9 yaw x pitch bins from top-left to bottom-right, age as 10 bins of 10
years. Here a regression output ``v`` becomes soft bin probabilities — the
chance that ``v + N(0, sigma^2)`` falls in each bin — so an occlusion that
moves the prediction lowers the confidence smoothly, not in a 0/1 jump.
Alternatives: the negative change from the unoccluded prediction (regression)
and cosine similarity to a reference embedding (embedding models).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cms_jax.models.base import FaceModel
from cms_jax.occlusion import cosine_confidence
from cms_jax.models.flops import HOST_FLOPS


def _bin_probs(v, edges, sigma):
    """(B,) values -> (B, len(edges)+1) probabilities of N(v, sigma^2) falling in each bin."""
    cdf = jax.scipy.stats.norm.cdf((jnp.asarray(edges, jnp.float32)[None, :] - v[:, None]) / sigma)
    lo = jnp.concatenate([jnp.zeros_like(cdf[:, :1]), cdf], axis=1)
    hi = jnp.concatenate([cdf, jnp.ones_like(cdf[:, :1])], axis=1)
    return hi - lo


# The paper's bins (Sec. 4.1.1, Supp. S1): the one vocabulary of age and pose classes, used by the
# binned models here and by fine-tuning's labels (`cms_jax.train.labels`), so both share class indices.
YAW_EDGES, PITCH_EDGES = (-15.0, 15.0), (-10.0, 10.0)  # inner edges of the 3 x 3 pose grid, degrees
AGE_WIDTH, AGE_BINS = 10.0, 10                          # 0-9, 10-19, ..., 90+ years


def bin_names(label: str, edges: Sequence[float]) -> list[str]:
    """Names of the bins ``[edge_{i-1}, edge_i)`` of one axis: ``label[a,b)``, open at both ends."""
    e = [-np.inf, *edges, np.inf]
    return [f"{label}[{a:g},{b:g})" for a, b in zip(e[:-1], e[1:])]


def age_bin_edges(width: float = AGE_WIDTH, num_bins: int = AGE_BINS) -> list[float]:
    """Inner edges of ``num_bins`` age bins of ``width`` years, the last open-ended."""
    return [width * i for i in range(1, num_bins)]


def age_bin_names(width: float = AGE_WIDTH, num_bins: int = AGE_BINS) -> tuple[str, ...]:
    """Class names of the age bins: ``age[0,10)``, ..., ``age[90,inf)``."""
    edges = age_bin_edges(width, num_bins)
    return tuple([f"age[{width * i:g},{width * (i + 1):g})" for i in range(num_bins - 1)]
                 + [f"age[{edges[-1]:g},inf)"])


def pose_bin_names(yaw_edges: Sequence[float] = YAW_EDGES,
                   pitch_edges: Sequence[float] = PITCH_EDGES) -> tuple[str, ...]:
    """Class names of the 9 pose bins, row-major by pitch then yaw (top-left to bottom-right)."""
    return tuple(f"{p}/{y}" for p in bin_names("pitch", pitch_edges) for y in bin_names("yaw", yaw_edges))


def _wrap(model: FaceModel, transform, params, class_names, *, suffix, output="classes", probs=True):
    """A model whose scores are ``transform(params, inner_scores)``; CAM split kept if present."""
    inner_apply, inner_head = model.apply_fn, model.head_fn

    def apply_fn(p, x):
        return transform(p, inner_apply(p["model"], x))

    inner_features = model.features_fn

    def head_fn(p, a):
        return transform(p, inner_head(p["model"], a))

    def features_fn(p, x):
        return inner_features(p["model"], x)

    if inner_apply in HOST_FLOPS:  # a black box stays countable through the wrapper
        HOST_FLOPS[apply_fn] = HOST_FLOPS[inner_apply]
    return dataclasses.replace(model, name=f"{model.name}_{suffix}", apply_fn=apply_fn, params=params,
                               class_names=tuple(class_names), output=output, outputs_are_probs=probs,
                               features_fn=features_fn if inner_features is not None else None,
                               head_fn=head_fn if inner_head is not None else None, head_logits_fn=None)


def pose_bins(model: FaceModel, yaw_edges: Sequence[float] = YAW_EDGES,
              pitch_edges: Sequence[float] = PITCH_EDGES, sigma: float = 5.0) -> FaceModel:
    """Head pose (yaw, pitch, roll) -> 9 soft yaw x pitch bins, row-major by pitch then yaw.

    Args:
      model: regression model whose outputs 0 and 1 are yaw and pitch in degrees.
      yaw_edges, pitch_edges: the two inner edges of each 3-bin axis (degrees).
      sigma: softness of the bins (degrees).

    Returns:
      A 'classes' model with probabilities over 9 classes (``outputs_are_probs=True``).
    """
    names = list(pose_bin_names(yaw_edges, pitch_edges))

    def transform(p, out):
        py = _bin_probs(out[:, 0], yaw_edges, sigma)
        pp = _bin_probs(out[:, 1], pitch_edges, sigma)
        return (pp[:, :, None] * py[:, None, :]).reshape(out.shape[0], -1)

    return _wrap(model, transform, {"model": model.params}, names, suffix="bins")


def age_bins(model: FaceModel, width: float = AGE_WIDTH, num_bins: int = AGE_BINS, sigma: float = 3.0) -> FaceModel:
    """Age regression (output 0, years) -> `num_bins` soft bins of `width` years (the last open-ended)."""
    edges = age_bin_edges(width, num_bins)
    names = list(age_bin_names(width, num_bins))

    def transform(p, out):
        return _bin_probs(out[:, 0], edges, sigma)

    return _wrap(model, transform, {"model": model.params}, names, suffix="bins")


def change_from_reference(model: FaceModel, reference=None) -> FaceModel:
    """Regression -> one score, ``-||f(x) - reference||``: 0 unoccluded, lower as the output moves.

    The reference lives in ``params['reference']`` so one compiled function
    serves every image; set it per image with `set_reference`.
    """
    k = len(model.class_names)
    ref = jnp.zeros((k,), jnp.float32) if reference is None else jnp.asarray(reference, jnp.float32).reshape(k)

    def transform(p, out):
        return -jnp.linalg.norm(out - p["reference"][None, :], axis=-1, keepdims=True)

    return _wrap(model, transform, {"model": model.params, "reference": ref}, ["neg_change"],
                 suffix="change", probs=False)


def cosine_to_reference(model: FaceModel, reference=None) -> FaceModel:
    """Embedding -> one score, the cosine similarity to ``params['reference']``."""
    k = len(model.class_names)
    ref = jnp.ones((k,), jnp.float32) if reference is None else jnp.asarray(reference, jnp.float32).reshape(k)

    def transform(p, out):  # the engine's cosine rule, `occlusion.cosine_confidence`
        return cosine_confidence(out, jnp.broadcast_to(p["reference"], out.shape))[0][:, None]

    return _wrap(model, transform, {"model": model.params, "reference": ref}, ["cosine"],
                 suffix="cosine", probs=False)


def set_reference(model: FaceModel, reference) -> FaceModel:
    """The same model (same compiled function) with a new reference vector in its params.

    Typical use, per image: ``m = set_reference(m, base(x0)[0])`` where ``base`` is the
    unwrapped model and ``x0`` the unoccluded preprocessed image.

    Args:
      model: from `change_from_reference` or `cosine_to_reference`.
      reference: (K,) vector, K = the inner model's outputs.
    """
    if not isinstance(model.params, dict) or "reference" not in model.params:
        raise ValueError(f"model {model.name!r} has no reference (use change_from_reference/cosine_to_reference)")
    old = model.params["reference"]
    ref = jnp.asarray(reference, jnp.float32).reshape(-1)
    if ref.shape != old.shape:
        raise ValueError(f"reference for {model.name!r} must have shape {old.shape}, got {ref.shape}")
    return dataclasses.replace(model, params={**model.params, "reference": ref})
