"""Fig. 1: the CMS (Eq. 6) of each face-task model side by side, over the same images.

One pipeline run per model (in ``out_dir/<name>``, reused when finished);
the landmark cache is shared, since alignment does not depend on the model.
A model whose files are absent is reported as skipped, not fatal. The JSON
gives each map's share per facial region (`cms_jax.regions`) and its peak.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from cms_jax import regions
from cms_jax.figures import common
from cms_jax.pipeline import RunConfig

DEFAULT_MODELS = ("gender", "expression", "headpose_bins", "age_bins")


def peak_region(cms: np.ndarray, masks: dict[str, np.ndarray], covered: np.ndarray,
                top: float = 0.02) -> dict[str, float]:
    """Where the top ``top`` fraction of the ``covered`` pixels of a map lie: % of them per region."""
    vals = cms[covered]
    if vals.size == 0:
        return {k: 0.0 for k in masks}
    thr = np.quantile(vals, 1.0 - top)
    hot = covered & (cms >= thr)
    return {k: 100.0 * float((hot & m).sum()) / max(int(hot.sum()), 1) for k, m in masks.items()}


def figure(base: RunConfig, out_dir: str, *, model_names=DEFAULT_MODELS, extra: dict[str, str] | None = None,
           workers: int = 2, align_cache: str | None = None) -> dict:
    """Write fig01.png (one CMS per model) and fig01.json.

    Args:
      base: the run settings shared by all models (images, max_images, canvas, ...); its model is ignored.
      out_dir: output folder; each model's run goes to ``out_dir/<name>``.
      model_names: built-in model names.
      extra: more models as {title: path} (e.g. VGG-Face or a fine-tuned VGG checkpoint).
      workers: host processes for alignment.
      align_cache: landmark cache folder shared by the runs (default ``out_dir/align_cache``).

    Returns:
      The JSON dict.
    """
    todo = [(n, n) for n in model_names] + list((extra or {}).items())
    if not todo:
        raise ValueError("fig01: no model given")
    cache = align_cache or os.path.join(out_dir, "align_cache")
    tiles, titles, done, skipped = [], [], {}, {}
    masks = None
    for title, model in todo:
        cfg = dataclasses.replace(base, model=model)
        try:
            run = common.run_or_reuse(cfg, os.path.join(out_dir, title), workers=workers, align_cache=cache)
        except Exception as e:  # an absent or unloadable model is reported, the others still drawn
            skipped[title] = f"{type(e).__name__}: {e}"
            print(f"fig01: {title} skipped: {skipped[title]}", flush=True)
            continue
        if masks is None:
            masks = regions.region_masks(run.canon.vertices[:468], run.canon.canvas_hw)
        tiles.append(common.cms_tile(run))
        titles.append(f"{title} ({run.summary['images_done']} faces)")
        done[title] = {"model": model, "run_dir": run.out_dir, "images_done": run.summary["images_done"],
                       "images_skipped": len(run.summary["images_skipped"]),
                       "cms_range": [float(run.cms[run.coverage].min()), float(run.cms[run.coverage].max())],
                       "region_shares": regions.region_shares(run.cms, masks),
                       "top2pct_pixels_by_region": peak_region(run.cms, masks, run.coverage)}
    if not tiles:
        raise RuntimeError(f"fig01: every model failed: {skipped}")
    common.panels(tiles, titles, os.path.join(out_dir, "fig01.png"),
                  suptitle="Fig. 1: CMS per face task (red high)")
    return common.write_json(os.path.join(out_dir, "fig01.json"), {
        "images": base.images, "max_images": base.max_images, "models": done, "skipped": skipped,
        "panels": len(tiles)})
