"""Validation of converted weights against a model's expected tree (STYLE lesson 4).

Every converter (`converters/`, `keras_h5.read_weights`) ends with `check_tree`: the
converted nested dict against the abstract tree from ``nnx.eval_shape``, raising ONE
error that lists every missing, extra and mis-shaped weight; nothing is ever filled in
from initial values. It lives in the package so that the package never imports the
converters; they depend on it.
"""
from __future__ import annotations

import numpy as np


class WeightMismatchError(ValueError):
    """Converted weights do not match the model: lists every problem at once."""


def _flatten(tree, prefix=()) -> dict[str, object]:
    out = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(_flatten(v, prefix + (str(k),)))
    else:
        out["/".join(prefix)] = tree
    return out


def check_tree(expected, actual, *, source: str = "checkpoint", extra_source_keys=()) -> None:
    """Raise one `WeightMismatchError` naming every missing, extra and mis-shaped weight.

    Args:
      expected: nested dict of arrays or ``jax.ShapeDtypeStruct`` (from ``nnx.eval_shape``).
      actual: nested dict of arrays produced by a converter.
      source: what the weights came from, for the message.
      extra_source_keys: source keys the converter had no place for (reported as extra).

    Raises:
      WeightMismatchError: if the trees differ in keys or shapes.
    """
    exp, act = _flatten(expected), _flatten(actual)
    missing = sorted(set(exp) - set(act))
    extra = sorted(set(act) - set(exp)) + sorted(extra_source_keys)
    shaped = sorted(k for k in set(exp) & set(act) if tuple(np.shape(act[k])) != tuple(exp[k].shape))
    if missing or extra or shaped:
        lines = [f"{source} does not match the model ({len(missing)} missing, {len(extra)} extra, "
                 f"{len(shaped)} mis-shaped):"]
        lines += [f"  missing: {k} expected shape {tuple(exp[k].shape)}" for k in missing]
        lines += [f"  extra: {k}" + (f" shape {tuple(np.shape(act[k]))}" if k in act else "") for k in extra]
        lines += [f"  mis-shaped: {k} got {tuple(np.shape(act[k]))}, expected {tuple(exp[k].shape)}"
                  for k in shaped]
        raise WeightMismatchError("\n".join(lines))
