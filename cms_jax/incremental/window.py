"""Windowed values: the part of a feature map that an occluded square can change.

Occluding one square (Eqs. 2-3) changes, in each feature map, only the
positions whose receptive field meets the square.  A `Win` stores, for a batch
of occluded copies, a window that holds all of them; everywhere else the map
equals the clean image's map, computed once per image (the clean *stack*, one
row per image of the group).

Per spatial axis a window has a static length and a per-copy offset, and the
same offset for *every* position the square can take along that image axis
(``eoff``, numpy, known at trace time).  Windows are not clipped to the map:
positions outside it hold don't-care values that every read masks out.  So the
offset of a window relative to the one it was computed from is, for most ops,
the same for every copy, and the enumeration proves it at trace time; a
relative offset known statically is a static pad or slice, while a per-copy
one needs a batched dynamic slice, which XLA:CPU runs several times slower.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


@dataclasses.dataclass(frozen=True)
class Axis:
    """One spatial axis of a windowed value.

    Attributes:
      dim: the axis in the value's (batch-1) shape.
      src: the image axis it derives from (0 = rows, 1 = columns).
      n: the map's length along ``dim``.
      off: (B,) int32 first map position of each copy's window (may lie outside the map).
      eoff: (K,) int64 the offset for every square position along ``src``.
      size: static window length.
    """
    dim: int
    src: int
    n: int
    off: Any
    eoff: np.ndarray
    size: int

    def moved(self, dim: int) -> "Axis":
        return dataclasses.replace(self, dim=dim)


def static_offset(a: np.ndarray, b: np.ndarray) -> int | None:
    """``a - b`` when it is the same for every square position, else None."""
    d = np.unique(np.asarray(a) - np.asarray(b))
    return int(d[0]) if d.size == 1 else None


@dataclasses.dataclass(frozen=True)
class Win:
    """A batch of occluded copies of value ``var``: its clean map with ``data`` written at the axes' offsets.

    Attributes:
      data: (B,) + the value's shape with each spatial axis cut to its window length.
      axes: the spatial axes, in increasing ``dim``.
      var: the value's id (its clean stack is the background).
    """
    data: Any
    axes: tuple[Axis, ...]
    var: int

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(a.dim for a in self.axes)

    def fraction(self) -> float:
        """The window's area relative to the map's (may exceed 1 near small maps)."""
        return float(np.prod([a.size / a.n for a in self.axes]))


@dataclasses.dataclass(frozen=True)
class Dense:
    """A batch of full values, (B,) + the value's shape (after the switch to dense computation)."""
    data: Any


@dataclasses.dataclass
class Context:
    """What windowed rules need besides their operands.

    Attributes:
      idx: (B,) int32 image of the group each copy comes from.
      clean: ``clean(var, pads, pad_value)`` -> (G,) + padded shape, the clean stack.
      avals: value id -> abstract value.
      switch_fraction: windows covering at least this share of a map go dense.
      offset: ``offset(table, src)`` -> (B,) int32, a table of every square position along image
        axis ``src`` read at each copy's square (`offsets.Offsets`).
      approx_tau: 1.0 (exact), or the largest share of a map's side a convolution or pooling window
        may grow to (Krypton's projective-field threshold): the central part is kept, changes
        beyond it are dropped.
    """
    idx: Any
    clean: Callable
    avals: dict
    switch_fraction: float
    offset: Callable
    approx_tau: float = 1.0

    def cap(self, n: int) -> int:
        """The longest window along a map axis of length ``n`` (unbounded when exact)."""
        return 1 << 30 if self.approx_tau >= 1.0 else max(1, int(np.ceil(self.approx_tau * n)))


def _place(w, axis: int, rel, erel: np.ndarray, size: int):
    """Per copy, ``out[t] = w[t - rel]`` along ``axis`` for ``t < size`` (don't-care outside ``w``).

    ``rel`` can only take the values in ``erel``.  One value: a static pad.  A
    few: one static pad each, chosen per copy by a select (on XLA:CPU a chain
    of 8 selects ran 4x faster than the general way).  Many: a batched dynamic
    slice of the padded window.
    """
    sw = w.shape[axis]

    def static(r):
        cfg = [(0, 0, 0)] * w.ndim
        cfg[axis] = (r, size - r - sw, 0)  # negative pads crop
        return lax.pad(w, jnp.zeros((), w.dtype), cfg)

    values = np.unique(erel)
    if len(values) <= _FEW:
        out = static(int(values[0]))
        for r in values[1:]:
            out = jnp.where((rel == r).reshape((-1,) + (1,) * (w.ndim - 1)), static(int(r)), out)
        return out
    cfg = [(0, 0, 0)] * w.ndim
    cfg[axis] = (size, size, 0)
    wide = lax.pad(w, jnp.zeros((), w.dtype), cfg)
    return jax.vmap(lambda x, s: lax.dynamic_slice_in_dim(x, s, size, axis=axis - 1))(wide, size - rel)


