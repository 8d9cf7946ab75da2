"""Labels for fine-tuning face models on the paper's tasks (Sec. 4.1.1).

The paper fine-tunes VGG-Face for gender, age as 10 bins of 10 years
(0-9, 10-19, ..., 90+), head pose as 9 yaw x pitch bins (3 x 3, top-left to
bottom-right) and expression. This module turns the label sources at hand into
integer classes:

  * CelebA's ``list_attr_celeba.txt`` (line 1: count, line 2: attribute
    names, then ``file v1 v2 ...`` with 1 / -1) for one chosen attribute;
  * a CSV of ``file,label`` rows (integer classes, or names mapped to
    classes in sorted order);
  * UTKFace file names ``AGE_GENDER_RACE_DATE...`` (gender 0 male, 1 female).

The bins follow `cms_jax.models.outputs` exactly: bin ``i`` is
``[edge_{i-1}, edge_i)``, pose classes are row-major by pitch then yaw, so a
model fine-tuned here and the binned regression models share class indices.
"""
from __future__ import annotations

import csv
import os
from typing import Sequence

import numpy as np

# Same order as the gender mini-XCEPTION (cms_jax.models.registry.GENDER_CLASSES).
GENDER_CLASSES = ("woman", "man")


def _edge_names(label: str, edges: Sequence[float]) -> list[str]:
    e = [-np.inf, *edges, np.inf]
    return [f"{label}[{a:g},{b:g})" for a, b in zip(e[:-1], e[1:])]


def age_bin(age, width: float = 10.0, num_bins: int = 10) -> np.ndarray:
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


def age_bin_names(width: float = 10.0, num_bins: int = 10) -> tuple[str, ...]:
    """Class names of `age_bin`, identical to `cms_jax.models.age_bins`."""
    edges = [width * i for i in range(1, num_bins)]
    return tuple([f"age[{width * i:g},{width * (i + 1):g})" for i in range(num_bins - 1)]
                 + [f"age[{edges[-1]:g},inf)"])


def pose_bin(yaw, pitch, yaw_edges: Sequence[float] = (-15.0, 15.0),
             pitch_edges: Sequence[float] = (-10.0, 10.0)) -> np.ndarray:
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


def pose_bin_names(yaw_edges=(-15.0, 15.0), pitch_edges=(-10.0, 10.0)) -> tuple[str, ...]:
    """Class names of `pose_bin`, identical to `cms_jax.models.pose_bins`."""
    return tuple(f"{p}/{y}" for p in _edge_names("pitch", pitch_edges) for y in _edge_names("yaw", yaw_edges))


def utkface_fields(path) -> tuple[int, int] | None:
    """(age, gender) from a UTKFace name ``AGE_GENDER_RACE_DATE...``; None if unparsable.

    Gender is UTKFace's: 0 male, 1 female.
    """
    parts = os.path.basename(os.fspath(path)).split("_")
    try:
        age, gender = int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None
    return (age, gender) if gender in (0, 1) and age >= 0 else None


def read_celeba_attr(path, attribute: str) -> dict[str, int]:
    """One attribute of a CelebA ``list_attr_celeba.txt`` file: base name -> 1 (has it) / 0.

    Raises:
      ValueError: malformed header, unknown attribute (the message lists the known ones),
        a row with the wrong number of values, or a value other than 1 / -1.
    """
    with open(path) as f:
        lines = [l for l in f.read().splitlines() if l.strip()]
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise ValueError(f"{path}: not a CelebA attribute file (line 1 must be the image count)")
    names = lines[1].split()
    if attribute not in names:
        raise ValueError(f"{path}: no attribute {attribute!r}; it has {', '.join(names)}")
    col = names.index(attribute)
    table = {}
    for n, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if len(parts) != len(names) + 1:
            raise ValueError(f"{path} line {n}: {len(parts) - 1} values for {len(names)} attributes")
        if parts[1 + col] not in ("1", "-1"):
            raise ValueError(f"{path} line {n}: {attribute} is {parts[1 + col]!r}, expected 1 or -1")
        table[parts[0]] = int(parts[1 + col] == "1")
    if len(table) != int(lines[0]):
        raise ValueError(f"{path}: header says {lines[0].strip()} images, found {len(table)} rows")
    return table


def read_csv_labels(path) -> tuple[dict[str, int], tuple[str, ...]]:
    """A CSV of ``file,label`` rows (optional header) -> (base name -> class, class names).

    Integer labels are used as they are (classes 0..max, named 'class_i');
    other labels are names, mapped to classes in sorted order.
    """
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r and r[0].strip() and not r[0].startswith("#")]
    if rows and rows[0][0].strip().lower() in ("file", "filename", "path", "image"):
        rows = rows[1:]
    bad = [i for i, r in enumerate(rows) if len(r) < 2]
    if not rows or bad:
        raise ValueError(f"{path}: expected 'file,label' rows" + (f"; row(s) {bad[:5]} have one column" if bad else ""))
    raw = {os.path.basename(r[0].strip()): r[1].strip() for r in rows}
    if all(v.lstrip("-").isdigit() for v in raw.values()):
        table = {k: int(v) for k, v in raw.items()}
        if min(table.values()) < 0:
            raise ValueError(f"{path}: negative class label {min(table.values())}")
        return table, tuple(f"class_{i}" for i in range(max(table.values()) + 1))
    names = tuple(sorted(set(raw.values())))
    return {k: names.index(v) for k, v in raw.items()}, names


def load_labels(spec: str, files: Sequence[str]) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    """Labels for `files` from a spec; files without a label are dropped.

    Args:
      spec: ``utkface:gender`` (classes woman, man), ``utkface:age`` (10 age bins),
        ``celeba:PATH:ATTRIBUTE`` (classes not_ATTR, ATTR) or ``csv:PATH``.
      files: image paths (matched on base name).

    Returns:
      (kept files, int64 labels, class names).
    """
    kind, _, rest = spec.partition(":")
    if kind == "utkface":
        if rest not in ("gender", "age"):
            raise ValueError(f"labels {spec!r}: utkface task must be 'gender' or 'age'")
        fields = [utkface_fields(f) for f in files]
        kept = [(f, v) for f, v in zip(files, fields) if v is not None]
        if rest == "gender":
            labels = [1 - g for _, (_, g) in kept]  # UTKFace 0 male -> class 1 'man'
            names = GENDER_CLASSES
        else:
            labels = [int(age_bin(a)) for _, (a, _) in kept]
            names = age_bin_names()
        return [f for f, _ in kept], np.asarray(labels, np.int64), names
    if kind == "celeba":
        path, _, attr = rest.rpartition(":")
        table, names = read_celeba_attr(path, attr), (f"not_{attr}", attr)
    elif kind == "csv":
        table, names = read_csv_labels(rest)
    else:
        raise ValueError(f"labels {spec!r}: expected utkface:gender|age, celeba:PATH:ATTRIBUTE or csv:PATH")
    kept = [f for f in files if os.path.basename(f) in table]
    return kept, np.asarray([table[os.path.basename(f)] for f in kept], np.int64), names
