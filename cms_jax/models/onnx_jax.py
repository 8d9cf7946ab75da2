"""ONNX files as pure JAX functions: ``convert(path) -> (apply_fn, params, info)``.

A compact interpreter, not a general ONNX runtime: the graph is evaluated for
ONE image with batch dimension 1 (the shape the FSA-Net files declare, whose
Reshape targets are computed from ``Shape``), and ``apply_fn`` maps it over the
batch with ``jax.vmap`` (``native_batch=True``: once on the whole batch, for
graphs whose shapes follow it).  While tracing, every value is either

  * static (numpy): Constant nodes, integer initializers, ``Shape`` of any
    value and every node whose inputs are all static (constant folding), or
  * traced (jax): the image, the float initializers (passed in as ``params``,
    so they are real inputs rather than baked constants) and everything
    computed from them.

Each operator (`onnx_ops.OPS`) is written once and run with numpy or
jax.numpy accordingly, so shape arithmetic never depends on traced values
and the whole function is jit-able.  A file using operators that are not in
the table is refused before anything is traced, with all of them named.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import onnx
from onnx import numpy_helper

from cms_jax.models.onnx_ops import OPS, SHAPE_ONLY, STATIC_INPUTS, TRACED

__all__ = ["OPS", "OnnxInfo", "convert", "unsupported_ops"]


@dataclasses.dataclass(frozen=True)
class OnnxInfo:
    """What `convert` read from the file.

    Attributes:
      input_name: the graph input fed with the image.
      input_shape: its (C, H, W).
      output_dim: K, the size of the first graph output per image.
      opset: the default-domain (``ai.onnx``) opset.
      ops: the operator types the graph uses, sorted.
      file: the file's base name.
    """

    input_name: str
    input_shape: tuple[int, int, int]
    output_dim: int
    opset: int
    ops: tuple[str, ...]
    file: str


class _Node(NamedTuple):
    op: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _unsupported(model: onnx.ModelProto) -> list[str]:
    versions = {o.domain: o.version for o in model.opset_import}
    missing = set()
    for n in model.graph.node:
        if n.domain in ("", "ai.onnx"):
            if n.op_type not in OPS:
                missing.add(f"{n.op_type} (opset {_opset(model)})")
        else:
            missing.add(f"{n.domain}.{n.op_type} (opset {versions.get(n.domain, '?')})")
    return sorted(missing)


def unsupported_ops(path: str) -> list[str]:
    """The operator types of the file this converter lacks, as ``'Type (opset N)'``; [] if none."""
    return _unsupported(onnx.load(path, load_external_data=False))


def _attr(a: onnx.AttributeProto):
    v = onnx.helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, onnx.TensorProto):
        return numpy_helper.to_array(v)
    if isinstance(v, list) and v and isinstance(v[0], bytes):
        return [s.decode() for s in v]
    return v


def _nodes(graph: onnx.GraphProto) -> list[_Node]:
    """The graph's nodes with their attributes decoded once (plus ``_op`` and ``_outputs``)."""
    out = []
    for i, n in enumerate(graph.node):
        attrs = {a.name: _attr(a) for a in n.attribute}
        attrs.update(_op=n.op_type, _outputs=len(n.output))
        out.append(_Node(n.op_type, n.name or f"{n.op_type}_{i}", tuple(n.input), tuple(n.output), attrs))
    return out


def _split_initializers(graph: onnx.GraphProto) -> tuple[dict, dict]:
    """(params, statics): float initializers become params, the rest (and floats read as constants) statics."""
    static_names = {n.input[i] for n in graph.node for i in STATIC_INPUTS.get(n.op_type, ()) if i < len(n.input)}
    params, statics = {}, {}
    for t in graph.initializer:
        arr = numpy_helper.to_array(t)
        if np.issubdtype(arr.dtype, np.floating) and t.name not in static_names:
            params[t.name] = jnp.asarray(arr, jnp.float32)
        else:
            statics[t.name] = arr
    return params, statics


def _is_static(v) -> bool:
    return isinstance(v, (np.ndarray, np.generic))


def _run_node(node: _Node, env: dict, opset: int) -> None:
    """Evaluates one node into ``env``: numpy when its inputs are all static, jax.numpy otherwise."""
    ins = [env[name] if name else None for name in node.inputs]
    static = node.op in SHAPE_ONLY or (node.op not in TRACED and all(v is None or _is_static(v) for v in ins))
    out = OPS[node.op](np if static else jnp, ins, node.attrs, opset)
    outs = out if isinstance(out, tuple) else (out,)
    for name, v in zip(node.outputs, outs):
        if name:
            env[name] = np.asarray(v) if static else v


