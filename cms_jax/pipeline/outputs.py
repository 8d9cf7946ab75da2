"""What a run leaves behind: cms.npy, cms.png, drops.npz, summary.json (and shards on the way).

``drops.npz`` holds the per-image vertex drops (the canonical representation
of each CIS) with the file names, so the CMS of any subset or group can be
formed later without rescoring. ``cms.png`` is ``cms.npy`` pixel for pixel,
drawn for reading (`cms_jax.render.panel`): colours in the score's units
(diverging about zero when some drops are negative), the facial regions of
the region table outlined, a colour bar inset. Every file goes through
`storage` (a local folder or an object-store URL).
"""
from __future__ import annotations

import os
import sys

import cv2
import numpy as np

from cms_jax import regions, storage
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


def side_summary(sides) -> dict | None:
    """min, median and max of a run's per-image canonical sides (None without an image)."""
    sides = np.asarray(sides, np.float64)
    if not sides.size:
        return None
    return {"min": float(sides.min()), "median": float(np.median(sides)), "max": float(sides.max())}


def summary(cfg, scorer, *, total: int, skipped: list[dict], seconds: float, sides=()) -> dict:
    """The run's summary.json: settings, counts, speed, and how the drops were computed.

    ``forward`` is 'dense' or 'incremental', ``dtype`` the compute dtype; bfloat16 runs add
    ``bf16_fidelity``, the Pearson correlation of their drops with float32 drops of the first
    scored chunk (None when no chunk was scored in this process's run); ``approx_tau`` < 1 runs add
    ``approx_fidelity`` (Pearson and max |diff| against exact float32 drops, the same chunk). ``canonical_side``
    gives min, median and max of the scored images' canonical sides ``sides`` (all equal for
    ``loose`` and ``tight`` crops; per image in drops.npz).
    """
    images_done, backend = scorer.sums.count, scorer.backend
    extra = {"bf16_fidelity": backend.bf16_fidelity} if cfg.dtype == "bfloat16" else {}
    if cfg.approx_tau < 1.0:
        extra["approx_fidelity"] = backend.approx_fidelity
    return {
        "model": cfg.model,
        "model_name": scorer.model.name,
        "model_input": list(scorer.model.input_size),
        "model_output": scorer.model.output,
        **({"model_card": scorer.model.card_note} if getattr(scorer.model, "card_note", "") else {}),
        "crop_policy": scorer.model.crop_policy,
        "crop_margin": float(scorer.model.crop_margin),
        "patch_size": int(scorer.patch),
        "canonical_side": side_summary(sides),
        "score": cfg.score,
        "reduce": cfg.reduce,
        "forward": backend.forward,
        **({"onnx_backend_probe": scorer.backend_probe} if getattr(scorer, "backend_probe", None) else {}),
        **({"forward_note": backend.forward_note} if backend.forward_note else {}),
        "dtype": cfg.dtype,
        **extra,
        "vertices": scorer.geometry.num_vertices,
        "subdivision": cfg.subdivision,
        "visibility": cfg.visibility,
        "canvas": list(scorer.canon.canvas_hw),
        "images_total": int(total),
        "images_done": images_done,
        "images_skipped": skipped,
        "seconds": round(float(seconds), 3),
        "faces_per_second": round(images_done / seconds, 3) if seconds > 0 else 0.0,
        "config": cfg.to_dict(),
        "fingerprint": cfg.fingerprint(),
        "argv": list(sys.argv),  # the command line of this process (the report shows it)
        "cwd": os.getcwd(),
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


def write_final(out_dir, scorer, drops: dict[str, np.ndarray], summary_: dict) -> dict:
    """Write cms.npy, cms.png, drops.npz (rows in the run's image order) and summary.json.

    drops.npz holds `DROP_KEYS` (``canonical_side``: float32 (N,), each image's canonical square
    side f_i) and ``canon_xy`` (V, 2), the canonical vertices.
    """
    out = storage.path(out_dir)
    cms = scorer.sums.cms().astype(np.float32)
    storage.save_npy(out / "cms.npy", cms)
    coverage = scorer.geometry.coverage(drops["canonical_side"])
    save_png(out / "cms.png", render_cms(cms, scorer.canon, coverage, colours.score_unit(summary_)))
    storage.save_npz(out / "drops.npz", canon_xy=scorer.canon.vertices.astype(np.float32), **drops)
    write_summary(out_dir, summary_)
    return summary_


def write_summary(out_dir, summary_: dict) -> None:
    storage.write_json(storage.path(out_dir) / "summary.json", summary_)
