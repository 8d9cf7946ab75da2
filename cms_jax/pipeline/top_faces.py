"""Which images drive a region: for each facial region, the images whose CIS puts the most there.

Ranked from the stored drop vectors alone (`regions.image_region_saliency`:
the mean positive drop over the region's vertices), so 20,000 images cost one
(N, V) x (V, R) product and no map. Only the images shown are read again and
drawn: each photo cropped as the model saw it, with its own CIS reprojected
on it (`render.faces`, Fig. 6d), one colour scale per region.
"""
from __future__ import annotations

import os

import numpy as np

from cms_jax import regions
from cms_jax.pipeline.report_explain import confident, explained_name
from cms_jax.render import colours, faces, panel


def top_faces(files, drops: np.ndarray, valid: np.ndarray, canon, masks: dict[str, np.ndarray], summary: dict, *,
              k: int = 6, size: int = 176, cache_dir=None, targets=None, clean=None) -> tuple[dict[str, dict], list[str]]:
    """The ``k`` images with the most saliency on each region, drawn.

    Args:
      files, drops, valid: the run's ``drops.npz`` columns.
      canon: the run's canonical face; masks: its regions (`regions.region_masks`).
      summary: the run's summary (crop policy, margin, input size, patch, score unit).
      k: images per region; size: thumbnail width in pixels.
      cache_dir: the run's landmark cache.
      targets, clean: drops.npz's explained target index and its clean confidence per image (None:
        not recorded); only confident images are shown (`report_explain.confident`).

    Returns:
      ``({region: {"faces": [{"file", "value", "rgb", "explained", "confidence"} ...], "legend": rgb}},
      notes)``, the first note the selection rule; regions
      without vertices or without an image with positive saliency there are left out.
    """
    crop = faces.CropSpec.from_summary(summary)
    if crop is None or not len(files):
        return {}, ["No example faces: the summary does not record the model's crop."] if len(files) else []
    member = regions.vertex_regions(canon.vertices, masks)
    scores = regions.image_region_saliency(drops, valid, member)
    allowed, rule = confident(clean, summary, k)
    if allowed is not None:
        scores = np.where(allowed[:, None], scores, 0.0)
    picks = dict(zip(masks, regions.top_images(scores, k)))
    shown = sorted({int(i) for idx in picks.values() for i in idx})
    drawn = dict(zip(shown, faces.faces_cis([files[i] for i in shown], drops[shown], valid[shown], canon, crop,
                                            size=size, cache_dir=cache_dir)))
    unit = colours.score_unit(summary)
    out, notes = {}, []

    def about(i):
        return {"explained": explained_name(summary, None if targets is None else int(targets[i])),
                "confidence": None if clean is None else float(clean[i])}

    for name, idx in picks.items():
        ok = [drawn[int(i)] for i in idx if drawn[int(i)].reason is None]
        notes += [f"{os.path.basename(drawn[int(i)].path)}: not shown ({drawn[int(i)].reason})"
                  for i in idx if drawn[int(i)].reason is not None]
        if not ok:
            continue
        scale = colours.joint([colours.fit(f.cis, f.mask, unit=unit) for f in ok])
        out[name] = {"legend": panel.colour_bar(scale, 150, font_scale=0.4)[0], "faces": [
            {"file": f.path, "value": float(scores[int(i), list(masks).index(name)]),
             "rgb": panel.overlay(f.rgb, f.cis, f.mask, scale, alpha=panel.magnitude_alpha(scale, f.cis)),
             **about(int(i))}
            for i, f in zip([i for i in idx if drawn[int(i)].reason is None], ok)]}
    return out, [rule] + sorted(set(notes))
