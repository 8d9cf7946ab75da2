"""Fig. 17: close-ups of the nose tip for each of the 9 head-pose bins (3 x 3, top-left to bottom-right).

The pose comes from the head-pose model (FSA-Net, `cms_jax.models.load("headpose")`:
yaw, pitch, roll in degrees) on the pipeline's aligned crops
(`cms_jax.data.prepare.FacePreparer`), binned by `cms_jax.train.labels.pose_bin`
(row = pitch bin, column = yaw bin, so cell i is class i). Each cell shows ``k``
close-ups around the nose tip, the first faces of the bin in file-name-hash
order (a stable random pick), cut from a 256-pixel crop of the same box the
model sees. fig17.json holds per bin the count, mean yaw / pitch / roll and
mean nose-tip offset (`cms_jax.figures.nose_pose.nose_offset`), and the
nearest-centroid check of the paper's claim that the nose tip's quadrant tells
the pose (train / test split by file-name hash, `cms_jax.train.data.is_validation`).
"""
from __future__ import annotations

import collections
import os

import numpy as np

from cms_jax import models, viz
from cms_jax.figures import common, stats
from cms_jax.figures.nose_pose import closeup, closeup_model, hash_order, nearest_centroid, nose_offset, predict_pose, uncertainty
from cms_jax.data.image_list import expand_images
from cms_jax.data.prepare import FacePreparer
from cms_jax.train.data import is_validation
from cms_jax.models.outputs import PITCH_EDGES, YAW_EDGES, pose_bin_names
from cms_jax.train.labels import pose_bin


def measure(model, files: list[str], workers: int, cache: str, chunk: int = 256) -> tuple[dict, list]:
    """Pose (N, 3) and nose offsets (N, 2) of the files that align; (arrays with 'files', skipped)."""
    kept, poses, offsets, crops, skipped = [], [], [], [], []
    prep = FacePreparer(model, workers=workers, cache_dir=cache)
    try:
        for p in prep.imap(files):
            if p.reason is not None:
                skipped.append({"file": p.path, "reason": p.reason})
                continue
            kept.append(p.path)
            offsets.append(nose_offset(p.xy))
            crops.append(p.crop)
            if len(crops) == chunk:
                poses.append(predict_pose(model, np.stack(crops)))
                crops = []
    finally:
        prep.close()
    if crops:
        poses.append(predict_pose(model, np.stack(crops)))
    pose = np.concatenate(poses) if poses else np.zeros((0, 3), np.float32)
    return {"files": kept, "pose": pose, "offset": np.asarray(offsets, np.float32).reshape(-1, 2)}, skipped


def closeups(model, files: list[str], cache: str, scale: float, size: int = 96) -> dict[str, np.ndarray]:
    """file -> nose close-up, from a sharper crop of the model's own box (landmarks from the cache)."""
    out = {}
    prep = FacePreparer(closeup_model(model), workers=0, cache_dir=cache)
    try:
        for p in prep.imap(files):
            if p.reason is None:
                out[p.path] = closeup(p.crop, p.xy, scale, size)
    finally:
        prep.close()
    return out


def cell(tiles: list[np.ndarray], k: int, size: int = 96) -> np.ndarray:
    """One bin's close-ups as a mosaic of ``k`` slots (white where the bin has fewer faces)."""
    blank = np.full((size, size, 3), 255, np.uint8)
    return viz.grid((list(tiles) + [blank] * k)[:k], cols=int(np.ceil(np.sqrt(k))))
def _axis_names(label: str, edges) -> list[str]:
    return [f"{label} < {edges[0]:g}", f"{edges[0]:g} ≤ {label} < {edges[1]:g}", f"{label} ≥ {edges[1]:g}"]


