"""Fig. 16: the CIS of one face (Eqs. 1-5) for several occluding patch sizes sz.

Each size gets its own canonical square f (Algorithm 1, line 4, scaled by the
face's height as in the pipeline: `pipeline.geometry.face_canonical_side`). The JSON holds
each map's Spearman correlation with the map of the paper's default size:
larger patches blur the map but should keep its pattern.
"""
from __future__ import annotations

import os

from cms_jax import viz
from cms_jax.figures import common, per_image, stats
from cms_jax.pipeline import RunConfig
from cms_jax.data.image_list import expand_images


def figure(cfg: RunConfig, out_dir: str, sizes: list[int]) -> dict:
    """Write fig16.png (the face, then one CIS per size) and fig16.json.

    Args:
      cfg: model and images; the first image that aligns is used.
      out_dir: output folder.
      sizes: occluding sides in model-input pixels (the paper: 15 at 224; 0 = the default for the model).

    Returns:
      The JSON dict.
    """
    if not sizes or min(sizes) < 0:
        raise ValueError(f"fig16: sizes must be a non-empty list of sides >= 0, got {sizes}")
    fm = per_image.FaceMaps(cfg)
    files = expand_images(cfg.images, cfg.max_images)
    faces, skipped = fm.prepare(files[:10])
    if not faces:
        raise ValueError(f"fig16: no face found among the first images of {cfg.images!r}: {skipped}")
    face = faces[0]
    coverage = {}
    maps, rows = [], []
    target = None
    for sz in sizes:
        d = fm.drops([face], patch_size=sz, targets=target)
        target = d["targets"]  # every size explains the same class
        side = float(d["sides"][0])
        m = fm.cis(d["drops"][0], d["valid"][0], side)
        _, count = fm.cis_unnormalised(d["valid"][0].astype("float32"), d["valid"][0], side)
        coverage[d["patch"]] = count > 0
        maps.append((d["patch"], side, m))
    ref_patch = fm.patch if fm.patch in coverage else maps[0][0]
    ref = next(m for p, _, m in maps if p == ref_patch)
    tiles, titles = [per_image.face_rgb(face)], [common.short_name(face.path)]
    for patch, f, m in maps:
        both = coverage[patch] & coverage[ref_patch]
        rows.append({"patch_size": patch, "canonical_side": float(f),
                     "range": [float(m[coverage[patch]].min()), float(m[coverage[patch]].max())],
                     f"spearman_vs_{ref_patch}": stats.spearman(ref, m, both)})
        tiles.append(viz.overlay(fm.canon.image, m, coverage[patch]))
        titles.append(f"sz = {patch} px")
    common.panels(tiles, titles, os.path.join(out_dir, "fig16.png"),
                  suptitle=f"Fig. 16: {cfg.model}, CIS by patch size (input {fm.model.input_size[0]} px)")
    return common.write_json(os.path.join(out_dir, "fig16.json"), {
        "model": cfg.model, "file": face.path, "class": int(target[0]), "reference_patch": ref_patch,
        "sizes": rows})
