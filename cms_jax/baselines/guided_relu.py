"""Guided-backpropagation ReLU and a jaxpr rewrite that swaps it into any JAX model.

Guided backpropagation (Springenberg et al.) passes a gradient through a ReLU
only where both the forward input and the incoming gradient are positive. Our
models call jax.nn.relu (or nnx.relu, the same function) internally and take
no activation argument, so instead of asking every model for a hook we trace
the model to a jaxpr and re-evaluate it with every ReLU replaced:

  * ``custom_jvp_call`` (how jax.nn.relu appears) and ``custom_vjp_call`` are
    inlined, so their primal bodies are visible;
  * ``max(x, 0)`` with a literal zero (the body of jax.nn.relu, and of a
    hand-written jnp.maximum(x, 0)) becomes ``guided_relu(x)``;
  * nested ``jit``/``pjit`` bodies are rewritten recursively.
ReLUs inside control flow (scan, while, cond) are left as ordinary ReLUs, and
black-box models (pure_callback) have no gradient at all.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax.extend import core as jex_core


@jax.custom_vjp
def guided_relu(x: jax.Array) -> jax.Array:
    """ReLU whose backward pass keeps only positive gradients at positive inputs."""
    return jnp.maximum(x, 0.0)


def _guided_fwd(x):
    return jnp.maximum(x, 0.0), x


def _guided_bwd(x, g):
    return (jnp.where((x > 0) & (g > 0), g, jnp.zeros_like(g)),)


guided_relu.defvjp(_guided_fwd, _guided_bwd)


def _is_zero_literal(v) -> bool:
    return isinstance(v, jex_core.Literal) and jnp.ndim(v.val) == 0 and float(v.val) == 0.0


def _eval(jaxpr, consts, *args):
    """Evaluate a jaxpr with every ReLU replaced by guided_relu."""
    env = {}

    def read(v):
        return v.val if isinstance(v, jex_core.Literal) else env[v]

    for var, val in zip(jaxpr.constvars, consts):
        env[var] = val
    for var, val in zip(jaxpr.invars, args):
        env[var] = val
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        if name == "max" and any(_is_zero_literal(v) for v in eqn.invars):
            others = [val for v, val in zip(eqn.invars, invals) if not _is_zero_literal(v)]
            outs = [guided_relu(others[0] if others else invals[0])]
        elif name in ("jit", "pjit", "closed_call", "core_call"):
            inner = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
            outs = _eval_closed(inner, invals)
        elif name in ("custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr"):
            inner = eqn.params.get("call_jaxpr", eqn.params.get("fun_jaxpr"))
            outs = _eval_closed(inner, invals)
        else:
            # get_bind_params turns stored sub-jaxprs back into bind arguments (as core.eval_jaxpr does).
            outs = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
            if not eqn.primitive.multiple_results:
                outs = [outs]
        for var, val in zip(eqn.outvars, outs):
            env[var] = val
    return [read(v) for v in jaxpr.outvars]


def _eval_closed(inner, invals):
    if isinstance(inner, jex_core.ClosedJaxpr):
        return _eval(inner.jaxpr, inner.consts, *invals)
    return _eval(inner, [], *invals)


def with_guided_relus(fn: Callable) -> Callable:
    """fn with the same outputs whose gradients flow through guided ReLUs.

    Args:
      fn: a JAX-traceable function of arrays / pytrees (e.g. apply_fn(params, x)).

    Returns:
      A function with fn's signature and outputs.
    """

    def wrapped(*args):
        flat, tree = jax.tree_util.tree_flatten(args)
        closed, out_shape = jax.make_jaxpr(
            lambda *f: fn(*jax.tree_util.tree_unflatten(tree, f)), return_shape=True)(*flat)
        outs = _eval(closed.jaxpr, closed.consts, *flat)
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), outs)

    return wrapped
