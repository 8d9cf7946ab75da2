"""The one reader of a finished run's folder: summary.json, cms.npy and drops.npz, through `storage`.

The figures (`cms_jax.figures.common.load_run`) and the run's own analysis
(`analysis.analyse`) read a run here, so a run in an object store
(``gs://bucket/run``) reads as a local folder does. ``drops.npz`` holds each
image's per-vertex drops (the canonical record of its CIS, Eqs. 1-3) and its
canonical side f_i (Algorithm 1, line 4); ``cms.npy`` is the CMS (Eq. 6).
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np

from cms_jax import storage


@dataclasses.dataclass
class RunOutputs:
    """A finished run's files, read.

    Attributes:
      out_dir: the run's folder (or object-store URL).
      summary: its summary.json.
      cms: (H_F, W_F) float32, the CMS (Eq. 6).
      drops: drops.npz's columns (``files``, ``drops``, ``valid``, ``targets``, ``clean``, ...).
      sides: float32 (N,), each image's canonical side f_i (`canonical_sides`).
    """
    out_dir: str
    summary: dict
    cms: np.ndarray
    drops: dict[str, np.ndarray]
    sides: np.ndarray


def canonical_sides(z, summary: dict) -> np.ndarray:
    """float32 (N,): each image's canonical side f_i from a run's drops.npz ``z`` (and its summary).

    A drops.npz written before the sides were kept per image holds one scalar
    ``canonical_patch_size``: exact for a ``loose`` or ``tight`` run (every image had that side), and
    refused for a ``whole`` run (its scalar was the paper's f = sz * H_F / H_I, not each face's: rerun it).
    """
    if "canonical_side" in z:
        return np.asarray(z["canonical_side"], np.float32)
    if "canonical_patch_size" in z and summary.get("crop_policy") in ("loose", "tight"):
        return np.full(len(z["files"]), float(z["canonical_patch_size"]), np.float32)
    raise ValueError("drops.npz has no per-image 'canonical_side'" + (
        ": it comes from a 'whole'-crop run scored before the sides were per face; rerun it"
        if "canonical_patch_size" in z else ""))


def landmark_cache(out_dir, align_cache: str | None = None) -> str | None:
    """The run's landmark cache: ``align_cache``, else ``<out_dir>/align_cache`` for a local run (None off it)."""
    if align_cache:
        return align_cache
    return str(storage.path(out_dir) / "align_cache") if storage.is_local(out_dir) else None


def read_summary(out_dir) -> dict:
    """A run's summary.json."""
    return json.loads((storage.path(out_dir) / "summary.json").read_text())


def read_run(out_dir, summary: dict | None = None) -> RunOutputs:
    """A finished run's cms.npy, drops.npz and summary.json (``summary``: already in hand, not read again).

    Raises:
      FileNotFoundError: a file of a finished run is missing (all missing ones named).
    """
    out = storage.path(out_dir)
    names = ("cms.npy", "drops.npz") + (("summary.json",) if summary is None else ())
    missing = [str(out / n) for n in names if not (out / n).exists()]
    if missing:
        raise FileNotFoundError(f"{out_dir} is not a finished CMS run: missing {missing}")
    summary = read_summary(out_dir) if summary is None else summary
    z = storage.load_npz(out / "drops.npz")
    return RunOutputs(str(out_dir), summary, storage.load_npy(out / "cms.npy"), z, canonical_sides(z, summary))
