"""Shared converter pieces: tensors to numpy, torch state dicts, class names, Orbax writing.

Converters are pure functions from a source dict to the target params tree, validated by
`cms_jax.models.weights.check_tree` (one error listing every missing, extra and mis-shaped
weight; nothing is ever filled in from initial values).
"""
from __future__ import annotations

import os

import jax
import numpy as np

from cms_jax.models.card import ModelCard


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
