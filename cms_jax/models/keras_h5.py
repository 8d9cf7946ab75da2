"""Read Keras 2.x HDF5 full models with h5py (no TensorFlow) into a `KerasGraph`.

`read_h5` returns the ``model_config`` and pure-dict params named like the
Keras layers; `keras_face_model` wraps them into a `FaceModel` whose
preprocessing and crop policy come from a model card. The conversion is
validated against the ``nnx.eval_shape`` tree (one error for all problems).
"""
from __future__ import annotations

import json

import h5py
import numpy as np
from flax import nnx

from cms_jax.models.base import FaceModel, make_preprocess
from cms_jax.models.card import ModelCard
from cms_jax.models.weights import check_tree
from cms_jax.models.xception import KerasGraph

# Keras weight name -> (sub-module path, Flax name); depthwise kernels are reshaped below.
_RENAME = {
    "kernel": ("kernel",), "bias": ("bias",), "gamma": ("scale",), "beta": ("bias",),
    "moving_mean": ("mean",), "moving_variance": ("var",),
    "depthwise_kernel": ("depthwise", "kernel"), "pointwise_kernel": ("pointwise", "kernel"),
}


def abstract_graph(model_config: dict):
    """(graphdef, abstract pure-dict params) of the Keras graph, nothing allocated."""
    graph = nnx.eval_shape(lambda: KerasGraph(model_config, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(graph)
    return graphdef, nnx.to_pure_dict(state)


def _decode(v):
    return v.decode() if isinstance(v, bytes) else v


def read_weights(path: str, expected: dict, *, source: str, kind_of: dict | None = None) -> dict:
    """Keras HDF5 weights (full model or weights-only file) -> pure-dict params, validated.

    Args:
      path: the HDF5 file.
      expected: the model's abstract params (from ``nnx.eval_shape``), to validate against.
      source: name for error messages.
      kind_of: Keras layer name -> class name (SeparableConv2D biases go on the pointwise conv).

    Raises:
      WeightMismatchError: listing every missing, extra and mis-shaped weight at once.
    """
    kind_of = kind_of or {}
    params: dict = {}
    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f
        for layer in (_decode(n) for n in group.attrs["layer_names"]):
            g = group[layer]
            for wname in (_decode(n) for n in g.attrs.get("weight_names", [])):
                short = wname.split("/")[-1].split(":")[0]
                if short not in _RENAME:
                    raise ValueError(f"{path}: layer {layer} has an unknown weight {wname}")
                value = np.asarray(g[wname], np.float32)
                path_ = _RENAME[short]
                if short == "depthwise_kernel":  # (kh,kw,Cin,mult) -> grouped conv (kh,kw,1,Cin*mult)
                    kh, kw, cin, mult = value.shape
                    value = value.reshape(kh, kw, 1, cin * mult)
                if short == "bias" and kind_of.get(layer) == "SeparableConv2D":
                    path_ = ("pointwise", "bias")  # Keras adds the bias after the pointwise conv
                node = params.setdefault(layer, {})
                for p in path_[:-1]:
                    node = node.setdefault(p, {})
                node[path_[-1]] = value
    check_tree(expected, params, source=source)
    return params


def read_h5(path: str) -> tuple[dict, dict]:
    """Keras HDF5 full model -> (model_config, pure-dict params).

    Raises:
      ValueError: the file has no ``model_config`` (weights-only file).
      WeightMismatchError: weights do not match the graph (all problems listed).
    """
    with h5py.File(path, "r") as f:
        if "model_config" not in f.attrs:
            raise ValueError(f"{path}: no model_config attribute; a weights-only file needs its graph written by hand")
        config = json.loads(_decode(f.attrs["model_config"]))
    kind_of = {l["name"]: l["class_name"] for l in config["config"]["layers"]}
    _, expected = abstract_graph(config)
    return config, read_weights(path, expected, source=f"Keras file {path}", kind_of=kind_of)


def card_from_config(config: dict, *, name: str, class_names, crop_policy: str, crop_margin: float,
                     source: str = "") -> ModelCard:
    """Card for a mini-XCEPTION-style Keras model: grayscale or RGB, ``x/255*2-1``, softmax output."""
    shape = next(l["config"]["batch_input_shape"] for l in config["config"]["layers"]
                 if l["class_name"] == "InputLayer")
    channels = int(shape[-1])
    return ModelCard(
        name=name, architecture="keras_graph", config=config, input_size=(int(shape[1]), int(shape[2])),
        channels=channels, colour="GRAY" if channels == 1 else "RGB",
        normalisation={"scale": 1.0 / 255.0, "mean": [0.5] * channels, "std": [0.5] * channels},
        crop_policy=crop_policy, crop_margin=crop_margin, class_names=tuple(class_names),
        output="classes", outputs_are_probs=True, source=source)


def keras_face_model(card: ModelCard, params: dict) -> FaceModel:
    """A `FaceModel` from a Keras-graph card and its params (softmax outputs)."""
    graphdef, _ = abstract_graph(card.config)
    graph = nnx.merge(graphdef, params)
    feat = graph.default_features_layer()
    inp, out = graph.input_name, graph.output_name

    def apply_fn(p, x):
        return nnx.merge(graphdef, p)(x)

    def features_fn(p, x):
        return nnx.merge(graphdef, p).run({inp: x}, [feat])[feat]

    def head_fn(p, a):
        return nnx.merge(graphdef, p).run({feat: a}, [out])[out]

    logits = graph.logits_name

    def head_logits_fn(p, a):
        return nnx.merge(graphdef, p).run({feat: a}, [logits])[logits]

    n = card.normalisation
    return FaceModel(
        name=card.name, apply_fn=apply_fn, params=params, input_size=tuple(card.input_size),
        channels=card.channels, class_names=tuple(card.class_names), crop_policy=card.crop_policy,
        crop_margin=card.crop_margin, preprocess=make_preprocess(card.colour, n["scale"], n["mean"], n["std"]),
        output=card.output, outputs_are_probs=card.outputs_are_probs, features_fn=features_fn, head_fn=head_fn,
        head_logits_fn=head_logits_fn if logits else None)