def _scatter(offsets: np.ndarray, bins: np.ndarray, result: dict, path: str) -> None:
    """The nose-tip offsets coloured by pose bin, with the training centroids (the classifier's view)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for b in range(9):
        sel = bins == b
        if sel.any():
            ax.scatter(offsets[sel, 0], offsets[sel, 1], s=6, color=plt.cm.tab10(b), label=f"bin {b}")
        c = result["centroids"][b]
        if c is not None:
            ax.scatter([c[0]], [c[1]], s=120, marker="X", color=plt.cm.tab10(b), edgecolor="black")
    ax.invert_yaxis()  # image rows: down is positive
    ax.set_xlabel("nose tip x offset / half box width")
    ax.set_ylabel("nose tip y offset / half box height")
    acc = result["accuracy"]
    ax.set_title(f"Fig. 17 check: nearest centroid accuracy "
                 f"{'n/a' if acc is None else f'{acc:.2f}'} (majority {result['majority_rate'] or 0:.2f})",
                 fontsize=9)
    ax.legend(fontsize=6, markerscale=2, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100, facecolor="white")
    plt.close(fig)


def figure(images: str, out_dir: str, *, max_images: int = 0, sample_by_hash: bool = False, k: int = 4,
           model: str = "headpose", workers: int = 2, align_cache: str | None = None,
           test_fraction: float = 0.3, scale: float = 0.4) -> dict:
    """Write fig17.png (3 x 3 cells of nose close-ups), fig17_offsets.png, fig17.json, fig17_faces.npz.

    Args:
      images: folder, glob, .txt list or comma-separated images.
      out_dir: output folder.
      max_images: use N images (0 = all): the first of the sorted list, or with ``sample_by_hash``
        the first in file-name-hash order (a stable random sample: sorted lists run by age in UTKFace).
      k: close-ups per bin.
      model: a head-pose model whose outputs 0 and 1 are yaw and pitch in degrees.
      workers: host processes for alignment.
      align_cache: landmark cache folder (default ``out_dir/align_cache``).
      test_fraction: share of the faces (by file-name hash) held out to test the classifier.
      scale: close-up side as a fraction of the landmark box's longer side.

    Returns:
      The JSON dict.
    """
    m = models.load(model)
    if m.output != "regression" or tuple(m.class_names[:2]) != ("yaw", "pitch"):
        raise ValueError(f"fig17: {model} must output yaw, pitch (degrees), got {m.output} {m.class_names}")
    files = expand_images(images)
    if max_images:
        files = [files[i] for i in sorted(hash_order(files)[:max_images])] if sample_by_hash else files[:max_images]
    cache = align_cache or os.path.join(out_dir, "align_cache")
    d, skipped = measure(m, files, workers, cache)
    if not d["files"]:
        raise ValueError(f"fig17: no face found in {images!r}: {skipped[:5]}")
    bins = pose_bin(d["pose"][:, 0], d["pose"][:, 1], YAW_EDGES, PITCH_EDGES)
    test = is_validation(d["files"], test_fraction)
    clf = nearest_centroid(d["offset"], bins, test)
    order = hash_order(d["files"])
    shown = {b: [d["files"][i] for i in order if bins[i] == b][:k] for b in range(9)}
    ups = closeups(m, [f for b in range(9) for f in shown[b]], cache, scale)
    yaw_n, pitch_n = _axis_names("yaw", YAW_EDGES), _axis_names("pitch", PITCH_EDGES)
    tiles, titles, rows = [], [], []
    for b, name in enumerate(pose_bin_names(YAW_EDGES, PITCH_EDGES)):
        sel = bins == b
        pose, off = d["pose"][sel], d["offset"][sel]
        mean = pose.mean(0).tolist() if sel.any() else [None] * 3
        rows.append({"bin": b, "name": name, "count": int(sel.sum()), "mean_yaw": mean[0], "mean_pitch": mean[1],
                     "mean_roll": mean[2], "mean_offset": off.mean(0).tolist() if sel.any() else None,
                     "std_offset": off.std(0).tolist() if sel.any() else None, "shown": shown[b]})
        tiles.append(cell([ups[f] for f in shown[b] if f in ups], k))
        titles.append(f"{pitch_n[b // 3]}, {yaw_n[b % 3]}\n{int(sel.sum())} faces"
                      + (f", mean yaw {mean[0]:+.0f}, pitch {mean[1]:+.0f}" if sel.any() else ""))
    common.panels(tiles, titles, os.path.join(out_dir, "fig17.png"), cols=3, size=3.2,
                  suptitle=f"Fig. 17: nose tip close-ups per head-pose bin ({model}, {len(d['files'])} faces)")
    _scatter(d["offset"], bins, clf, os.path.join(out_dir, "fig17_offsets.png"))
    np.savez_compressed(os.path.join(out_dir, "fig17_faces.npz"), files=np.asarray(d["files"]), pose=d["pose"],
                        offset=d["offset"], bins=bins, test=test)
    reasons = collections.Counter(s["reason"] for s in skipped)
    return common.write_json(os.path.join(out_dir, "fig17.json"), {
        "model": model, "images": images, "files": len(files), "faces": len(d["files"]),
        "skipped": dict(reasons), "yaw_edges": YAW_EDGES, "pitch_edges": PITCH_EDGES, "k": k,
        "closeup_scale": scale, "bins": rows,
        "correlation": {"offset_x_vs_yaw": stats.pearson(d["offset"][:, 0], d["pose"][:, 0]),
                        "offset_y_vs_pitch": stats.pearson(d["offset"][:, 1], d["pose"][:, 1])},
        "nearest_centroid": {"test_fraction": test_fraction, **clf},
        "uncertainty": uncertainty(d["offset"], d["pose"], bins, test),
        "offset_note": ("nose tip (MediaPipe 1) minus the centre of the 468-landmark box, over the box's "
                        "half width (x) and half height (y); image axes, y down")})
