"""FLOPs of a model at its input size, for the throughput benchmark.

Occlusion saliency (Eq. 1) costs one forward pass per occluded patch, so
images/s on a device is bounded by its FLOP/s over FLOPs per forward. Flax
models are counted by XLA's HLO cost analysis of the lowered (not compiled)
function; ONNX black boxes, invisible to XLA, by an onnxruntime profile of one
run (2 FLOPs per multiply-accumulate of Conv/Gemm/MatMul, 1 per element of
arithmetic element-wise ops). `vgg_flops` is the closed form for VGG-16.
"""
from __future__ import annotations

import json
import os
import tempfile
import weakref

import jax
import jax.numpy as jnp
import numpy as np

from cms_jax.models.base import FaceModel

# apply_fn of a host (black-box) model -> zero-argument function giving FLOPs per image.
HOST_FLOPS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def flops(model: FaceModel, batch: int = 1) -> float:
    """FLOPs of one forward pass of ONE image at the model's input size.

    Args:
      model: a `FaceModel` (Flax or black box).
      batch: batch size the XLA cost analysis is run at (result is divided by it).

    Returns:
      FLOPs per image (float). NaN for a Python-callable black box of unknown cost.
    """
    if model.apply_fn in HOST_FLOPS:
        return float(HOST_FLOPS[model.apply_fn]())
    if isinstance(model.params, dict) and not model.params:
        return float("nan")
    h, w = model.input_size
    x = jax.ShapeDtypeStruct((batch, h, w, model.channels), jnp.float32)
    # Shapes only: counting never needs the weights (params may already be abstract).
    params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), model.params)
    cost = jax.jit(model.apply_fn).lower(params, x).cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax returned one dict per computation
        cost = cost[0]
    return float(cost["flops"]) / batch


def vgg_flops(config, count_padding: bool = False) -> float:
    """Closed-form FLOPs of `VGG16` (2 per multiply-accumulate; biases, ReLU, pools ignored).

    Args:
      config: a `VGGConfig`.
      count_padding: also count products with the zero padding (the usual textbook 30.95
        GFLOPs of VGG-16 at 224); False counts only real taps, as XLA's cost analysis does.
    """
    from cms_jax.models.vgg import _BLOCKS

    h, w = config.input_size
    cin, total = config.in_channels, 0.0
    for (block, n), width in zip(_BLOCKS, config.widths):
        if block > 1:
            h, w = h // 2, w // 2
        for _ in range(n):
            # A 3x3 'same' conv touches 3h-2 real taps along a side of h (pads excluded).
            taps = 9 * h * w if count_padding else (3 * h - 2) * (3 * w - 2)
            total += 2.0 * taps * cin * width
            cin = width
    ph, pw = config.pool5_hw
    total += 2.0 * ph * pw * cin * config.fc_width + 2.0 * config.fc_width ** 2
    total += 2.0 * config.fc_width * config.num_classes
    return total


_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Exp", "Relu", "Sigmoid", "Tanh"}


def onnx_flops(path: str) -> float:
    """FLOPs of one run of an ONNX model with batch 1, from an onnxruntime node profile."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tmp, "prof")
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        sess.run(None, {inp.name: np.zeros(shape, np.float32)})
        with open(sess.end_profiling()) as f:
            events = json.load(f)
    total = 0.0
    for e in events:
        a = e.get("args", {})
        if e.get("cat") != "Node" or "op_name" not in a:
            continue
        op = a["op_name"]
        ins = [list(t.values())[0] for t in a.get("input_type_shape", [])]
        outs = [list(t.values())[0] for t in a.get("output_type_shape", [])]
        if not outs:
            continue
        out_n = float(np.prod(outs[0]))
        if op in ("Conv", "FusedConv") and len(ins) >= 2:
            total += 2.0 * out_n * float(np.prod(ins[1][1:]))  # weight (O, I/groups, kh, kw)
        elif op in ("Gemm", "FusedGemm", "MatMul", "FusedMatMul") and ins:
            total += 2.0 * out_n * float(ins[0][-1])
        elif op in _ELEMENTWISE:
            total += out_n
    return total
