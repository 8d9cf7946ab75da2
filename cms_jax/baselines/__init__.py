"""Baseline saliency methods compared with CMS in Section 4.2 (Figs. 2, 8-10).

Low-level functions take (features_fn, head_fn, params, x, targets) for CAMs or
(apply_fn, params, x, targets) for input-space methods; ``explain`` takes a
cms_jax.models.FaceModel and a method name. All return (B, H, W) heatmaps at the
model input size.
"""
from __future__ import annotations

from typing import Any

import jax

from cms_jax import occlusion as occ
from cms_jax.baselines.cams import gradcam, gradcam_plusplus, scorecam
from cms_jax.baselines.common import unpack_model
from cms_jax.baselines.gradients import (guided_backprop, guided_gradcam_plusplus, smoothgrad,
                                         vanilla_gradients)
from cms_jax.baselines.grid_occlusion import grid_occlusion
from cms_jax.baselines.guided_relu import guided_relu, with_guided_relus
from cms_jax.baselines.rise import rise

CAM_METHODS = ("gradcam", "gradcam++", "scorecam", "guided_gradcam++")
INPUT_METHODS = ("gradients", "smoothgrad", "guided_backprop", "grid_occlusion")
METHODS = CAM_METHODS + INPUT_METHODS  # Fig. 2's methods
BLACK_BOX_METHODS = ("rise",)          # beyond the paper: RISE, the random-mask rival of occlusion


def explain(model: Any, x: jax.Array, method: str, targets: jax.Array | None = None,
            **kwargs) -> jax.Array:
    """Heatmaps of one baseline method for a FaceModel.

    Args:
      model: a cms_jax.models.FaceModel (CAM methods need its features_fn/head_fn).
      x: (B, H, W, C) preprocessed images at model.input_size.
      method: one of METHODS.
      targets: (B,) class indices, or None for the predicted class.
      **kwargs: method options (e.g. patch/stride for grid_occlusion, batch_size). Grid occlusion
        scores the model's own confidence (`cms_jax.occlusion.score_mode` with score 'prob':
        softmax of logits, sigmoid of one logit, raw probabilities or regression values,
        cosine to the clean embedding) unless ``mode`` is given.

    Returns:
      (B, H, W) float32 heatmaps.
    """
    if method not in METHODS + BLACK_BOX_METHODS:
        raise ValueError(f"unknown saliency method {method!r}; choose one of {METHODS + BLACK_BOX_METHODS}")
    if method in CAM_METHODS:
        fns = unpack_model(model)
        fn = {"gradcam": gradcam, "gradcam++": gradcam_plusplus, "scorecam": scorecam,
              "guided_gradcam++": guided_gradcam_plusplus}[method]
        return fn(*fns, x, targets, **kwargs)
    if method in ("grid_occlusion", "rise"):
        kwargs.setdefault("mode", occ.score_mode("prob", bool(getattr(model, "outputs_are_probs", False)),
                                                 getattr(model, "output", "classes")))
        fn = grid_occlusion if method == "grid_occlusion" else rise
        return fn(model.apply_fn, model.params, x, targets, **kwargs)
    fn = {"gradients": vanilla_gradients, "smoothgrad": smoothgrad,
          "guided_backprop": guided_backprop}[method]
    return fn(model.apply_fn, model.params, x, targets, **kwargs)


__all__ = ["CAM_METHODS", "INPUT_METHODS", "METHODS", "BLACK_BOX_METHODS", "rise", "explain", "gradcam", "gradcam_plusplus",
           "scorecam", "vanilla_gradients", "smoothgrad", "guided_backprop",
           "guided_gradcam_plusplus", "grid_occlusion", "guided_relu", "with_guided_relus",
           "unpack_model"]
