"""The dense occlusion procedure a Keras user would write: the reference for the main job's speed.

For each face, the clean input and one copy per valid vertex with the
official square (`occlusion.square_bounds`, Eqs. 2-3) set to ``fill`` are
built with numpy and scored with ``model.predict_on_batch`` in batches of
1024; the drops follow Eq. 1. Faces, crops and vertex positions are the
project's own (`prepare.prepare_one`, `Scorer.vertices`, ``model.preprocess``),
so the drops must equal the job's: the comparison is of procedures, not of
inputs. TensorFlow is never a dependency of cms_jax: `load` imports it only
when called, and callers report ``TF_MISSING`` when it is absent.
"""
from __future__ import annotations

import os
import time

import jax.numpy as jnp
import numpy as np

from cms_jax import occlusion as occ

TF_MISSING = "n/a: tensorflow not installed"
BATCH = 1024


def keras_file(model: str) -> str | None:
    """The Keras HDF5 file behind a built-in model name or a model path; None for other models."""
    from cms_jax.assets import resolve

    builtin = {"gender": "gender_mini_xception", "expression": "fer2013_mini_xception"}
    if model in builtin:
        return os.fspath(resolve(builtin[model]))
    return model if model.endswith((".h5", ".hdf5")) and os.path.isfile(model) else None


def load(path: str):
    """The Keras model in ``path`` (``tf_keras``, else ``tensorflow.keras``); ImportError without TF."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tf_keras as keras
    except ImportError:
        from tensorflow import keras
    return keras.models.load_model(path, compile=False)


def occluded_copies(x: np.ndarray, boxes: np.ndarray, fill: float) -> np.ndarray:
    """(1 + B, H, W, C): ``x`` itself, then one copy per ``(x1, x2, y1, y2)`` box set to ``fill``."""
    copies = np.repeat(x[None], len(boxes) + 1, axis=0)
    for i, (x1, x2, y1, y2) in enumerate(boxes, start=1):
        copies[i, y1:y2, x1:x2] = fill
    return copies


def keras_drops(predict, x: np.ndarray, xy: np.ndarray, valid: np.ndarray, *, patch_size: int,
                fill: float, mode: str, target: int | None = None,
                batch: int = BATCH) -> tuple[np.ndarray, int, dict[str, float]]:
    """Eq. 1 for one face by the dense procedure: drops at valid vertices, 0 elsewhere.

    Args:
      predict: ``(B, H, W, C) -> (B, K)`` scores, e.g. a Keras model's ``predict_on_batch``.
      x: (H, W, C) float32 preprocessed input.
      xy: (V, 2) vertex positions in input pixels; valid: (V,) bool.
      patch_size, fill: the occluding square's side and value.
      mode: `occlusion.score_mode` of the model ('softmax' or 'raw').
      target: class to score; None = the predicted class.
      batch: copies per ``predict`` call.

    Returns:
      ``(drops (V,) float32, target, {"occlude": s, "predict": s})``.
    """
    t0 = time.perf_counter()
    boxes = occ.square_bounds(xy[valid], patch_size, x.shape[:2])
    copies = occluded_copies(x, boxes, fill)
    t1 = time.perf_counter()
    raw = np.concatenate([np.asarray(predict(copies[s:s + batch])) for s in range(0, len(copies), batch)])
    t2 = time.perf_counter()
    conf = np.asarray(occ.confidences(jnp.asarray(raw), mode))
    target = int(np.argmax(conf[0])) if target is None else int(target)
    drops = np.zeros(len(xy), np.float32)
    drops[valid] = occ.drops_from_confidences(np.full(len(boxes), conf[0, target]), conf[1:, target])
    return drops, target, {"occlude": t1 - t0, "predict": t2 - t1}


def run_reference(predict, scorer, prepared, targets: dict[str, int]) -> tuple[dict, dict[str, float]]:
    """The dense procedure over prepared faces, each scored for the class the job scored.

    Args:
      predict: the Keras model's ``predict_on_batch``.
      scorer: the job's `Scorer` (vertex positions, validity, preprocessing, patch side, fill).
      prepared: `Prepared` items (``reason is None``) with their host ``seconds``.
      targets: file -> class the job scored.

    Returns:
      ``({file: (drops, valid)}, seconds by stage: host (read, decode_align, crop, vertices and
      preprocess), occlude, predict)``.
    """
    model, cfg = scorer.model, scorer.cfg
    mode = occ.score_mode(cfg.score, model.outputs_are_probs, model.output)
    out, secs = {}, {"host": 0.0, "occlude": 0.0, "predict": 0.0}
    for p in prepared:
        t = time.perf_counter()
        xy, valid = scorer.vertices(p.xy, p.z)
        x = model.preprocess(p.crop[None])[0]
        secs["host"] += time.perf_counter() - t + sum(p.seconds.values())
        drops, _, s = keras_drops(predict, x, xy, valid, patch_size=scorer.patch, fill=cfg.fill, mode=mode,
                                  target=targets.get(p.path))
        secs["occlude"] += s["occlude"]
        secs["predict"] += s["predict"]
        out[p.path] = (drops, valid)
    return out, secs
