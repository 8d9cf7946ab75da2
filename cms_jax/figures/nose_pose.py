"""Sec. 5.3 / Fig. 17 measurements: where the nose tip sits in the face, pose per face, close-ups.

The paper argues that the quadrant of the face holding the nose tip tells the
head pose (9 yaw x pitch bins). The measure here: the nose tip's (MediaPipe
landmark 1) offset from the centre of the 468-landmark box, divided by the
box's half width and half height (about -1..1 per axis, free of scale and
translation, so crop pixels and image pixels give the same value); and a
nearest-centroid classifier of the bins from that 2-D offset.
"""
from __future__ import annotations

import hashlib
import os
import types

import cv2
import jax
import numpy as np


NOSE_TIP = 1  # MediaPipe face mesh: the tip of the nose (pronasale)


def nose_offset(xy: np.ndarray) -> np.ndarray:
    """(468, 2) landmarks -> (2,) nose-tip offset from the landmark box centre over its half sides."""
    xy = np.asarray(xy, np.float64)
    lo, hi = xy.min(0), xy.max(0)
    half = np.maximum((hi - lo) / 2.0, 1e-6)
    return ((xy[NOSE_TIP] - (lo + hi) / 2.0) / half).astype(np.float32)


def closeup(rgb: np.ndarray, xy: np.ndarray, scale: float = 0.4, out: int = 96) -> np.ndarray:
    """uint8 (out, out, 3) square around the nose tip, side ``scale`` x the landmark box's longer side."""
    xy = np.asarray(xy, np.float64)
    side = max(2, int(round(scale * float(np.ptp(xy, axis=0).max()))))
    patch = cv2.getRectSubPix(np.ascontiguousarray(rgb), (side, side), tuple(float(v) for v in xy[NOSE_TIP]))
    return cv2.resize(patch, (out, out), interpolation=cv2.INTER_AREA if side > out else cv2.INTER_LINEAR)


