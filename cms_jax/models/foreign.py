"""Foreign models (ONNX files, PyTorch exports) as `FaceModel`s, with a JSON card beside the file.

An ONNX file says its input shape and output width, not how to feed it: the
card says that. ``load(path)`` looks for ``<file>.card.json`` (or
``<stem>.card.json``) beside the file; any field it lacks, or all of them
without a card, take the defaults below, read from the graph where the graph
knows (input size, channels, output width). ``FaceModel.card_note`` says which
values came from where, and the job's ``summary.json`` repeats it.

Card fields (all optional)::

  {"name": "mobilefacenet", "input_size": [112, 112], "colour": "RGB",
   "normalisation": {"scale": 1.0, "mean": [127.5, 127.5, 127.5], "std": [128, 128, 128]},
   "crop_policy": "tight", "crop_margin": 0.2, "class_names": ["..."],
   "output": "classes" | "regression" | "embedding", "outputs_are_probs": false}

Without ``output``, an output with no class names and at least
`EMBEDDING_MIN_DIM` values is read as an embedding (scored by cosine
similarity, `occlusion.cosine_confidence`), anything else as classes.

Backends: 'jax' (default) converts the graph into a JAX function
(`onnx_jax.convert`): jittable, sharded over the mesh, open to incremental
inference. 'onnxruntime' runs it on the host as a black box (`blackbox.py`).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

import jax.numpy as jnp

from cms_jax.models.base import FaceModel, make_preprocess

CARD_SUFFIX = ".card.json"
EMBEDDING_MIN_DIM = 64
BACKENDS = ("jax", "onnxruntime")
ONNX_BACKENDS = ("auto",) + BACKENDS  # the job's --onnx_backend: 'auto' times both (scoring.backend_probe)
_FIELDS = ("name", "input_size", "colour", "normalisation", "crop_policy", "crop_margin", "class_names",
           "output", "outputs_are_probs")


def card_file(path: str) -> str | None:
    """The card beside ``path`` (``<file>.card.json`` or ``<stem>.card.json``), if any."""
    for c in (path + CARD_SUFFIX, os.path.splitext(path)[0] + CARD_SUFFIX):
        if os.path.isfile(c):
            return c
    return None


def read_card(path: str, *, channels: int, input_size: tuple[int, int], outputs: int,
              overrides: dict | None = None) -> tuple[dict, str]:
    """The model's card fields (card file, then ``overrides``, then graph defaults) and a note saying which."""
    found = card_file(path)
    card: dict = {}
    if found:
        with open(found) as f:
            card = json.load(f)
        unknown = sorted(set(card) - set(_FIELDS))
        if unknown:
            raise ValueError(f"{found}: unknown card fields {unknown}; known: {', '.join(_FIELDS)}")
    card.update({k: v for k, v in (overrides or {}).items() if v is not None})
    if "input_size" in card and tuple(card["input_size"]) != tuple(input_size):
        raise ValueError(f"{found or path}: card input_size {card['input_size']} differs from the graph's "
                         f"{list(input_size)}")
    names = card.get("class_names")
    if names is not None and len(names) != outputs:
        raise ValueError(f"{found or path}: {len(names)} class_names for {outputs} outputs")
    output = card.get("output") or ("embedding" if names is None and outputs >= EMBEDDING_MIN_DIM else "classes")
    defaults = {
        "name": os.path.splitext(os.path.basename(path))[0], "input_size": list(input_size),
        "colour": "GRAY" if channels == 1 else "RGB",
        "normalisation": {"scale": 1.0 / 255.0, "mean": [0.0] * channels, "std": [1.0] * channels},
        "crop_policy": "tight", "crop_margin": 0.2,
        "class_names": [f"{'dim' if output == 'embedding' else 'out'}_{i}" for i in range(outputs)],
        "output": output, "outputs_are_probs": False}
    guessed = [k for k in _FIELDS if k not in card]
    merged = {**defaults, **card, "output": output}
    note = (f"card {found}" if found else "no card") + (
        "; from the graph or defaults: " + ", ".join(f"{k}={merged[k]}" for k in guessed) if guessed else "")
    return merged, note


def _convert(path: str):
    """The graph on the whole batch when its shapes follow the batch (incremental inference then
    windows its convolutions), else one image at a time under vmap (always right)."""
    from cms_jax.models import onnx_jax
    try:
        return onnx_jax.convert(path, native_batch=True)
    except ValueError as e:
        if "unsupported ONNX operators" in str(e):
            raise
        return onnx_jax.convert(path)


def load_onnx(paths: str | Sequence[str], *, backend: str = "jax", **overrides) -> FaceModel:
    """One ONNX file, or several with the same input and output (their outputs averaged), as a FaceModel.

    Args:
      paths: the file(s); the card is looked for beside the first.
      backend: 'jax' (a JAX function on the device) or 'onnxruntime' (host black box).
      overrides: card fields that take precedence over the card file (e.g. ``name``).
    """
    from cms_jax.models import blackbox

    if backend not in BACKENDS:
        raise ValueError(f"onnx backend must be one of {BACKENDS}, got {backend!r}")
    paths = [os.fspath(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    if backend == "onnxruntime":
        runner = blackbox.OnnxRunner(paths)
        _, c, h, w = runner.input_shape
        k = 1
        for d in runner.sessions[0].get_outputs()[0].shape[1:]:
            k *= int(d)
        card, note = read_card(paths[0], channels=int(c), input_size=(int(h), int(w)), outputs=k,
                               overrides=overrides)
        m = blackbox.onnx_model(paths, name=card["name"], class_names=card["class_names"], colour=card["colour"],
                                normalisation=card["normalisation"], crop_policy=card["crop_policy"],
                                crop_margin=card["crop_margin"], output=card["output"],
                                outputs_are_probs=card["outputs_are_probs"])
        return dataclasses.replace(m, card_note=note + "; backend onnxruntime (host)")
    converted = [_convert(p) for p in paths]
    infos = [c[2] for c in converted]
    if len({(i.input_shape, i.output_dim) for i in infos}) != 1:
        raise ValueError(f"cannot average {paths}: inputs/outputs differ "
                         f"({[(i.input_shape, i.output_dim) for i in infos]})")
    c, h, w = infos[0].input_shape
    card, note = read_card(paths[0], channels=c, input_size=(h, w), outputs=infos[0].output_dim,
                           overrides=overrides)
    fns = [a for a, _, _ in converted]
    params = {f"m{i}": p for i, (_, p, _) in enumerate(converted)}

    def apply_fn(params, x):
        return jnp.mean(jnp.stack([f(params[f"m{i}"], x) for i, f in enumerate(fns)]), axis=0)

    norm = card["normalisation"]
    return FaceModel(
        name=card["name"], apply_fn=apply_fn, params=params, input_size=(h, w), channels=c,
        class_names=tuple(card["class_names"]), crop_policy=card["crop_policy"],
        crop_margin=float(card["crop_margin"]),
        preprocess=make_preprocess(card["colour"], norm["scale"], norm["mean"], norm["std"]),
        output=card["output"], outputs_are_probs=bool(card["outputs_are_probs"]),
        card_note=note + "; backend jax (device)")
