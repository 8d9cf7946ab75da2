"""Face models scored by the CIS/CMS engine: Flax VGG-Face, Keras mini-XCEPTION, black boxes.

  load(name_or_path) -> FaceModel        built-in names in `registry.BUILTIN`, .h5/.onnx files,
                                         converter output directories
  tiny_vgg(num_classes=2, input_size=32, seed=0) -> FaceModel   tiny twin for tests
  flops(model) -> float                  FLOPs per image at the model's input size
  pose_bins / age_bins / change_from_reference / cosine_to_reference / set_reference
                                         confidences for regression and embedding outputs
"""
from cms_jax.models.base import FaceModel, make_preprocess, with_logits
from cms_jax.models.blackbox import callable_model, onnx_model
from cms_jax.models.flops import flops, vgg_flops
from cms_jax.models.outputs import age_bins, change_from_reference, cosine_to_reference, pose_bins, set_reference
from cms_jax.models.registry import BUILTIN, load
from cms_jax.models.vgg import VGG16, VGGConfig, tiny_vgg

__all__ = [
    "BUILTIN", "FaceModel", "VGG16", "VGGConfig", "age_bins", "callable_model", "change_from_reference",
    "cosine_to_reference", "flops", "load", "make_preprocess", "onnx_model", "pose_bins", "set_reference",
    "tiny_vgg", "vgg_flops", "with_logits",
]
