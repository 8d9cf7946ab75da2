"""What a run leaves behind: cms.npy, cms.png, drops.npz, summary.json (and shards on the way).

``drops.npz`` holds the per-image vertex drops (the canonical representation
of each CIS) with the file names, so the CMS of any subset or group can be
formed later without rescoring. ``cms.png`` is ``cms.npy`` pixel for pixel,
drawn for reading (`cms_jax.render.panel`): colours in the score's units
(diverging about zero when some drops are negative), the facial regions of
the region table outlined, a colour bar inset. Every file goes through
`storage` (a local folder or an object-store URL). The writers are handed the
values they write (a `record.RunRecord`, the sums' arrays, the drops), never
the `Scorer`; `reader` reads the folder back.
"""
from __future__ import annotations

import os
import sys

import cv2
import numpy as np

from cms_jax import regions, storage
from cms_jax.projection import square_coverage
from cms_jax.render import colours, panel

DROP_KEYS = ("files", "drops", "valid", "targets", "clean", "canonical_side")


def write_part(path, result) -> None:
    """One chunk's drops, written atomically (a torn shard is never read)."""
    storage.save_npz(path, files=np.asarray(result.files, dtype=str), drops=result.drops.astype(np.float32),
                     valid=result.valid, targets=result.targets.astype(np.int32),
                     clean=result.clean.astype(np.float32), canonical_side=result.sides.astype(np.float32))


def read_parts(paths: list) -> dict[str, np.ndarray]:
    """Concatenate drop shards in the order given."""
    cols = {k: [] for k in DROP_KEYS}
    for p in paths:
        z = storage.load_npz(p)
        for k in DROP_KEYS:
            cols[k].append(z[k])
    if not paths:
        return {"files": np.zeros(0, str), "drops": np.zeros((0, 0), np.float32),
                "valid": np.zeros((0, 0), bool), "targets": np.zeros(0, np.int32),
                "clean": np.zeros(0, np.float32), "canonical_side": np.zeros(0, np.float32)}
    return {k: np.concatenate(v) for k, v in cols.items()}


def side_summary(sides) -> dict | None:
    """min, median and max of a run's per-image canonical sides (None without an image)."""
    sides = np.asarray(sides, np.float64)
    if not sides.size:
        return None
    return {"min": float(sides.min()), "median": float(np.median(sides)), "max": float(sides.max())}


def summary(record, fidelity, *, images_done: int, total: int, skipped: list[dict], seconds: float,
            sides=()) -> dict:
    """The run's summary.json: settings, counts, speed, and how the drops were computed.

    Args:
      record: the run's `RunRecord` (config, canonical face, model and backend facts).
      fidelity: the run's `scoring.backend.Fidelity` (its `summary_fields`).
      images_done: images accumulated (Eq. 6's N); total: images in the list; skipped: with reasons.
      seconds: wall seconds of the run; sides: the scored images' canonical sides.

    ``forward`` is 'dense' or 'incremental', ``dtype`` the compute dtype; bfloat16 runs add
    ``bf16_fidelity``, the Pearson correlation of their drops with float32 drops of the first
    scored chunk (None when no chunk was scored in this process's run); ``approx_tau`` < 1 runs add
    ``approx_fidelity`` (Pearson and max |diff| against exact float32 drops, the same chunk). ``canonical_side``
    gives min, median and max of the scored images' canonical sides ``sides`` (all equal for
    ``loose`` and ``tight`` crops; per image in drops.npz).
    """
    cfg = record.cfg
    return {
        "model": cfg.model,
        **record.model,
        "patch_size": int(record.patch_size),
        "canonical_side": side_summary(sides),
        "score": cfg.score,
        "reduce": cfg.reduce,
        "forward": record.forward,
        **({"onnx_backend_probe": record.backend_probe} if record.backend_probe else {}),
        **({"forward_note": record.forward_note} if record.forward_note else {}),
        "dtype": cfg.dtype,
        **fidelity.summary_fields(cfg.dtype, cfg.approx_tau),
        "vertices": int(record.canon.vertices.shape[0]),
        "subdivision": cfg.subdivision,
        "visibility": cfg.visibility,
        "canvas": list(record.canon.canvas_hw),
        "images_total": int(total),
        "images_done": int(images_done),
        "images_skipped": skipped,
        "seconds": round(float(seconds), 3),
        "faces_per_second": round(images_done / seconds, 3) if seconds > 0 else 0.0,
        "config": cfg.to_dict(),
        "fingerprint": cfg.fingerprint(),
        "argv": list(sys.argv),  # the command line of this process (the report shows it)
        "cwd": os.getcwd(),
        "model_classes": list(record.classes),  # the report's names of the explained targets
        "assets": os.environ.get("CMS_JAX_ASSETS"),  # the report's Reproduce line sets it again
    }


def region_edges(canon) -> np.ndarray | None:
    """Outlines of the facial regions of the region table on the canvas (None off a MediaPipe face)."""
    if canon.num_vertices < 468 or not canon.name.startswith("mediapipe"):
        return None
    return panel.label_edges(regions.region_masks(canon.vertices[:468], canon.canvas_hw))


def render_cms(cms: np.ndarray, canon, count_mask: np.ndarray | None = None, unit: str = "") -> np.ndarray:
    """The CMS over the canonical face (canvas size): colours in ``unit``, outlines, colour bar."""
    mask = count_mask if count_mask is not None else np.ones_like(cms, bool)
    scale = colours.fit(cms, mask, unit=unit)
    return panel.map_panel(canon.image, cms, mask, scale, edges=region_edges(canon))


def save_png(dest, rgb: np.ndarray) -> None:
    """A uint8 RGB image as PNG, through `storage`."""
    ok, data = cv2.imencode(".png", np.ascontiguousarray(np.asarray(rgb, np.uint8)[..., ::-1]))
    if not ok:
        raise OSError(f"could not encode PNG {dest}")
    storage.write_bytes(dest, data.tobytes())


def write_final(out_dir, cms: np.ndarray, canon, drops: dict[str, np.ndarray], summary_: dict) -> dict:
    """Write cms.npy, cms.png, drops.npz (rows in the run's image order) and summary.json.

    ``cms`` is the run's CMS (Eq. 6) on ``canon``'s canvas; cms.png shows it where some vertex
    square reaches at the images' canonical sides (N > 0 in Eq. 5). drops.npz holds `DROP_KEYS`
    (``canonical_side``: float32 (N,), each image's canonical square side f_i) and ``canon_xy``
    (V, 2), the canonical vertices.
    """
    out = storage.path(out_dir)
    cms = np.asarray(cms, np.float32)
    storage.save_npy(out / "cms.npy", cms)
    coverage = square_coverage(canon.vertices, canon.canvas_hw, drops["canonical_side"])
    save_png(out / "cms.png", render_cms(cms, canon, coverage, colours.score_unit(summary_)))
    storage.save_npz(out / "drops.npz", canon_xy=canon.vertices.astype(np.float32), **drops)
    write_summary(out_dir, summary_)
    return summary_


def write_summary(out_dir, summary_: dict) -> None:
    """summary.json, through `storage`."""
    storage.write_json(storage.path(out_dir) / "summary.json", summary_)
