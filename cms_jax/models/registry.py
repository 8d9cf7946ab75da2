"""One way to load a model: ``load(name_or_path) -> FaceModel``.

Built-in names (real files found through `cms_jax.assets.resolve`):

  gender          mini-XCEPTION gender (IMDB-WIKI), 64x64 gray, classes (woman, man); loose crop, margin 0.8
  expression      mini-XCEPTION FER2013, 64x64 gray, 7 expressions; tight crop, margin 0.2
  headpose        FSA-Net 1x1 and var capsule models averaged (as their demo does): yaw, pitch, roll
                  in degrees (regression: the job needs --target); ONNX converted to JAX (or
                  onnxruntime on the host with onnx_backend='onnxruntime'); loose crop, margin 0.6
  headpose_1x1, headpose_var   each FSA-Net model alone
  headpose_bins   `headpose` as the paper's 9 yaw x pitch classes (soft bins, `outputs.pose_bins`)
  age             SSR-Net (IMDB) age in years (regression), 64x64 BGR 0-255; loose crop, margin 0.8
  age_bins        `age` as the paper's 10 age classes of 10 years (soft bins, `outputs.age_bins`)
  tiny            the tiny VGG twin (random weights, 32x32) for tests
  vgg_face_random VGG-Face shape (2622 classes, 224x224) with random weights, for benchmarks and
                  the randomisation sanity check (Fig. 7)

Crop margins follow `cms_jax.align.crop_face`: the square crop's side is the
landmark box side times (1 + margin). Measured with MediaPipe landmark boxes on
the 588 UTKFace chips, the gender model is right 68% (margin 0.2), 91% (0.6),
92.3% (0.8), 92.5% (1.0), 86% (1.5) of the time.

Paths: a Keras ``.h5``/``.hdf5`` full model, an ``.onnx`` file (with an optional
``<file>.card.json`` beside it, see `foreign.py`; PyTorch models arrive as ONNX
through ``converters/torch_onnx.py``), or a directory written by a converter
(Orbax ``params/`` + ``model_card.json``).
"""
from __future__ import annotations

import dataclasses
import os
import pathlib

import jax
import numpy as np

from cms_jax.models import foreign, keras_h5, outputs, ssrnet, vgg
from cms_jax.models.base import FaceModel
from cms_jax.models.card import CARD_FILE, ModelCard

GENDER_CLASSES = ("woman", "man")
EXPRESSION_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

# Keras files whose task is known: file-name prefix -> (name, classes, crop policy, margin).
_KERAS_KNOWN = {
    # Trained on IMDB-WIKI crops with context: loose crops are right ~91% on UTKFace, tight ~58%.
    "gender_mini_XCEPTION": ("gender", GENDER_CLASSES, "loose", 0.8),
    # FER2013 faces are centred and fill most of the 48x48 frame: a tight crop with a little context.
    "fer2013_mini_XCEPTION": ("expression", EXPRESSION_CLASSES, "tight", 0.2),
}

BUILTIN = ("gender", "expression", "headpose", "headpose_1x1", "headpose_var", "headpose_bins", "age",
           "age_bins", "tiny", "tiny_embed", "vgg_face_random")


def _resolve(asset: str) -> str:
    from cms_jax.assets import resolve

    return os.fspath(resolve(asset))


def load_keras(path: str, *, name=None, class_names=None, crop_policy=None, crop_margin=None) -> FaceModel:
    """A Keras HDF5 full model as a `FaceModel`; known files get their task's card."""
    config, params = keras_h5.read_h5(path)
    base = os.path.basename(path)
    known = next((v for k, v in _KERAS_KNOWN.items() if base.startswith(k)), None)
    d_name, d_classes, d_policy, d_margin = known or (pathlib.Path(path).stem, None, "tight", 0.2)
    card = keras_h5.card_from_config(
        config, name=name or d_name, crop_policy=crop_policy or d_policy,
        crop_margin=d_margin if crop_margin is None else crop_margin, source=path,
        class_names=class_names or d_classes or _default_classes(config))
    return keras_h5.keras_face_model(card, params)


def _default_classes(config):
    """'class_0' … for an unknown Keras file, K read from the graph's output shape."""
    from flax import nnx

    graphdef, abstract = keras_h5.abstract_graph(config)
    h, w, c = next(l["config"]["batch_input_shape"][1:] for l in config["config"]["layers"]
                   if l["class_name"] == "InputLayer")
    k = jax.eval_shape(lambda p, x: nnx.merge(graphdef, p)(x), abstract,
                       jax.ShapeDtypeStruct((1, h, w, c), np.float32)).shape[-1]
    return tuple(f"class_{i}" for i in range(k))