def _predict(offsets: np.ndarray, cents: list) -> np.ndarray:
    """The bin of the nearest centroid (bins without a centroid never predicted)."""
    have = [b for b, c in enumerate(cents) if c is not None]
    c = np.stack([cents[b] for b in have])
    return np.asarray(have)[((offsets[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)]


def _centroids(offsets: np.ndarray, bins: np.ndarray, train: np.ndarray, num_bins: int) -> list:
    return [offsets[train & (bins == b)].mean(0) if (train & (bins == b)).any() else None for b in range(num_bins)]


def uncertainty(offsets: np.ndarray, pose: np.ndarray, bins: np.ndarray, test: np.ndarray, *,
                draws: int = 2000, seed: int = 0) -> dict:
    """95% CIs of Fig. 17's numbers, and the classifier against the majority rule on the same faces.

    The correlations (offset x vs yaw, y vs pitch) are resampled over all faces (percentile
    bootstrap); the accuracies over the held-out faces, the centroids kept (the classifier is
    fixed, its test set resampled); the classifier and "always the majority training bin" are
    compared face by face with McNemar's exact test (`figures.paired`).

    Returns:
      ``{"n", "n_test", "offset_x_vs_yaw", "offset_y_vs_pitch": {"value", "ci"}, "accuracy",
      "accuracy_yaw_bin", "accuracy_pitch_bin": {"mean", "ci", "n"}, "vs_majority": paired}``.
    """
    from cms_jax.figures import stats
    from cms_jax.figures.paired import bootstrap_mean, paired

    offsets, pose = np.asarray(offsets, np.float64), np.asarray(pose, np.float64)
    bins, test = np.asarray(bins), np.asarray(test, bool)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(bins), (draws, len(bins)))
    out = {"n": int(len(bins)), "n_test": int(test.sum()), "draws": draws}
    for key, a, b in (("offset_x_vs_yaw", 0, 0), ("offset_y_vs_pitch", 1, 1)):
        r = [stats.pearson(offsets[i, a], pose[i, b]) for i in idx]
        out[key] = {"value": stats.pearson(offsets[:, a], pose[:, b]),
                    "ci": [float(np.percentile(r, 2.5)), float(np.percentile(r, 97.5))]}
    if test.any() and (~test).any():
        pred = _predict(offsets[test], _centroids(offsets, bins, ~test, 9))
        truth = bins[test]
        majority = np.bincount(bins[~test], minlength=9).argmax()
        right = (pred == truth).astype(np.float64)
        out["accuracy"] = bootstrap_mean(right, draws=draws, seed=seed)
        out["accuracy_yaw_bin"] = bootstrap_mean((pred % 3 == truth % 3).astype(np.float64), draws=draws, seed=seed)
        out["accuracy_pitch_bin"] = bootstrap_mean((pred // 3 == truth // 3).astype(np.float64), draws=draws,
                                                   seed=seed)
        out["vs_majority"] = paired(right, (truth == majority).astype(np.float64), binary=True, draws=draws,
                                    seed=seed)
    return out


def nearest_centroid(offsets: np.ndarray, bins: np.ndarray, test: np.ndarray, num_bins: int = 9) -> dict:
    """Nearest-centroid classification of ``bins`` from ``offsets``: centroids on ~test, accuracy on test.

    Args:
      offsets: (N, D) features.
      bins: (N,) int classes.
      test: (N,) bool, the held-out faces.
      num_bins: classes; those without a training face get no centroid.

    Returns:
      dict: accuracy (None without a test face or a centroid), majority_rate (test faces in the most
      common training bin), n_train, n_test, centroids (num_bins x D, None where no training face),
      confusion (num_bins x num_bins counts, rows true, columns predicted); for the 9 pose bins
      (class = 3 x pitch bin + yaw bin) also accuracy_yaw_bin and accuracy_pitch_bin, each axis alone.
    """
    offsets, bins, test = np.asarray(offsets, np.float64), np.asarray(bins), np.asarray(test, bool)
    train = ~test
    cents = _centroids(offsets, bins, train, num_bins)
    have = [b for b in range(num_bins) if cents[b] is not None]
    out = {"n_train": int(train.sum()), "n_test": int(test.sum()), "accuracy": None, "majority_rate": None,
           "centroids": [None if c is None else c.tolist() for c in cents],
           "confusion": np.zeros((num_bins, num_bins), np.int64).tolist()}
    if not have or not test.any():
        return out
    pred = _predict(offsets[test], cents)
    conf = np.zeros((num_bins, num_bins), np.int64)
    np.add.at(conf, (bins[test], pred), 1)
    majority = np.bincount(bins[train], minlength=num_bins).argmax()
    out.update(accuracy=float((pred == bins[test]).mean()), majority_rate=float((bins[test] == majority).mean()),
               confusion=conf.tolist())
    if num_bins == 9:
        out.update(accuracy_yaw_bin=float((pred % 3 == bins[test] % 3).mean()),
                   accuracy_pitch_bin=float((pred // 3 == bins[test] // 3).mean()))
    return out


def hash_order(files) -> list[int]:
    """Indices of ``files`` sorted by the SHA-1 of their base names: a stable pseudo-random order.

    Not MD5: `cms_jax.train.data.is_validation` splits by the MD5, and a sample taken in MD5 order
    would all fall on one side of that split.
    """
    keys = [hashlib.sha1(os.path.basename(str(f)).encode()).hexdigest() for f in files]
    return sorted(range(len(keys)), key=keys.__getitem__)


def predict_pose(model, crops: np.ndarray, batch: int = 64) -> np.ndarray:
    """(N, 3) yaw, pitch, roll (degrees) of uint8 crops at the model's input size, in fixed-size batches."""
    fn = jax.jit(model.apply_fn)
    out = []
    for i in range(0, len(crops), batch):
        sl = np.arange(i, i + batch).clip(max=len(crops) - 1)  # pad by repeating: one compiled shape
        out.append(np.asarray(fn(model.params, model.preprocess(crops[sl])))[:min(batch, len(crops) - i)])
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 3), np.float32)


def closeup_model(model, size: int = 256):
    """What `FacePreparer` reads of a model (input size, crop policy and margin), at ``size`` pixels:
    the same crop box as the model's, sharper, for the close-ups."""
    return types.SimpleNamespace(input_size=(size, size), crop_policy=model.crop_policy,
                                 crop_margin=model.crop_margin)

