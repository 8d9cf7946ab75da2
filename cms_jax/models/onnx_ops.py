"""ONNX operators for `onnx_jax`, each written once for numpy and jax.numpy.

Every operator is ``op(xp, ins, a, opset) -> array | tuple of arrays``:

  xp:    ``numpy`` when all inputs are known at trace time (constant folding of
         shapes, indices, Reshape targets), else ``jax.numpy``;
  ins:   the node's inputs in order (``None`` for an omitted optional input);
  a:     the node's attributes (ints, floats, str, lists, numpy arrays) plus
         ``_op`` (its type) and ``_outputs`` (how many outputs it declares);
  opset: the model's default-domain opset (inputs that moved from attributes
         to inputs across opsets are read from wherever the node has them).

Operators in `TRACED` need lax (convolutions, pools, resize, erf) and always run
with jax.numpy; `SHAPE_ONLY` operators read only static shapes and always run
with numpy.  Values an operator needs concretely (axes, pads, shapes, scales)
go through `_ints`/`_static`, which raise if a traced value turns up there.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from onnx import helper

from cms_jax import convs


def _static(v, what: str = "value") -> np.ndarray:
    """A value that must be known at trace time, as numpy."""
    if isinstance(v, jax.core.Tracer):
        raise ValueError(f"{what} must be a constant of the graph, got a value computed from the input")
    return np.asarray(v)


def _ints(v, what: str = "value") -> list[int]:
    return [int(i) for i in _static(v, what).reshape(-1)]


def _opt(ins: list, i: int):
    return ins[i] if len(ins) > i else None


def _axes(ins: list, a: dict, i: int) -> list[int] | None:
    """``axes`` as attribute (older opsets) or as input ``i`` (newer); None when absent."""
    if "axes" in a:
        return list(a["axes"])
    v = _opt(ins, i)
    return None if v is None else _ints(v, "axes")


def _dtype(xp, onnx_type: int):
    """The array dtype of an ONNX element type (64-bit types narrowed for jax without x64)."""
    dt = helper.tensor_dtype_to_np_dtype(onnx_type)
    return dt if xp is np else jax.dtypes.canonicalize_dtype(dt)


# ---------------------------------------------------------------- elementwise


def _sigmoid(xp, x):
    return jax.nn.sigmoid(x) if xp is jnp else 1 / (1 + np.exp(-x))


def _hard_sigmoid(xp, x, alpha, beta):
    return xp.minimum(xp.maximum(alpha * x + beta, 0), 1)


def _div(xp, x, y):
    """ONNX Div: true division for floats, truncation for integers (shape arithmetic)."""
    if np.issubdtype(x.dtype, np.integer):
        return xp.trunc(x / y).astype(x.dtype)
    return x / y


def _clip(xp, ins, a, opset):
    """Clip: bounds as attributes ``min``/``max`` before opset 11, optional inputs after."""
    x = ins[0]
    lo, hi = (a.get("min"), a.get("max")) if opset < 11 else (_opt(ins, 1), _opt(ins, 2))
    x = x if lo is None else xp.maximum(x, xp.asarray(lo, x.dtype))
    return x if hi is None else xp.minimum(x, xp.asarray(hi, x.dtype))


def _unary(f):
    return lambda xp, ins, a, opset: f(xp, ins[0], a)


def _binary(f):
    return lambda xp, ins, a, opset: f(xp, ins[0], ins[1])


def _variadic(f):
    return lambda xp, ins, a, opset: functools.reduce(lambda u, v: f(xp, u, v), ins)


# ---------------------------------------------------------------- reductions and normalisation

_REDUCE = {
    "ReduceSum": lambda xp, x, ax, k: xp.sum(x, axis=ax, keepdims=k),
    "ReduceMean": lambda xp, x, ax, k: xp.mean(x, axis=ax, keepdims=k),
    "ReduceMax": lambda xp, x, ax, k: xp.max(x, axis=ax, keepdims=k),
    "ReduceMin": lambda xp, x, ax, k: xp.min(x, axis=ax, keepdims=k),
    "ReduceProd": lambda xp, x, ax, k: xp.prod(x, axis=ax, keepdims=k),
    "ReduceL1": lambda xp, x, ax, k: xp.sum(xp.abs(x), axis=ax, keepdims=k),
    "ReduceL2": lambda xp, x, ax, k: xp.sqrt(xp.sum(x * x, axis=ax, keepdims=k)),
    "ReduceSumSquare": lambda xp, x, ax, k: xp.sum(x * x, axis=ax, keepdims=k),
}


def _reduce(name):
    """Reduce*: axes as attribute (ReduceSum < 13, others < 18) or input; none means all."""
    def op(xp, ins, a, opset):
        x, axes = ins[0], _axes(ins, a, 1)
        if not axes:
            if a.get("noop_with_empty_axes", 0):
                return x
            axes = range(x.ndim)
        return _REDUCE[name](xp, x, tuple(d % x.ndim for d in axes), bool(a.get("keepdims", 1)))
    return op


def _softmax(log: bool):
    """(Log)Softmax: on the 2-D coercion at ``axis`` (default 1) before opset 13, on ``axis`` (default -1) after."""
    def op(xp, ins, a, opset):
        x = ins[0]
        axis = a.get("axis", 1 if opset < 13 else -1) % max(x.ndim, 1)
        shape = x.shape
        if opset < 13:
            x, axis = xp.reshape(x, (int(np.prod(shape[:axis])), -1)), 1
        z = x - xp.max(x, axis=axis, keepdims=True)
        s = xp.sum(xp.exp(z), axis=axis, keepdims=True)
        return xp.reshape(z - xp.log(s) if log else xp.exp(z) / s, shape)
    return op


def _lp_norm(xp, ins, a, opset):
    x, axis = ins[0], a.get("axis", -1)
    p = a.get("p", 2)
    n = xp.sum(xp.abs(x), axis=axis, keepdims=True) if p == 1 else xp.sqrt(xp.sum(x * x, axis=axis, keepdims=True))
    return x / n


def _batch_norm(xp, ins, a, opset):
    """BatchNormalization in inference mode on (N, C, ...)."""
    x, scale, bias, mean, var = ins[:5]
    sh = (-1,) + (1,) * (x.ndim - 2)
    k = scale / xp.sqrt(var + a.get("epsilon", 1e-5))
    return (x - xp.reshape(mean, sh)) * xp.reshape(k, sh) + xp.reshape(bias, sh)


# ---------------------------------------------------------------- convolution and pooling


def _spatial_pads(a: dict, sizes, k_eff, strides) -> list[tuple[int, int]]:
    """(lo, hi) per spatial axis from ``pads`` or ``auto_pad`` (SAME_UPPER/SAME_LOWER/VALID/NOTSET)."""
    nd = len(k_eff)
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for n, k, s in zip(sizes, k_eff, strides):
            total = max((-(-n // s) - 1) * s + k - n, 0)
            lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
            pads.append((lo, total - lo))
        return pads
    p = [0] * 2 * nd if auto == "VALID" else list(a.get("pads", [0] * 2 * nd))
    return list(zip(p[:nd], p[nd:]))


def _conv(xp, ins, a, opset):
    """Conv (N, C, ...) with OI... weights: groups, strides, dilations, pads, auto_pad, optional bias."""
    x, w, b = ins[0], ins[1], _opt(ins, 2)
    nd = x.ndim - 2
    strides, dil = tuple(a.get("strides", [1] * nd)), tuple(a.get("dilations", [1] * nd))
    k_eff = [(k - 1) * d + 1 for k, d in zip(w.shape[2:], dil)]
    pads = _spatial_pads(a, x.shape[2:], k_eff, strides)
    groups = a.get("group", 1)
    if nd == 2 and 1 < groups == x.shape[1] and np.prod(w.shape[2:]) <= 25:
        # Small depthwise kernels: `convs` picks the formulation the backend runs fastest (XLA:CPU:
        # one multiply-add per tap, 3.3x faster on the FSA-Net forward; a grouped conv elsewhere).
        # Large ones (a global depthwise conv) would unroll into hundreds of taps: one grouped conv.
        y = convs.depthwise_conv(jnp.transpose(x, (0, 2, 3, 1)), jnp.transpose(w, (2, 3, 1, 0)), strides, pads, dil)
        y = jnp.transpose(y, (0, 3, 1, 2))
    else:
        y = lax.conv_general_dilated(x, w, strides, pads, rhs_dilation=dil, feature_group_count=groups,
                                     dimension_numbers=("NCHW", "OIHW", "NCHW") if nd == 2 else None)
    return y if b is None else y + jnp.reshape(b, (-1,) + (1,) * nd)


def _pool_geometry(x, a):
    """Kernel, strides, dilations, explicit pads and the extra end padding ``ceil_mode`` adds."""
    nd = x.ndim - 2
    k, s = tuple(a["kernel_shape"]), tuple(a.get("strides", [1] * nd))
    d = tuple(a.get("dilations", [1] * nd))
    k_eff = [(ki - 1) * di + 1 for ki, di in zip(k, d)]
    pads = _spatial_pads(a, x.shape[2:], k_eff, s)
    extra = [0] * nd
    if a.get("ceil_mode", 0):
        for i, (n, (lo, hi), ke, st) in enumerate(zip(x.shape[2:], pads, k_eff, s)):
            out = -(-(n + lo + hi - ke) // st) + 1
            if (out - 1) * st >= n + lo:  # the last window must start inside the input or the left pad
                out -= 1
            extra[i] = max((out - 1) * st + ke - (n + lo + hi), 0)
    return k, s, d, pads, extra


def _window(x, init, reducer, k, s, d, pads):
    ones = (1, 1)
    return lax.reduce_window(x, np.array(init, x.dtype), reducer, ones + k, ones + s,
                             ((0, 0), (0, 0)) + tuple(pads), window_dilation=ones + d)


def _max_pool(xp, ins, a, opset):
    """MaxPool (first output only): pads and the ceil_mode end are -inf."""
    if a["_outputs"] > 1:
        raise ValueError("MaxPool with an Indices output is not supported")
    x = ins[0]
    k, s, d, pads, extra = _pool_geometry(x, a)
    return _window(x, -jnp.inf, lax.max, k, s, d, [(lo, hi + e) for (lo, hi), e in zip(pads, extra)])


def _avg_pool(xp, ins, a, opset):
    """AveragePool: the divisor counts the pads when ``count_include_pad``, never the ceil_mode end."""
    x = ins[0]
    k, s, d, pads, extra = _pool_geometry(x, a)
    y = _window(x, 0.0, lax.add, k, s, d, [(lo, hi + e) for (lo, hi), e in zip(pads, extra)])
    if not any(extra) and (a.get("count_include_pad", 0) or not any(map(any, pads))):
        return y / np.prod(k)
    ones = np.ones(x.shape[2:], np.float32)
    if a.get("count_include_pad", 0):
        ones, pads = np.pad(ones, pads, constant_values=1.0), [(0, 0)] * len(pads)
    ones = np.pad(ones, [(lo, hi + e) for (lo, hi), e in zip(pads, extra)])
    k_eff = [(ki - 1) * di + 1 for ki, di in zip(k, d)]
    win = np.lib.stride_tricks.sliding_window_view(ones, k_eff)
    win = win[tuple(slice(None, None, st) for st in s) + tuple(slice(None, None, di) for di in d)]
    return y / win.sum(axis=tuple(range(-len(k), 0))).astype(np.float32)


def _global_pool(f):
    return lambda xp, ins, a, opset: f(ins[0], axis=tuple(range(2, ins[0].ndim)), keepdims=True)


def _resize(xp, ins, a, opset):
    """Resize/Upsample: nearest (asymmetric, floor) for integer scales; linear (half-pixel) for any size."""
    x = ins[0]
    if a["_op"] == "Upsample" or opset < 11:
        scales, sizes = a["scales"] if "scales" in a else ins[1], None
        ctm, nearest = "asymmetric", "floor"
    else:
        scales, sizes = _opt(ins, 2), _opt(ins, 3)
        ctm = a.get("coordinate_transformation_mode", "half_pixel")
        nearest = a.get("nearest_mode", "round_prefer_floor")
    if sizes is not None and _static(sizes).size:
        shape = _ints(sizes)
        scales = [o / n for o, n in zip(shape, x.shape)]
    else:
        scales = [float(v) for v in _static(scales).reshape(-1)]
        shape = [int(np.floor(n * f)) for n, f in zip(x.shape, scales)]
    mode = a.get("mode", "nearest")
    if mode == "nearest" and ctm == "asymmetric" and all(float(f).is_integer() for f in scales) and (
            nearest == "floor" or all(f <= 2 for f in scales) and nearest == "round_prefer_floor"):
        for ax, f in enumerate(scales):
            x = jnp.repeat(x, int(f), axis=ax) if f != 1 else x
        return x
    if mode == "linear" and ctm in ("half_pixel", "pytorch_half_pixel") and not a.get("antialias", 0):
        return jax.image.resize(x, shape, "linear", antialias=False)
    raise ValueError(f"{a['_op']} mode={mode!r} coordinate_transformation_mode={ctm!r} "
                     f"nearest_mode={nearest!r} scales={scales} is not supported")


# ---------------------------------------------------------------- shapes, indexing, constants


def _constant(xp, ins, a, opset):
    for key, dt in (("value", None), ("value_float", np.float32), ("value_floats", np.float32),
                    ("value_int", np.int64), ("value_ints", np.int64)):
        if key in a:
            return np.asarray(a[key], dt)
    raise ValueError(f"Constant with attributes {sorted(a)} is not supported")


def _shape(xp, ins, a, opset):
    return np.asarray(ins[0].shape[a.get("start", 0):a.get("end", None)], np.int64)


def _reshape(xp, ins, a, opset):
    x, shape = ins[0], _ints(ins[1], "Reshape shape")
    if not a.get("allowzero", 0):
        shape = [x.shape[i] if v == 0 else v for i, v in enumerate(shape)]
    return xp.reshape(x, shape)


def _flatten(xp, ins, a, opset):
    x = ins[0]
    axis = a.get("axis", 1) % (x.ndim + 1)
    return xp.reshape(x, (int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:]))))


def _squeeze(xp, ins, a, opset):
    x, axes = ins[0], _axes(ins, a, 1)
    return xp.squeeze(x) if axes is None else xp.squeeze(x, axis=tuple(d % x.ndim for d in axes))


def _unsqueeze(xp, ins, a, opset):
    x, axes = ins[0], _axes(ins, a, 1)
    rank = x.ndim + len(axes)
    for d in sorted(d % rank for d in axes):
        x = xp.expand_dims(x, d)
    return x


def _gather(xp, ins, a, opset):
    x, idx = ins
    axis = a.get("axis", 0) % x.ndim
    idx = (np if isinstance(idx, np.ndarray) else jnp).where(idx < 0, idx + x.shape[axis], idx)
    return xp.take(x, idx, axis=axis)


def _slice(xp, ins, a, opset):
    """Slice: starts/ends/axes attributes before opset 10, inputs (with steps) after."""
    x = ins[0]
    if opset < 10:
        starts, ends, axes, steps = a["starts"], a["ends"], a.get("axes"), None
    else:
        starts, ends = _ints(ins[1]), _ints(ins[2])
        axes, steps = (None if _opt(ins, i) is None else _ints(ins[i]) for i in (3, 4))
    idx = [slice(None)] * x.ndim
    for st, en, ax, sp in zip(starts, ends, axes or range(len(starts)), steps or [1] * len(starts)):
        idx[ax] = slice(st, en, sp)
    return x[tuple(idx)]


def _split(xp, ins, a, opset):
    """Split: sizes from the ``split`` attribute (< 13) or input, else equal parts (``num_outputs``)."""
    x = ins[0]
    axis = a.get("axis", 0) % x.ndim
    sizes = a.get("split") or (None if _opt(ins, 1) is None else _ints(ins[1]))
    if not sizes:
        n = a.get("num_outputs", a["_outputs"])
        step = -(-x.shape[axis] // n)
        sizes = [min(step, x.shape[axis] - i * step) for i in range(n)]
    return tuple(xp.split(x, np.cumsum(sizes)[:-1].tolist(), axis=axis))


def _pad(xp, ins, a, opset):
    """Pad (constant, reflect, edge, wrap): pads as attribute before opset 11, input after; negative pads crop."""
    x = ins[0]
    if opset < 11:
        pads, value, axes = list(a["pads"]), a.get("value", 0.0), None
    else:
        pads, value = _ints(ins[1], "pads"), _opt(ins, 2)
        axes = None if _opt(ins, 3) is None else _ints(ins[3])
    axes = [d % x.ndim for d in (axes or range(x.ndim))]
    width = [[0, 0] for _ in range(x.ndim)]
    for i, d in enumerate(axes):
        width[d] = [pads[i], pads[i + len(axes)]]
    x = x[tuple(slice(max(-lo, 0), n + min(hi, 0)) for (lo, hi), n in zip(width, x.shape))]
    width = [(max(lo, 0), max(hi, 0)) for lo, hi in width]
    mode = a.get("mode", "constant")
    if not any(map(any, width)):
        return x
    if mode == "constant":
        return xp.pad(x, width, constant_values=0 if value is None else _static(value).item())
    return xp.pad(x, width, mode=mode)


def _gemm(xp, ins, a, opset):
    """Gemm: alpha * A' B' + beta * C."""
    x, w, c = ins[0], ins[1], _opt(ins, 2)
    x = x.T if a.get("transA", 0) else x
    y = xp.matmul(x, w.T if a.get("transB", 0) else w)
    y = y if a.get("alpha", 1.0) == 1.0 else a["alpha"] * y
    return y if c is None else y + (c if a.get("beta", 1.0) == 1.0 else a["beta"] * c)


def _cast(xp, ins, a, opset):
    return xp.asarray(ins[0]).astype(_dtype(xp, a["to"]))


def _constant_of_shape(xp, ins, a, opset):
    value = a.get("value", np.zeros(1, np.float32))
    return np.full(_ints(ins[0], "ConstantOfShape shape"), value.reshape(-1)[0], value.dtype)


def _dropout(xp, ins, a, opset):
    x = ins[0]
    return (x, xp.ones(x.shape, bool)) if a["_outputs"] > 1 else x


def _expand(xp, ins, a, opset):
    x = ins[0]
    return xp.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(_ints(ins[1], "Expand shape"))))


def _range(xp, ins, a, opset):
    start, limit, delta = (_static(v, "Range") for v in ins)
    return np.arange(start, limit, delta, dtype=start.dtype)


OPS = {
    # elementwise
    "Abs": _unary(lambda xp, x, a: xp.abs(x)),
    "Neg": _unary(lambda xp, x, a: -x),
    "Exp": _unary(lambda xp, x, a: xp.exp(x)),
    "Log": _unary(lambda xp, x, a: xp.log(x)),
    "Sqrt": _unary(lambda xp, x, a: xp.sqrt(x)),
    "Reciprocal": _unary(lambda xp, x, a: 1 / x),
    "Floor": _unary(lambda xp, x, a: xp.floor(x)),
    "Ceil": _unary(lambda xp, x, a: xp.ceil(x)),
    "Tanh": _unary(lambda xp, x, a: xp.tanh(x)),
    "Sigmoid": _unary(lambda xp, x, a: _sigmoid(xp, x)),
    "Relu": _unary(lambda xp, x, a: xp.maximum(x, 0)),
    "LeakyRelu": _unary(lambda xp, x, a: xp.where(x < 0, a.get("alpha", 0.01) * x, x)),
    "Elu": _unary(lambda xp, x, a: xp.where(x < 0, a.get("alpha", 1.0) * xp.expm1(x), x)),
    "Softplus": _unary(lambda xp, x, a: xp.logaddexp(x, 0)),
    "HardSigmoid": _unary(lambda xp, x, a: _hard_sigmoid(xp, x, a.get("alpha", 0.2), a.get("beta", 0.5))),
    "HardSwish": _unary(lambda xp, x, a: x * _hard_sigmoid(xp, x, 1 / 6, 0.5)),
    "Erf": _unary(lambda xp, x, a: lax.erf(x)),
    "Not": _unary(lambda xp, x, a: xp.logical_not(x)),
    "Identity": _unary(lambda xp, x, a: x),
    "Clip": _clip,
    "PRelu": _binary(lambda xp, x, s: xp.where(x < 0, x * s, x)),
    "Add": _binary(lambda xp, x, y: x + y),
    "Sub": _binary(lambda xp, x, y: x - y),
    "Mul": _binary(lambda xp, x, y: x * y),
    "Div": _binary(_div),
    "Pow": _binary(lambda xp, x, y: xp.power(x, y).astype(x.dtype)),
    "Equal": _binary(lambda xp, x, y: x == y),
    "Less": _binary(lambda xp, x, y: x < y),
    "Greater": _binary(lambda xp, x, y: x > y),
    "And": _binary(lambda xp, x, y: xp.logical_and(x, y)),
    "Or": _binary(lambda xp, x, y: xp.logical_or(x, y)),
    "Where": lambda xp, ins, a, opset: xp.where(*ins),
    "Max": _variadic(lambda xp, x, y: xp.maximum(x, y)),
    "Min": _variadic(lambda xp, x, y: xp.minimum(x, y)),
    "Sum": _variadic(lambda xp, x, y: x + y),
    "Mean": lambda xp, ins, a, opset: functools.reduce(lambda u, v: u + v, ins) / len(ins),
    # reductions and normalisation
    **{name: _reduce(name) for name in _REDUCE},
    "Softmax": _softmax(log=False),
    "LogSoftmax": _softmax(log=True),
    "LpNormalization": _lp_norm,
    "BatchNormalization": _batch_norm,
    # convolution, pooling, resizing
    "Conv": _conv,
    "MaxPool": _max_pool,
    "AveragePool": _avg_pool,
    "GlobalAveragePool": _global_pool(jnp.mean),
    "GlobalMaxPool": _global_pool(jnp.max),
    "Resize": _resize,
    "Upsample": _resize,
    # matrix products
    "Gemm": _gemm,
    "MatMul": lambda xp, ins, a, opset: xp.matmul(*ins),
    # shapes, indexing, constants
    "Constant": _constant,
    "ConstantOfShape": _constant_of_shape,
    "Shape": _shape,
    "Size": lambda xp, ins, a, opset: np.asarray(np.prod(ins[0].shape), np.int64),
    "Range": _range,
    "Cast": _cast,
    "CastLike": lambda xp, ins, a, opset: xp.asarray(ins[0]).astype(ins[1].dtype),
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Transpose": lambda xp, ins, a, opset: xp.transpose(ins[0], a.get("perm")),
    "Concat": lambda xp, ins, a, opset: xp.concatenate(ins, axis=a["axis"]),
    "Gather": _gather,
    "Slice": _slice,
    "Split": _split,
    "Pad": _pad,
    "Expand": _expand,
    "Tile": lambda xp, ins, a, opset: xp.tile(ins[0], _ints(ins[1], "Tile repeats")),
    "Dropout": _dropout,
}

# Need lax: always run with jax.numpy, even on constant inputs.
TRACED = frozenset({"Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Resize", "Upsample",
                    "Erf"})
# Read only static shapes: always constant, even on traced inputs.
SHAPE_ONLY = frozenset({"Shape", "Size"})
# Float inputs read as constants (kept out of the params when they are initializers).
STATIC_INPUTS = {"Resize": (1, 2, 3), "Upsample": (1,), "Pad": (2,)}