def load_checkpoint(directory: str) -> FaceModel:
    """A converter's output directory (Orbax ``params`` + ``model_card.json``) as a `FaceModel`."""
    import orbax.checkpoint as ocp

    card = ModelCard.load(directory)
    if card.architecture == "vgg16":
        config = vgg.VGGConfig.from_dict(card.config)
        _, abstract = vgg.abstract_vgg(config)
    elif card.architecture == "keras_graph":
        _, abstract = keras_h5.abstract_graph(card.config)
    else:
        raise ValueError(f"{directory}: unknown architecture {card.architecture!r} in {CARD_FILE}")
    with ocp.StandardCheckpointer() as ckpt:
        params = ckpt.restore(os.path.join(os.path.abspath(directory), "params"), abstract)
    if card.architecture == "keras_graph":
        return keras_h5.keras_face_model(card, params)
    m = vgg.vgg_face_model(params, config, name=card.name, class_names=card.class_names,
                           normalisation=card.normalisation, colour=card.colour,
                           crop_policy=card.crop_policy, crop_margin=card.crop_margin)
    return dataclasses.replace(m, output=card.output) if card.output != m.output else m


FSANET_CARD = {"class_names": ("yaw", "pitch", "roll"), "colour": "BGR", "output": "regression",
               "normalisation": {"scale": 1.0, "mean": [127.5] * 3, "std": [128.0] * 3},
               "crop_policy": "loose", "crop_margin": 0.6}
"""FSA-Net's demo: BGR, (x - 127.5) / 128, the face box enlarged by 0.6 of its side."""


def load(name_or_path: str | os.PathLike, *, onnx_backend: str = "jax") -> FaceModel:
    """Load a built-in model by name, or a model file / converted directory by path.

    Args:
      name_or_path: one of `BUILTIN`, a ``.h5``/``.hdf5`` Keras full model, an ``.onnx`` file
        (FSA-Net files get the head-pose card), or a converter output directory.
      onnx_backend: 'jax' (ONNX graphs converted to JAX: on the device) or 'onnxruntime' (host);
        'auto' loads 'jax' here (the main job times both first: `pipeline.backend_probe`).

    Returns:
      The `FaceModel`.

    Raises:
      ValueError: unknown name or unsupported file type (the message lists what is accepted).
      cms_jax.assets.AssetError: a built-in model's file is absent.
    """
    s = os.fspath(name_or_path)
    onnx_backend = "jax" if onnx_backend == "auto" else onnx_backend
    if s == "gender":
        return load_keras(_resolve("gender_mini_xception"))
    if s == "expression":
        return load_keras(_resolve("fer2013_mini_xception"))
    if s in ("headpose", "headpose_bins"):
        m = foreign.load_onnx([_resolve("fsanet_1x1"), _resolve("fsanet_var")], backend=onnx_backend,
                              name="headpose", **FSANET_CARD)
        return outputs.pose_bins(m) if s == "headpose_bins" else m
    if s in ("headpose_1x1", "headpose_var"):
        return foreign.load_onnx([_resolve(f"fsanet_{s.split('_')[1]}")], backend=onnx_backend, name=s,
                                 **FSANET_CARD)
    if s in ("age", "age_bins"):
        m = ssrnet.load_ssrnet(_resolve("ssr_age_imdb"))
        return outputs.age_bins(m) if s == "age_bins" else m
    if s == "tiny":
        return vgg.tiny_vgg()
    if s == "tiny_embed":  # smoke runs of embedding paths (verification): random weights, 64-d output
        m = vgg.tiny_vgg(num_classes=64)
        return dataclasses.replace(m, name="tiny_embed", output="embedding",
                                   class_names=tuple(f"dim_{i}" for i in range(64)))
    if s == "vgg_face_random":
        config = vgg.VGGConfig()
        return vgg.vgg_face_model(vgg.init_vgg(config, seed=0), config, name=s)
    if os.path.isdir(s):
        return load_checkpoint(s)
    if os.path.isfile(s):
        low = s.lower()
        if low.endswith((".h5", ".hdf5")):
            return load_keras(s)
        if low.endswith(".onnx"):
            card = FSANET_CARD if os.path.basename(low).startswith("fsanet") else {}
            return foreign.load_onnx([s], backend=onnx_backend, **card)
        raise ValueError(f"load({s!r}): unsupported file type (expected .h5/.hdf5, .onnx or a converted directory)")
    raise ValueError(f"load({s!r}): not a built-in model name ({', '.join(BUILTIN)}) and no such file or directory")
