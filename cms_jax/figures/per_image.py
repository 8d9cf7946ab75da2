"""Per-image maps for Figs. 6, 14 and 16: occlusion map, CIS (Eqs. 1-5), CMS reprojected (Fig. 6d).

Faces are aligned and cropped by the pipeline's `FacePreparer` and scored by
its `Scorer` (model, canonical face, occlusion engine), so these maps are the
very ones a CMS run averages.
"""
from __future__ import annotations

import numpy as np

from cms_jax.baselines.grid_occlusion import grid_occlusion
from cms_jax.pipeline.prepare import FacePreparer, Prepared
from cms_jax.pipeline.scoring import Scorer, face_canonical_side
from cms_jax.projection import canonical_map, reproject, sample_at, splat


def prepare_faces(scorer: Scorer, paths: list[str], workers: int = 0,
                  cache_dir: str | None = None) -> tuple[list[Prepared], list[dict]]:
    """Aligned model-size crops of ``paths``; returns (prepared faces, skipped files with reasons)."""
    good, skipped = [], []
    preparer = FacePreparer(scorer.model, workers=workers, cache_dir=cache_dir)
    try:
        for p in preparer.imap(paths):
            if p.reason is not None:
                skipped.append({"file": p.path, "reason": p.reason})
            else:
                good.append(p)
    finally:
        preparer.close()
    return good, skipped


def vertex_drops(scorer: Scorer, faces: list[Prepared], patch_size: int = 0,
                 targets: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Eq. 1 at every visible vertex of each face.

    Args:
      scorer: the run's scorer.
      faces: prepared crops.
      patch_size: occluding side in input pixels (0 = the scorer's).
      targets: (N,) class per face (None = predicted).

    Returns:
      dict of drops (N, V), valid (N, V), xy (N, V, 2) crop pixels, targets (N,), clean (N,),
      patch (the side used) and f (its canonical side).
    """
    if not faces:
        raise ValueError("vertex_drops: no face to score")
    pairs = [scorer.vertices(p.xy, p.z) for p in faces]
    xy, valid = np.stack([a for a, _ in pairs]), np.stack([b for _, b in pairs])
    x = scorer.model.preprocess(np.stack([p.crop for p in faces]))
    patch = patch_size or scorer.patch
    res = scorer.engine.run(x, xy, valid=valid, targets=targets, patch_size=patch, fill=scorer.cfg.fill)
    return {"drops": res.drops, "valid": res.valid, "xy": xy, "targets": res.targets, "clean": res.clean,
            "patch": int(patch), "f": face_canonical_side(patch, scorer.model, scorer.canon)}


def cis(scorer: Scorer, drops: np.ndarray, valid: np.ndarray, f: float | None = None) -> np.ndarray:
    """Eqs. 4-5: one face's drops splatted on the canonical face and count-normalised."""
    return canonical_map(drops, scorer.canon.vertices, scorer.canon.canvas_hw, f or scorer.f, valid)


def cis_unnormalised(scorer: Scorer, drops: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 4 alone: (P*, N) of one face's drops on the canonical face."""
    return splat(drops, scorer.canon.vertices, scorer.canon.canvas_hw, scorer.f, valid)


def occlusion_map(scorer: Scorer, face: Prepared, target: int | None = None, stride: int = 0) -> np.ndarray:
    """Zeiler & Fergus occlusion map of one crop in image space (Section 2, Fig. 6a).

    The square side is the run's patch; the stride defaults to half of it.
    """
    m = scorer.model
    x = m.preprocess(face.crop[None])
    t = None if target is None else np.asarray([target], np.int32)
    softmax = scorer.cfg.score == "prob" and not m.outputs_are_probs and m.output == "classes"
    out = grid_occlusion(m.apply_fn, m.params, x, t, patch=int(scorer.patch),
                         stride=int(stride or max(1, scorer.patch // 2)), fill=float(scorer.cfg.fill),
                         softmax=softmax)
    return np.asarray(out[0], np.float32)


def reprojected_cms(scorer: Scorer, cms: np.ndarray, xy: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fig. 6d: the CMS read at the canonical vertices and splatted on the face's own vertices."""
    values = sample_at(cms, scorer.canon.vertices)
    return reproject(values, xy, tuple(scorer.model.input_size), scorer.patch, valid)


def face_rgb(face: Prepared) -> np.ndarray:
    """The crop as uint8 RGB (what the model saw, before normalisation)."""
    return np.asarray(face.crop, np.uint8)


def image_mask(scorer: Scorer, xy: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """bool (H, W) of the crop pixels some visible vertex square reaches (where a reprojection is defined)."""
    ones = np.ones(len(xy), np.float32)
    return splat(ones, xy, tuple(scorer.model.input_size), scorer.patch, valid)[1] > 0
