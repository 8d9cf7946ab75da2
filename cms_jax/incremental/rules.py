"""Per-primitive rules of incremental inference: how a window passes through an op.

Each rule takes the `Context`, the equation and its operands (constants as
arrays, image values as `Win` or `Dense`) and returns the outputs.  Ops that
only look at a neighbourhood (convolutions of any stride, dilation or group
count, pooling, padding, slicing) recompute just the window their projective
field reaches; elementwise ops take the union of their operands' windows;
anything else (global pooling, reshapes into dense layers, unknown ops) is
computed densely on the batch (`dense`), which is always correct.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cms_jax import convs
from cms_jax.incremental.program import Eqn, bind
from cms_jax.incremental.window import (Axis, Context, Dense, Win, finish, materialize, region,
                                        static_offset)

ELEMENTWISE = frozenset({
    "add", "sub", "mul", "div", "max", "min", "neg", "exp", "exp2", "log", "log1p", "expm1", "tanh",
    "logistic", "rsqrt", "sqrt", "cbrt", "integer_pow", "pow", "abs", "sign", "square", "erf", "erfc",
    "erf_inv", "select_n", "convert_element_type", "stop_gradient", "copy", "copy_p", "reduce_precision",
    "floor", "ceil", "round", "clamp", "ge", "gt", "le", "lt", "eq", "ne", "and", "or", "not", "xor",
    "is_finite", "nextafter", "atan2", "sin", "cos", "tan", "asinh", "acosh", "atanh", "rem",
})


def _is_img(x) -> bool:
    return isinstance(x, (Win, Dense))


def _vmap_bind(eqn: Eqn, args: list, axes: list) -> list:
    return jax.vmap(lambda *a: tuple(bind(eqn, list(a))), in_axes=tuple(axes))(*args)


def dense(ctx: Context, eqn: Eqn, ins: list) -> list:
    """Any op, computed in full on every copy (the fallback; always exact)."""
    args, axes = [], []
    for x in ins:
        if _is_img(x):
            args.append(materialize(ctx, x))
            axes.append(0)
        else:
            args.append(x)
            axes.append(None)
    return [Dense(o) for o in _vmap_bind(eqn, args, axes)]


def _same(a: Axis, b: Axis) -> bool:
    return a.size == b.size and static_offset(a.eoff, b.eoff) == 0


def _union(ctx: Context, axes: list[Axis]) -> Axis:
    """The smallest window holding every operand's window (elementwise ops)."""
    a0 = axes[0]
    if all(_same(a, a0) for a in axes):
        return a0
    eoff = end = None
    for a in axes:
        eoff = a.eoff if eoff is None else np.minimum(eoff, a.eoff)
        end = a.eoff + a.size if end is None else np.maximum(end, a.eoff + a.size)
    return Axis(a0.dim, a0.src, a0.n, ctx.offset(eoff, a0.src), eoff, int((end - eoff).max()))


def elementwise(ctx: Context, eqn: Eqn, ins: list) -> list:
    """Elementwise ops: the output window is the union of the operands' windows."""
    wins = [x for x in ins if isinstance(x, Win)]
    out_shape = ctx.avals[eqn.outs[0]].shape
    w0 = wins[0] if wins else None
    if (any(isinstance(x, Dense) for x in ins) or len(eqn.outs) != 1
            or any(w.dims != w0.dims or [a.src for a in w.axes] != [a.src for a in w0.axes]
                   or ctx.avals[w.var].shape != out_shape for w in wins)):
        return dense(ctx, eqn, ins)
    dims = w0.dims
    axes = tuple(_union(ctx, [w.axes[k] for w in wins]) for k in range(len(dims)))
    offs, eoffs, sizes = [a.off for a in axes], [a.eoff for a in axes], [a.size for a in axes]
    args, in_axes = [], []
    for x in ins:
        if isinstance(x, Win):
            same = all(_same(a, b) for a, b in zip(x.axes, axes))
            args.append(x.data if same else region(ctx, x.var, dims, offs, eoffs, sizes, 0.0, win=x))
            in_axes.append(0)
            continue
        shape = np.shape(x)
        if len(shape) == 0 or (len(shape) == len(out_shape) and all(shape[d] == 1 for d in dims)):
            args.append(x)  # broadcast along the map (biases, scales, scalars)
            in_axes.append(None)
        elif tuple(shape) == tuple(out_shape):
            args.append(region(ctx, -1, dims, offs, eoffs, sizes, 0.0, const=x))
            in_axes.append(0)
        else:
            return dense(ctx, eqn, ins)
    out = _vmap_bind(eqn, args, in_axes)[0]
    return [finish(ctx, Win(out, axes, eqn.outs[0]))]


