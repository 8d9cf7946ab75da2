"""A model's forward pass as a flat list of primitive equations (its jaxpr, inlined).

Exact incremental inference (``cms_jax.incremental``) is a transformation of
the model's jaxpr, as ``jax.vmap`` is: it needs no per-model code.  This module
traces ``apply_fn(params, x)`` once at batch 1, inlines every call-like
primitive (``jit``, ``custom_jvp_call``, ``custom_vjp_call``, ``closed_call``,
``remat``) so that each value has one integer id, and marks which values
depend on the image (everything else is a function of the weights alone).
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Callable

import jax
import numpy as np
from jax.extend import core as jcore

from cms_jax import convs

# Call-like primitives whose body is evaluated in place (param holding the body).
_INLINE = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
           "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr",
           "custom_vjp_call_jaxpr": "fun_jaxpr", "remat": "jaxpr", "checkpoint": "jaxpr"}


@dataclasses.dataclass(frozen=True)
class Lit:
    """A literal operand (a Python or numpy scalar baked into the jaxpr)."""
    value: Any


@dataclasses.dataclass(frozen=True)
class Eqn:
    """One primitive application; operands are value ids (int) or `Lit`."""
    prim: Any
    params: dict
    ins: tuple
    outs: tuple[int, ...]


@dataclasses.dataclass
class Program:
    """A flat forward pass.

    Attributes:
      eqns: the primitive equations in evaluation order.
      consts: value id -> constant array captured by the traced function.
      param_ids: value ids of the flattened ``params`` leaves, in tree order.
      image_id: value id of the model input ``x`` (traced at batch 1).
      out_id: value id of the model output.
      avals: value id -> abstract value (shape, dtype).
      image_dependent: ids of values that depend on the image.
    """
    eqns: list[Eqn]
    consts: dict[int, Any]
    param_ids: list[int]
    image_id: int
    out_id: int
    avals: dict[int, Any]
    image_dependent: set[int]


def trace(apply_fn: Callable, params: Any, image_shape: tuple[int, ...], dtype=np.float32) -> Program:
    """Traces ``apply_fn(params, x)`` for one image of shape ``image_shape`` (H, W, C).

    Args:
      apply_fn: the model, ``apply_fn(params, x (B, H, W, C)) -> (B, K)``.
      params: its weights (a pytree; only shapes and dtypes are read).
      image_shape: (H, W, C) of one preprocessed input.
      dtype: dtype of the input.

    Returns:
      The flat `Program`.
    """
    x = jax.ShapeDtypeStruct((1,) + tuple(image_shape), dtype)
    with convs.semantic():  # depthwise convs as one primitive, whatever the backend
        # A fresh function: JAX caches traces by function, and the switch is not in its cache key,
        # so a trace of apply_fn made earlier (eval_shape at batch 1) would come back without it.
        closed = jax.make_jaxpr(lambda p, image: apply_fn(p, image))(params, x)
    ids = itertools.count()
    prog = Program([], {}, [], -1, -1, {}, set())
    env: dict = {}
    for v, c in zip(closed.jaxpr.constvars, closed.consts):
        env[v] = next(ids)
        prog.consts[env[v]] = c
        prog.avals[env[v]] = v.aval
    invars = [_new(v, env, ids, prog) for v in closed.jaxpr.invars]
    prog.param_ids, prog.image_id = invars[:-1], invars[-1]
    outs = _inline(closed.jaxpr, env, ids, prog)
    if len(outs) != 1 or not isinstance(outs[0], int):
        raise ValueError(f"apply_fn must return one array computed from its inputs, got {len(outs)} outputs")
    prog.out_id = outs[0]
    _fold_scalars(prog)
    dep = {prog.image_id}
    for e in prog.eqns:
        if any(isinstance(a, int) and a in dep for a in e.ins):
            dep.update(e.outs)
    prog.image_dependent = dep
    return prog


def _fold_scalars(prog: Program) -> None:
    """Evaluates equations of literals alone (e.g. a pad value cast to float32) into literals.

    Rules such as ``pad`` need such values concretely; folding them here keeps
    the windowed pass free of trace-time guessing.
    """
    lits: dict[int, Lit] = {}
    kept = []
    for e in prog.eqns:
        ins = tuple(lits.get(a, a) if isinstance(a, int) else a for a in e.ins)
        e = Eqn(e.prim, e.params, ins, e.outs)
        if ins and all(isinstance(a, Lit) for a in ins) and all(
                np.size(prog.avals[o].shape) == 0 or np.prod(prog.avals[o].shape) <= 16 for o in e.outs):
            with jax.ensure_compile_time_eval():
                vals = bind(e, [a.value for a in ins])
            lits.update({o: Lit(np.asarray(v)) for o, v in zip(e.outs, vals)})
            continue
        kept.append(e)
    prog.eqns = kept
    if prog.out_id in lits:
        raise ValueError("apply_fn's output does not depend on its inputs")


def _new(v, env, ids, prog) -> int:
    env[v] = next(ids)
    prog.avals[env[v]] = v.aval
    return env[v]


def _atom(a, env):
    return Lit(a.val) if isinstance(a, jcore.Literal) else env[a]


def _inline(jaxpr, env, ids, prog) -> list:
    """Appends the equations of ``jaxpr`` (inlining calls); returns its outputs' atoms."""
    for e in jaxpr.eqns:
        ins = [_atom(a, env) for a in e.invars]
        body = e.params.get(_INLINE.get(e.primitive.name, ""))
        if body is not None:
            closed = body if hasattr(body, "jaxpr") else None
            inner = closed.jaxpr if closed is not None else body
            sub = {}
            for v, c in zip(inner.constvars, closed.consts if closed is not None else ()):
                sub[v] = next(ids)
                prog.consts[sub[v]] = c
                prog.avals[sub[v]] = v.aval
            for v, a in zip(inner.invars, ins):
                sub[v] = a
            # Literal operands of an inlined call are kept as literals inside it.
            res = _inline(inner, {**sub}, ids, prog)
            for v, r in zip(e.outvars, res):
                env[v] = r
            continue
        outs = tuple(_new(v, env, ids, prog) for v in e.outvars)
        prog.eqns.append(Eqn(e.primitive, dict(e.params), tuple(ins), outs))
    return [_atom(a, env) for a in jaxpr.outvars]


def bind(eqn: Eqn, args: list) -> list:
    """Applies ``eqn``'s primitive to ``args``; always returns a list of outputs.

    Convolutions go through `convs.conv`, the formulation XLA:CPU runs fastest.
    """
    if eqn.prim.name == "conv_general_dilated":
        return [convs.conv(*args, **eqn.params)]
    out = eqn.prim.bind(*args, **eqn.params)
    return list(out) if eqn.prim.multiple_results else [out]


def evaluate(prog: Program, params_leaves: list, image, keep: set[int] = frozenset()) -> tuple[Any, dict]:
    """Evaluates the program (the ordinary forward pass).

    Args:
      prog: from `trace`.
      params_leaves: the flattened params, in ``prog.param_ids`` order.
      image: (1, H, W, C) input.
      keep: value ids whose values are also returned.

    Returns:
      ``(output, {id: value for id in keep})``.
    """
    env = dict(prog.consts)
    env.update(zip(prog.param_ids, params_leaves))
    env[prog.image_id] = image
    for e in prog.eqns:
        outs = bind(e, [a.value if isinstance(a, Lit) else env[a] for a in e.ins])
        env.update(zip(e.outs, outs))
    return env[prog.out_id], {k: env[k] for k in keep}
