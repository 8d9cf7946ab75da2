"""Pseudo-labels from a teacher model, for the tasks a dataset does not label (Sec. 4.1.1).

The paper labels CelebA for expression with a FER-2013 model, for head pose
with a 3D fit (PRNet) and for age with DEX, then fine-tunes VGG-Face on those
labels. Here a shipped model plays the teacher on each face, cropped by the
teacher's own policy (the same crops the CMS job would give it):

  expression  the FER-2013 mini-XCEPTION's argmax class (7 classes)
  headpose    FSA-Net's (yaw, pitch) -> one of the paper's 9 bins (`labels.pose_bin`)

``teach`` writes a ``file,label`` CSV that ``load_labels('csv:PATH')`` reads,
plus an ``.npz`` of the teacher's raw outputs (for the record: confidences,
angles) and the reasons for the faces it could not label.
"""
from __future__ import annotations

import csv
import os
from typing import Sequence

import jax
import numpy as np

from cms_jax.train import data, labels

TEACHERS = {"expression": "expression", "headpose": "headpose"}


def outputs(model, faces: data.FaceSet, batch_size: int = 256) -> np.ndarray:
    """The teacher's raw outputs for each crop: (N, K) float32."""
    fwd = jax.jit(model.apply_fn)
    out = []
    for i in range(0, len(faces), batch_size):
        crops = faces.images[i:i + batch_size]
        n = len(crops)
        if n < batch_size:  # one compiled shape: pad the last batch
            crops = np.concatenate([crops, np.repeat(crops[-1:], batch_size - n, axis=0)])
        out.append(np.asarray(fwd(model.params, model.preprocess(crops)))[:n])
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, model.num_outputs), np.float32)


def to_labels(task: str, raw: np.ndarray, class_names: Sequence[str]) -> list[str]:
    """Teacher outputs -> class names: the argmax for expression, the (yaw, pitch) bin for head pose."""
    if task == "expression":
        return [class_names[k] for k in np.argmax(raw, axis=1)]
    if task == "headpose":
        if list(class_names[:2]) != ["yaw", "pitch"]:
            raise ValueError(f"headpose teacher must output yaw, pitch first; it outputs {list(class_names)}")
        names = labels.pose_bin_names()
        return [names[k] for k in labels.pose_bin(raw[:, 0], raw[:, 1])]
    raise ValueError(f"pseudo-label task {task!r}: expected one of {sorted(TEACHERS)}")


def teach(task: str, files: Sequence[str], out_csv: str, *, workers: int = 2, cache_dir: str | None = None,
          model=None) -> dict:
    """Label `files` for `task` with its teacher; writes ``out_csv`` and ``out_csv[:-4] + '.npz'``.

    Args:
      task: 'expression' or 'headpose'.
      files: face images.
      out_csv: the ``file,label`` CSV (base names, class names as labels).
      workers: alignment worker processes.
      cache_dir: landmark cache folder (shared with the CMS runs: alignment does not depend on the model).
      model: the teacher (default: the built-in model `TEACHERS[task]`).

    Returns:
      {'labelled', 'skipped', 'class_counts'}.
    """
    if task not in TEACHERS:
        raise ValueError(f"pseudo-label task {task!r}: expected one of {sorted(TEACHERS)}")
    if model is None:
        from cms_jax.models import load

        model = load(TEACHERS[task])
    faces = data.load_faces(list(files), np.zeros(len(files), np.int64), tuple(model.input_size), mode="align",
                            model=model, workers=workers, cache_dir=cache_dir)
    raw = outputs(model, faces)
    names = to_labels(task, raw, model.class_names)
    os.makedirs(os.path.dirname(os.path.abspath(out_csv)), exist_ok=True)
    with open(out_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label"])
        w.writerows([os.path.basename(p), n] for p, n in zip(faces.files, names))
    np.savez(out_csv[:-4] + ".npz", files=np.asarray([os.path.basename(p) for p in faces.files]), outputs=raw,
             output_names=np.asarray(model.class_names), teacher=model.name,
             skipped=np.asarray([f"{s['file']}\t{s['reason']}" for s in faces.skipped]))
    counts = {n: names.count(n) for n in sorted(set(names))}
    return {"labelled": len(names), "skipped": len(faces.skipped), "class_counts": counts}