def _window_op(ctx, eqn, x: Win, in_dims, out_dims, k_eff, strides, pads, pad_value, apply) -> list | None:
    """Convolution-like ops: recompute the output window from its projective field.

    Along each axis the outputs ``o`` whose field ``[o*s - pad, o*s - pad + k)``
    meets the input window are recomputed from that region of the input (the
    window written over the clean map); the op runs unpadded on it.
    """
    if sorted(in_dims) != sorted(x.dims):
        return None
    out_shape = ctx.avals[eqn.outs[0]].shape
    starts, estarts, sizes, axes = [], [], [], []
    for a in x.axes:
        j = in_dims.index(a.dim)
        k, s, pl = k_eff[j], strides[j], pads[j][0]
        eo = -((-(a.eoff + pl - k + 1)) // s)  # first output whose field meets the window
        size = (a.size + k - 2) // s + 1
        cap = ctx.cap(out_shape[out_dims[j]])
        if size > cap:  # approximate (Krypton's tau): keep the central cap outputs, drop the changes beyond
            eo, size = eo + (size - cap) // 2, cap
        o = ctx.offset(eo, a.src)
        starts.append(ctx.offset(eo * s - pl, a.src))
        estarts.append(eo * s - pl)
        sizes.append((size - 1) * s + k)
        axes.append(Axis(out_dims[j], a.src, out_shape[out_dims[j]], o, eo, size))
    reg = region(ctx, x.var, x.dims, starts, estarts, sizes, pad_value, win=x)
    return [finish(ctx, Win(apply(reg), tuple(sorted(axes, key=lambda a: a.dim)), eqn.outs[0]))]


def conv(ctx: Context, eqn: Eqn, ins: list) -> list:
    """``conv_general_dilated``: any stride, rhs dilation, padding and feature groups."""
    lhs, rhs = ins
    p = eqn.params
    if (not isinstance(lhs, Win) or _is_img(rhs) or any(d != 1 for d in p["lhs_dilation"])
            or p["batch_group_count"] != 1 or any(lo < 0 or hi < 0 for lo, hi in p["padding"])):
        return dense(ctx, eqn, ins)
    dn = p["dimension_numbers"]
    in_dims, out_dims = tuple(dn.lhs_spec[2:]), tuple(dn.out_spec[2:])
    ks = [np.shape(rhs)[d] for d in dn.rhs_spec[2:]]
    k_eff = [(k - 1) * r + 1 for k, r in zip(ks, p["rhs_dilation"])]
    unit = dict(p, padding=tuple((0, 0) for _ in in_dims))

    col = in_dims[-1]
    pad_trick = (jax.default_backend() == "cpu" and p["window_strides"][-1] == 1
                 and p["feature_group_count"] == 1)
    padded = dict(unit, padding=tuple((0, 0) if d != col else (1, 0) for d in in_dims))

    def apply(reg):
        if pad_trick:
            # XLA:CPU runs an unpadded conv 3-5x slower than a padded one: pad one zero column on
            # the left and drop the output column it produces (same values, 1/w more work).
            # VGG-16 at 224, 32 copies: 13 -> 22 passes/s (6.5x dense); mini-XCEPTION unchanged.
            y = jax.vmap(lambda r: convs.conv(r, rhs, **padded))(reg)
            return lax.slice_in_dim(y, 1, y.shape[1 + out_dims[-1]], axis=1 + out_dims[-1])
        return jax.vmap(lambda r: convs.conv(r, rhs, **unit))(reg)

    out = _window_op(ctx, eqn, lhs, in_dims, out_dims, k_eff, p["window_strides"], p["padding"], 0.0, apply)
    return dense(ctx, eqn, ins) if out is None else out


_POOL_INIT = {"reduce_window_max": -np.inf, "reduce_window_min": np.inf, "reduce_window_sum": 0.0}


def pool(ctx: Context, eqn: Eqn, ins: list) -> list:
    """``reduce_window_{max,min,sum}`` (max and average pooling) over the spatial axes."""
    (x,) = ins
    p = eqn.params
    wd, ws, pad = p["window_dimensions"], p["window_strides"], p["padding"]
    spatial = [d for d in range(len(wd)) if wd[d] != 1 or ws[d] != 1 or tuple(pad[d]) != (0, 0)]
    if (not isinstance(x, Win) or any(b != 1 for b in p["base_dilation"]) or not set(spatial) <= set(x.dims)
            or any(lo < 0 or hi < 0 for lo, hi in pad)):
        return dense(ctx, eqn, ins)
    dims = x.dims
    k_eff = [(wd[d] - 1) * p["window_dilation"][d] + 1 for d in dims]
    init = np.asarray(_POOL_INIT[eqn.prim.name], ctx.avals[x.var].dtype)
    unit = dict(p, padding=tuple((0, 0) for _ in wd))

    def apply(reg):
        return jax.vmap(lambda r: eqn.prim.bind(r, **unit))(reg)

    out = _window_op(ctx, eqn, x, dims, dims, k_eff, [ws[d] for d in dims], [tuple(pad[d]) for d in dims],
                     init, apply)
    return dense(ctx, eqn, ins) if out is None else out


def pad(ctx: Context, eqn: Eqn, ins: list) -> list:
    """``pad`` with a constant value along the spatial axes (no interior padding)."""
    x, value = ins
    cfg = eqn.params["padding_config"]
    if (not isinstance(x, Win) or _is_img(value) or np.ndim(value) != 0
            or any((lo, hi, it) != (0, 0, 0) for d, (lo, hi, it) in enumerate(cfg) if d not in x.dims)
            or any(it != 0 or lo < 0 or hi < 0 for lo, hi, it in cfg)):
        return dense(ctx, eqn, ins)
    try:
        pad_value = float(value)  # the clean stack is padded once per distinct value
    except (TypeError, jax.errors.ConcretizationTypeError):
        return dense(ctx, eqn, ins)
    out_shape = ctx.avals[eqn.outs[0]].shape
    data, mask = x.data, True
    for a in x.axes:  # positions of the window outside the input map become padding
        u = a.off[:, None] + jnp.arange(a.size, dtype=jnp.int32)[None]
        m = (u >= 0) & (u < a.n)
        mask = mask & m.reshape([-1] + [a.size if j == a.dim else 1 for j in range(data.ndim - 1)])
    data = jnp.where(mask, data, jnp.asarray(pad_value, data.dtype))
    axes = tuple(Axis(a.dim, a.src, out_shape[a.dim], ctx.offset(a.eoff + cfg[a.dim][0], a.src),
                      a.eoff + cfg[a.dim][0], a.size)
                 for a in x.axes)
    return [finish(ctx, Win(data, axes, eqn.outs[0]))]


def slice_(ctx: Context, eqn: Eqn, ins: list) -> list:
    """Static ``slice`` with unit strides: shifts the window; other axes are cut directly."""
    (x,) = ins
    p = eqn.params
    if not isinstance(x, Win) or any(s not in (None, 1) for s in (p["strides"] or ())):
        return dense(ctx, eqn, ins)
    start, limit = p["start_indices"], p["limit_indices"]
    out_shape = ctx.avals[eqn.outs[0]].shape
    axes = tuple(Axis(a.dim, a.src, out_shape[a.dim], ctx.offset(a.eoff - start[a.dim], a.src),
                      a.eoff - start[a.dim], a.size)
                 for a in x.axes)
    cut = tuple(slice(None) if d in x.dims else slice(start[d], limit[d]) for d in range(len(out_shape)))
    return [finish(ctx, Win(x.data[(slice(None),) + cut], axes, eqn.outs[0]))]


def transpose(ctx: Context, eqn: Eqn, ins: list) -> list:
    """``transpose``: the window's axes move with the data (NCHW <-> NHWC)."""
    (x,) = ins
    if not isinstance(x, Win):
        return dense(ctx, eqn, ins)
    perm = tuple(eqn.params["permutation"])
    data = x.data.transpose((0,) + tuple(q + 1 for q in perm))
    axes = tuple(sorted((a.moved(perm.index(a.dim)) for a in x.axes), key=lambda a: a.dim))
    return [Win(data, axes, eqn.outs[0])]


def dot_general(ctx: Context, eqn: Eqn, ins: list) -> list:
    """A matmul over a non-spatial axis of a windowed lhs (1x1 convolutions written as matmuls)."""
    lhs, rhs = ins
    (lc, _), (lb, _) = eqn.params["dimension_numbers"]
    if not isinstance(lhs, Win) or _is_img(rhs) or lb or set(lc) & set(lhs.dims):
        return dense(ctx, eqn, ins)
    free = [d for d in range(len(ctx.avals[lhs.var].shape)) if d not in lc]
    axes = tuple(a.moved(free.index(a.dim)) for a in lhs.axes)
    out = _vmap_bind(eqn, [lhs.data, rhs], [0, None])[0]
    return [Win(out, axes, eqn.outs[0])]


RULES = {"conv_general_dilated": conv, "pad": pad, "slice": slice_, "transpose": transpose,
         "dot_general": dot_general, **{name: pool for name in _POOL_INIT},
         **{name: elementwise for name in ELEMENTWISE}}


def apply_rule(ctx: Context, eqn: Eqn, ins: list) -> list:
    """The windowed rule of ``eqn``'s primitive, or the dense fallback."""
    return RULES.get(eqn.prim.name, dense)(ctx, eqn, ins)


def input_window(ctx: Context, var: int, hw: tuple[int, int], boxes, patch_size: int, fill) -> Win:
    """The occluded input: the square's window of the clean image with the box set to ``fill`` (Eqs. 2-3).

    Args:
      ctx: the context (its clean stack holds the group's images as ``var``).
      var: the image's value id; its shape is (1, H, W, C).
      hw: (H, W).
      boxes: (B, 4) int32 ``(x1, x2, y1, y2)`` from ``occlusion.square_bounds``.
      patch_size: the square side (static: it sets the window sizes).
      fill: value written into the square.
    """
    axes, rows, cols = [], boxes[:, 2], boxes[:, 0]
    for dim, src, n, lo in ((1, 0, hw[0], rows), (2, 1, hw[1], cols)):
        axes.append(Axis(dim, src, n, lo, np.arange(n + 1), patch_size))  # x1 lies in [0, W]
    data = region(ctx, var, (1, 2), [rows, cols], [a.eoff for a in axes], [patch_size] * 2, 0.0)
    t = jnp.arange(patch_size, dtype=jnp.int32)[None]
    inside = (((rows[:, None] + t) < boxes[:, 3:4])[:, :, None] & ((cols[:, None] + t) < boxes[:, 1:2])[:, None, :])
    data = jnp.where(inside[:, None, :, :, None], jnp.asarray(fill, data.dtype), data)
    return Win(data, tuple(axes), var)
