"""Labels for fine-tuning face models on the paper's tasks (Sec. 4.1.1).

The paper fine-tunes VGG-Face for gender, age as 10 bins of 10 years
(0-9, 10-19, ..., 90+), head pose as 9 yaw x pitch bins (3 x 3, top-left to
bottom-right) and expression. This module turns the per-file values of a label source (`cms_jax.sources`:
UTKFace names, CelebA attributes, ``file,label`` CSVs such as the teachers'
pseudo-labels of `pseudo`) into integer classes.

The bins follow `cms_jax.models.outputs` exactly: bin ``i`` is
``[edge_{i-1}, edge_i)``, pose classes are row-major by pitch then yaw, so a
model fine-tuned here and the binned regression models share class indices.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from cms_jax import sources
from cms_jax.models.outputs import (AGE_BINS, AGE_WIDTH, PITCH_EDGES, YAW_EDGES, age_bin_names,  # noqa: F401
                                    pose_bin_names)
from cms_jax.models.registry import GENDER_CLASSES  # the gender mini-XCEPTION's order


def age_bin(age, width: float = AGE_WIDTH, num_bins: int = AGE_BINS) -> np.ndarray:
    """Age in years -> bin index: [0,10) -> 0, ..., [90, inf) -> 9.

    Args:
      age: scalar or array of ages (years, >= 0).
      width: bin width in years.
      num_bins: number of bins; the last one is open-ended.

    Returns:
      int array of the same shape.
    """
    a = np.asarray(age, np.float64)
    if np.any(~np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"age_bin: ages must be finite and >= 0, got {a[(~np.isfinite(a)) | (a < 0)][:5]}")
    return np.minimum(np.floor(a / width), num_bins - 1).astype(np.int64)


def pose_bin(yaw, pitch, yaw_edges: Sequence[float] = YAW_EDGES,
             pitch_edges: Sequence[float] = PITCH_EDGES) -> np.ndarray:
    """(yaw, pitch) in degrees -> one of 9 classes, ``3 * pitch_bin + yaw_bin``.

    Bin ``i`` of an axis is ``[edge_{i-1}, edge_i)``: with the default edges
    yaw -20 -> 0, yaw 0 -> 1, yaw 15 -> 2. Class 0 is the top-left cell (lowest
    pitch, lowest yaw), class 8 the bottom-right, as `cms_jax.models.pose_bins`.

    Args:
      yaw, pitch: scalars or arrays of the same shape (degrees).
      yaw_edges, pitch_edges: the two inner edges of each axis, increasing.

    Returns:
      int array of class indices in 0..8.
    """
    for name, e in (("yaw_edges", yaw_edges), ("pitch_edges", pitch_edges)):
        if len(e) != 2 or not e[0] < e[1]:
            raise ValueError(f"pose_bin: {name} must be two increasing edges, got {tuple(e)}")
    y = np.searchsorted(np.asarray(yaw_edges, np.float64), np.asarray(yaw, np.float64), side="right")
    p = np.searchsorted(np.asarray(pitch_edges, np.float64), np.asarray(pitch, np.float64), side="right")
    return (3 * p + y).astype(np.int64)


def _classes(spec: str, values: list[str | None]) -> tuple[str, ...]:
    """Class names of a spec, in the order class indices follow."""
    if spec == "utkface:gender":
        return GENDER_CLASSES
    if spec == "utkface:age_bin":
        return age_bin_names()
    if spec == "utkface:race":
        return sources.UTK_RACES
    kind, _, attr = sources.parse(spec)
    if kind == "celeba":  # class 1 has the attribute
        return f"not_{attr}", attr
    present = sorted({v for v in values if v is not None})
    if present and all(v.lstrip("-").isdigit() for v in present):  # integer classes 0..max
        top = max(int(v) for v in present)
        if min(int(v) for v in present) < 0:
            raise ValueError(f"labels {spec!r}: negative class label {min(int(v) for v in present)}")
        return tuple(f"class_{i}" for i in range(top + 1))
    return tuple(present)


def load_labels(spec: str, files: Sequence[str]) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    """Labels for `files` from a ``SOURCE:FIELD`` spec (`cms_jax.sources`); files without one are dropped.

    Args:
      spec: ``utkface:gender`` (classes woman, man, as the gender model), ``utkface:age_bin``
        (the paper's 10 age bins), ``utkface:race`` (UTKFace's 5), ``celeba:PATH:ATTRIBUTE``
        (not_ATTR, ATTR) or ``csv:PATH`` (integer classes as they are, names in sorted order).
      files: image paths (matched on base name).

    Returns:
      (kept files, int64 labels, class names).
    """
    if spec == "utkface:age_decade":
        raise ValueError("labels 'utkface:age_decade' is open-ended; train on utkface:age_bin (10 bins)")
    values = sources.read(spec, files)
    if spec == "utkface:gender":  # UTKFace 0 male -> class 'man': the class name among the value's synonyms
        word = {g: next(c for c in GENDER_CLASSES if c in sources.GENDER_SYNONYMS[g]) for g in sources.UTK_GENDERS}
        values = [None if v is None else word[v] for v in values]
    names = _classes(spec, values)
    index = {n: i for i, n in enumerate(names)}
    numeric = bool(names) and names[0] == "class_0" and "class_0" not in values
    kept = [(f, int(v) if numeric else index[v]) for f, v in zip(files, values) if v is not None]
    return [f for f, _ in kept], np.asarray([y for _, y in kept], np.int64), names
