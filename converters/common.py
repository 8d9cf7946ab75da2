"""Shared converter pieces: loud validation of a converted tree, Orbax writing.

Converters are pure functions from a source dict to the target params tree.
`check_tree` compares the result against the model's expected tree (from
``nnx.eval_shape``) and raises ONE error listing every missing, extra and
mis-shaped weight; nothing is ever filled in from initial values.
"""
from __future__ import annotations

import os

import jax
import numpy as np

from cms_jax.models.card import ModelCard


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


def check_source_keys(expected_keys, state_dict: dict, *, source: str) -> None:
    """Before converting: the source dict must hold exactly `expected_keys` (one error for all)."""
    missing = sorted(set(expected_keys) - set(state_dict))
    extra = sorted(set(state_dict) - set(expected_keys))
    if missing or extra:
        lines = [f"{source} keys do not match ({len(missing)} missing, {len(extra)} extra):"]
        lines += [f"  missing: {k}" for k in missing] + [f"  extra: {k}" for k in extra]
        raise WeightMismatchError("\n".join(lines))


def to_numpy(t) -> np.ndarray:
    """A torch tensor or array as a float32 numpy array."""
    if hasattr(t, "detach"):
        t = t.detach().cpu().numpy()
    return np.asarray(t, dtype=np.float32)


def save_converted(out_dir: str | os.PathLike, params: dict, card: ModelCard) -> str:
    """Write ``<out_dir>/params`` (Orbax, plain nested dict) and ``model_card.json``.

    Returns:
      The absolute output directory.
    """
    import orbax.checkpoint as ocp  # imported here: only converters and loaders need it

    out_dir = os.path.abspath(os.fspath(out_dir))
    os.makedirs(out_dir, exist_ok=True)
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(os.path.join(out_dir, "params"), jax.tree.map(np.asarray, params), force=True)
    card.save(out_dir)
    return out_dir


def load_state_dict(path: str) -> dict:
    """A torch ``.pth`` state dict, read with ``weights_only=True`` (never a free unpickler)."""
    import torch

    sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: expected a state dict (name -> tensor), got {type(sd).__name__}")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def read_class_names(path: str | None) -> list[str] | None:
    """Class names from a text file, one per line (blank lines ignored); None when no file."""
    if not path:
        return None
    with open(path) as f:
        return [n.strip() for n in f.read().split("\n") if n.strip()]
