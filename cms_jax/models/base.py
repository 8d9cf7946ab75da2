"""The model object every part of cms_jax scores faces with.

The paper's confidence phi(I, c) of Eq. 1 is read from a `FaceModel`: a jit-able
``apply_fn(params, x) -> (B, K)`` on preprocessed NHWC float32 batches, plus the
facts needed to feed it correctly (input size, channels, crop policy and
preprocessing). The crop policy is part of a model's definition: the gender
mini-XCEPTION is right ~91% of the time on loose crops and ~58% on tight ones.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class FaceModel:
    """A face model with everything needed to score crops with it.

    Attributes:
      name: short name ('gender', 'vgg_face', 'tiny', a file stem, ...).
      apply_fn: ``apply_fn(params, x (B,H,W,C) float32) -> (B,K) float32`` scores;
        jit-able (black boxes are built on ``jax.pure_callback``).
      params: pytree of weights (a plain nested dict; ``{}`` for black boxes).
      input_size: (H, W) of the model input.
      channels: 1 (grayscale) or 3.
      class_names: one name per output column.
      crop_policy: 'loose' | 'tight' | 'whole' (see `crop_margin`).
      crop_margin: extra context as a fraction of the face-box side.
      preprocess: uint8 (B,H,W,3) RGB crops at `input_size` -> float32 (B,H,W,C).
      output: 'classes' | 'regression' | 'embedding'.
      outputs_are_probs: True when `apply_fn` already ends in a softmax.
      features_fn: ``features_fn(params, x) -> (B,h,w,C)``, the default CAM layer.
      head_fn: ``head_fn(params, A) -> (B,K)`` with ``head_fn(features_fn(x)) == apply_fn(x)``.
      head_logits_fn: the same head without its final softmax (the logits), where the model has
        one; the CAM baselines explain logits, as GradCAM/ScoreCAM are defined.
      jittable: False only for models that cannot be traced at all.
      card_note: for foreign models, where the preprocessing came from (card file or defaults).
    """

    name: str
    apply_fn: Callable
    params: Any
    input_size: tuple[int, int]
    channels: int
    class_names: tuple[str, ...]
    crop_policy: str
    crop_margin: float
    preprocess: Callable
    output: str = "classes"
    outputs_are_probs: bool = False
    features_fn: Callable | None = None
    head_fn: Callable | None = None
    head_logits_fn: Callable | None = None
    jittable: bool = True
    card_note: str = ""

    def __post_init__(self):
        if self.crop_policy not in ("loose", "tight", "whole"):
            raise ValueError(f"FaceModel {self.name!r}: crop_policy must be 'loose', 'tight' or "
                             f"'whole', got {self.crop_policy!r}")
        if self.output not in ("classes", "regression", "embedding"):
            raise ValueError(f"FaceModel {self.name!r}: output must be 'classes', 'regression' or "
                             f"'embedding', got {self.output!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"FaceModel {self.name!r}: channels must be 1 or 3, got {self.channels}")

    def __call__(self, x):
        return self.apply_fn(self.params, x)

    @property
    def num_outputs(self) -> int:
        return len(self.class_names)


def make_preprocess(colour: str, scale: float, mean, std) -> Callable:
    """A numpy preprocessing function from a model card's normalisation.

    ``out = (convert(rgb) * scale - mean) / std``, per channel.

    Args:
      colour: 'RGB', 'BGR' or 'GRAY' (ITU-R 601 luma, as OpenCV's RGB2GRAY).
      scale: multiplier applied to the 0-255 values first (1 or 1/255).
      mean: per-channel mean (or a scalar) subtracted after scaling.
      std: per-channel divisor (or a scalar).

    Returns:
      ``preprocess(uint8 (B,H,W,3) RGB) -> float32 (B,H,W,C)``.
    """
    if colour not in ("RGB", "BGR", "GRAY"):
        raise ValueError(f"colour order must be 'RGB', 'BGR' or 'GRAY', got {colour!r}")
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)

    def preprocess(rgb: np.ndarray) -> np.ndarray:
        rgb = np.asarray(rgb)
        if rgb.ndim == 3:
            rgb = rgb[None]
        if rgb.ndim != 4 or rgb.shape[-1] != 3:
            raise ValueError(f"preprocess expects uint8 RGB (B,H,W,3), got shape {rgb.shape}")
        x = rgb.astype(np.float32)
        if colour == "BGR":
            x = x[..., ::-1]
        elif colour == "GRAY":
            # Rounded like OpenCV's uint8 cvtColor, which the Keras models were trained with.
            x = np.round(x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
        return ((x * np.float32(scale) - mean) / std).astype(np.float32)

    return preprocess


def with_logits(model: FaceModel) -> FaceModel:
    """The model read before its final softmax (``--score=logit``), where it ends in one.

    A model whose graph ends in a softmax (``outputs_are_probs``) gives probabilities from
    ``apply_fn``; the logit score of Eq. 1 (the official code's) needs the values before it:
    ``head_logits_fn(features_fn(x))``. A model that outputs logits already is returned as is.

    Raises:
      ValueError: the model ends in a softmax but has no logits layer to read.
    """
    import dataclasses

    if not model.outputs_are_probs or model.output != "classes":
        return model
    if model.features_fn is None or model.head_logits_fn is None:
        raise ValueError(f"--score=logit: model {model.name!r} ends in a softmax and exposes no layer before it "
                         f"(no features_fn/head_logits_fn), so its logits cannot be read; use --score=prob")
    feats, head = model.features_fn, model.head_logits_fn
    return dataclasses.replace(model, apply_fn=lambda p, x: head(p, feats(p, x)), outputs_are_probs=False,
                               head_fn=head)