def _interpreter(nodes: list[_Node], statics: dict, input_name: str, output_name: str, opset: int, file: str):
    """``forward(params, x (1, C, H, W)) -> the first graph output`` for one image."""
    def forward(params, x):
        env = {**statics, **params, input_name: x}
        for node in nodes:
            try:
                _run_node(node, env, opset)
            except Exception as e:
                raise ValueError(f"{file}: node {node.name!r} ({node.op}): {e}") from e
        return env[output_name]
    return forward


def _input(graph: onnx.GraphProto, file: str) -> tuple[str, tuple[int, int, int]]:
    """The image input (the graph input that is not an initializer) and its (C, H, W)."""
    inits = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ValueError(f"{file}: expected one image input, got {[i.name for i in inputs]}")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or None in dims[1:] or dims[0] not in (None, 1):
        raise ValueError(f"{file}: input {inputs[0].name!r} must be (N|1, C, H, W) with fixed C, H, W; got {dims}")
    return inputs[0].name, tuple(dims[1:])


def _batched(forward, native_batch: bool) -> Callable:
    """``apply_fn(params, x (N, H, W, C)) -> (N, K)`` from the one-image ``forward``."""
    def apply_fn(params, x):
        x = jnp.asarray(x, jnp.float32).transpose(0, 3, 1, 2)  # NHWC -> the graph's NCHW
        if native_batch:
            return jnp.reshape(forward(params, x), (x.shape[0], -1)).astype(jnp.float32)
        return jax.vmap(lambda xi: jnp.reshape(forward(params, xi[None]), (-1,)).astype(jnp.float32))(x)
    return apply_fn


def _check_native_batch(forward, params, chw, file: str) -> None:
    """Refuses ``native_batch`` unless the raw output follows the batch (N, ...) at N = 1 and 2."""
    one, two = (jax.eval_shape(forward, params, jax.ShapeDtypeStruct((n,) + chw, jnp.float32)).shape
                for n in (1, 2))
    if one[:1] != (1,) or two != (2,) + one[1:]:
        raise ValueError(f"{file}: the graph output is {one} for one image and {two} for two: its shapes do not "
                         "follow the batch, convert it with native_batch=False")


def convert(path: str, *, native_batch: bool = False) -> tuple[Callable, dict, OnnxInfo]:
    """Converts an ONNX image model into a pure JAX function and its params.

    Args:
      path: an ``.onnx`` file whose single input is an image (N|1, C, H, W).
      native_batch: False (default): the graph is traced for one image with
        batch 1 and mapped over the batch with ``jax.vmap``; right for any
        graph, including ones with batch 1 baked into constants.  True: the
        graph is run once on the whole batch, for graphs whose shapes follow
        the batch (Shape-derived Reshape targets, Flatten: the FSA-Net files,
        torch exports); checked on output shapes at batch 1 and 2.  Same
        values; incremental inference then sees the convolutions themselves
        rather than vmap's batch reshapes around them and computes them on
        windows (fsanet-1x1, 128 occluded copies on 2 CPU cores: 104 ms vs
        290 ms dense; with vmap 376 vs 405 ms, as it falls back to dense;
        experiments/bench_onnx.py).

    Returns:
      ``apply_fn(params, x (N, H, W, C) float32) -> (N, K) float32``: the first
      graph output flattened per image (jit-able);
      ``params``: the float initializers as float32 arrays, keyed by name;
      the `OnnxInfo`.

    Raises:
      ValueError: naming every unsupported operator of the file (before any
        tracing), or the node that failed while tracing one image.
    """
    file = os.path.basename(path)
    model = onnx.load(path)
    missing = _unsupported(model)
    if missing:
        raise ValueError(f"{file}: unsupported ONNX operators: {', '.join(missing)}; "
                         f"supported: {', '.join(sorted(OPS))}")
    graph, opset = model.graph, _opset(model)
    input_name, (c, h, w) = _input(graph, file)
    params, statics = _split_initializers(graph)
    forward = _interpreter(_nodes(graph), statics, input_name, graph.output[0].name, opset, file)
    if native_batch:
        _check_native_batch(forward, params, (c, h, w), file)
    apply_fn = _batched(forward, native_batch)
    # A fresh lambda: JAX caches traces per function, and incremental inference must later trace
    # apply_fn itself inside convs.semantic() (depthwise convs as one primitive), not reuse this trace.
    out = jax.eval_shape(lambda p, x: apply_fn(p, x), params, jax.ShapeDtypeStruct((1, h, w, c), jnp.float32))
    info = OnnxInfo(input_name, (c, h, w), int(out.shape[1]), opset,
                    tuple(sorted({n.op_type for n in graph.node})), file)
    return apply_fn, params, info
