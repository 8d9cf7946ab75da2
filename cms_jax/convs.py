"""Depthwise convolutions in the formulation each backend runs fastest.

XLA:CPU lowers a grouped convolution with one input channel per group (a
depthwise conv, as in SeparableConv2D) to a slow generic loop: on the
mini-XCEPTION shapes it ran 7-27x slower than the same arithmetic written as
``kh * kw`` shifted multiply-adds (measured, jax 0.10, 2-core EPYC; the gender
model's forward: 120 passes/s grouped, 690 shifted, batch 1024).  Models call
`depthwise_conv`, which picks that formulation on the CPU.  Incremental
inference traces models inside `semantic()`, where `depthwise_conv` emits the
one ``conv_general_dilated`` primitive (its windowed rule needs the op, not 9
shifted slices), and evaluates every conv primitive through `conv`, which
again picks the fast formulation.
"""
from __future__ import annotations

import contextlib
import threading

import jax
import jax.numpy as jnp
from jax import lax


def _depthwise_nhwc(x, k, strides, padding, dilation, mult):
    """Depthwise conv of NHWC ``x`` with HWIO ``k`` (kh, kw, 1, C*mult) as shifted multiply-adds."""
    if mult > 1:
        x = jnp.repeat(x, mult, axis=-1)  # output channel o reads input channel o // mult
    x = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), (*padding[0], 0), (*padding[1], 0), (0, 0, 0)])
    kh, kw = k.shape[:2]
    (sh, sw), (dh, dw) = strides, dilation
    oh = (x.shape[1] - (kh - 1) * dh - 1) // sh + 1
    ow = (x.shape[2] - (kw - 1) * dw - 1) // sw + 1
    out = None
    for i in range(kh):
        for j in range(kw):
            tap = lax.slice(x, (0, i * dh, j * dw, 0), (x.shape[0], i * dh + (oh - 1) * sh + 1,
                                                         j * dw + (ow - 1) * sw + 1, x.shape[3]), (1, sh, sw, 1))
            term = tap * k[i, j, 0].astype(x.dtype)
            out = term if out is None else out + term
    return out


_STATE = threading.local()


@contextlib.contextmanager
def semantic():
    """Within this context `depthwise_conv` emits the plain grouped ``conv_general_dilated``."""
    prev = getattr(_STATE, "semantic", False)
    _STATE.semantic = True
    try:
        yield
    finally:
        _STATE.semantic = prev


def depthwise_conv(x, kernel, strides=(1, 1), padding="SAME", dilation=(1, 1)):
    """Depthwise 2-D convolution of NHWC ``x`` with an HWIO kernel (kh, kw, 1, C * multiplier).

    Args:
      x: (B, H, W, C) input.
      kernel: (kh, kw, 1, C * multiplier); output channel ``o`` reads input channel ``o // multiplier``.
      strides: (sh, sw).
      padding: 'SAME', 'VALID' or ((lo, hi), (lo, hi)).
      dilation: kernel dilation (dh, dw).

    Returns:
      (B, H', W', C * multiplier).
    """
    if isinstance(padding, str):
        k_eff = [(k - 1) * d + 1 for k, d in zip(kernel.shape[:2], dilation)]
        padding = lax.padtype_to_pads(x.shape[1:3], k_eff, strides, padding)
    padding = tuple(tuple(int(v) for v in p) for p in padding)
    if getattr(_STATE, "semantic", False) or jax.default_backend() != "cpu":
        return lax.conv_general_dilated(x, kernel.astype(x.dtype), tuple(strides), padding, rhs_dilation=tuple(dilation),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=x.shape[-1])
    return _depthwise_nhwc(x, kernel, tuple(strides), padding, tuple(dilation), kernel.shape[3] // x.shape[-1])


def conv(lhs, rhs, **params):
    """``lax.conv_general_dilated_p.bind(lhs, rhs, **params)``, fast on XLA:CPU.

    Depthwise convolutions (``feature_group_count`` = input channels, no lhs
    dilation) on the CPU become shifted multiply-adds in NHWC; all others use
    the primitive.  Same values up to float rounding.
    """
    dn = params["dimension_numbers"]
    groups = params["feature_group_count"]
    cin = lhs.shape[dn.lhs_spec[1]]
    if (jax.default_backend() != "cpu" or groups == 1 or groups != cin or params["batch_group_count"] != 1
            or any(d != 1 for d in params["lhs_dilation"]) or len(dn.lhs_spec) != 4
            or params.get("preferred_element_type") not in (None, lhs.dtype)):
        return lax.conv_general_dilated_p.bind(lhs, rhs, **params)
    x = lhs.transpose((dn.lhs_spec[0], dn.lhs_spec[2], dn.lhs_spec[3], dn.lhs_spec[1]))  # NHWC
    k = rhs.transpose((dn.rhs_spec[2], dn.rhs_spec[3], dn.rhs_spec[1], dn.rhs_spec[0]))  # HWIO
    mult = k.shape[3] // cin
    y = _depthwise_nhwc(x, k, params["window_strides"], params["padding"], params["rhs_dilation"], mult)
    inv = [0] * 4
    for pos, d in enumerate((dn.out_spec[0], dn.out_spec[2], dn.out_spec[3], dn.out_spec[1])):
        inv[d] = pos
    return y.transpose(inv)