_FEW = 8


def region(ctx: Context, var: int, dims: tuple[int, ...], starts: list, estarts: list, sizes: list[int],
           pad_value, *, win: Win | None = None, const=None):
    """Values of a map over a window, per copy: (B,) + shape with ``dims`` cut to ``sizes``.

    Position ``t`` along ``dims[k]`` is map position ``starts[k] + t``; outside
    the map it is ``pad_value`` (convolution or pooling padding).  The map is
    the clean stack of ``var`` (row ``ctx.idx``) or the unbatched ``const``,
    with ``win`` (if given) written over it.

    Args:
      starts: (B,) int32 first map position per copy, one per dim.
      estarts: (K,) the same for every square position (trace time).
    """
    shape = ctx.avals[var].shape if const is None else np.shape(const)
    rank = len(shape)
    pads = [(0, 0)] * rank
    for d, e, s in zip(dims, estarts, sizes):
        pads[d] = (max(0, -int(np.min(e))), max(0, int(np.max(e)) + s - shape[d]))
    if const is not None:
        bg = lax.pad(const, jnp.asarray(pad_value, const.dtype), [(lo, hi, 0) for lo, hi in pads])[None]
        rows = jnp.zeros_like(ctx.idx)
    else:
        bg, rows = ctx.clean(var, tuple(pads), pad_value), ctx.idx
    out_sizes = list(shape)
    for d, s in zip(dims, sizes):
        out_sizes[d] = s

    def one(i, st):
        start = [jnp.int32(0)] * rank
        for k, d in enumerate(dims):
            start[d] = st[k] + pads[d][0]
        return lax.dynamic_slice(bg, [i] + start, [1] + out_sizes)[0]

    out = jax.vmap(one)(rows, jnp.stack(starts, axis=1))
    if win is None:
        return out
    w, mask = win.data.astype(out.dtype), True
    for k, (d, a) in enumerate(zip(dims, win.axes)):
        s, sw = sizes[k], w.shape[1 + d]
        erel = a.eoff - estarts[k]
        rel = ctx.offset(erel, a.src)
        w = _place(w, 1 + d, rel, erel, s)
        t = jnp.arange(s, dtype=jnp.int32)[None]
        m = (t >= rel[:, None]) & (t < rel[:, None] + sw)
        if np.min(a.eoff) < 0 or np.max(a.eoff) + sw > a.n:  # the window can leave the map
            u = starts[k][:, None] + t
            m = m & (u >= 0) & (u < a.n)
        mask = mask & m.reshape([-1] + [s if j == d else 1 for j in range(rank)])
    # Materialised once: fused into the conv that reads it, XLA recomputes the gather and the
    # select for every tap (measured 3% faster with the barrier, mini-XCEPTION, 1024 copies).
    return lax.optimization_barrier(jnp.where(mask, w, out))


def materialize(ctx: Context, value) -> Any:
    """(B,) + shape full values of a `Win` (clean map with the window written in) or `Dense`."""
    if isinstance(value, Dense):
        return value.data
    zeros, ez = jnp.zeros_like(ctx.idx), np.zeros(1, np.int64)
    out = region(ctx, value.var, value.dims, [zeros] * len(value.axes), [ez] * len(value.axes),
                 [a.n for a in value.axes], 0.0, win=value)
    # Materialised once: fused into a dense conv it would be recomputed for every tap (measured 8%).
    # (A batched dynamic_update_slice into the clean map, a scatter, was 3x slower than this.)
    return lax.optimization_barrier(out)


def finish(ctx: Context, win: Win):
    """Keeps ``win`` windowed, or switches to dense where the window covers most of the map."""
    if win.fraction() >= ctx.switch_fraction:
        return Dense(materialize(ctx, win))
    return win
