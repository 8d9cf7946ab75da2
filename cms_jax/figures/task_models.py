"""The CMS (Eq. 6) of several models side by side over the same images: Fig. 1 (one model per
face task, `tasks`) and Fig. 11 (several off-the-shelf gender models).

One pipeline run per model over the same images (in ``out_dir/<title>``, reused
when finished), one shared landmark cache, a model that fails to load reported
as skipped. Models are built-in
names or paths `cms_jax.models.load` reads. The JSON adds how alike the models'
maps are: the Pearson and Spearman correlation of every pair of CMS maps over
the canonical pixels both cover (the square side f depends on the model's input
size and crop, so coverage differs), and each map's share and area-relative
density of saliency per facial region (`cms_jax.regions.shares_table`, densities over the
pixels every model covers).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re

import numpy as np

from cms_jax import regions
from cms_jax.figures import common, stats
from cms_jax.models.card import CARD_FILE
from cms_jax.pipeline import RunConfig


def peak_region(cms: np.ndarray, masks: dict[str, np.ndarray], covered: np.ndarray,
                top: float = 0.02) -> dict[str, float]:
    """Where the top ``top`` fraction of the ``covered`` pixels of a map lie: % of them per region."""
    vals = cms[covered]
    if vals.size == 0:
        return {k: 0.0 for k in masks}
    thr = np.quantile(vals, 1.0 - top)
    hot = covered & (cms >= thr)
    return {k: 100.0 * float((hot & m).sum()) / max(int(hot.sum()), 1) for k, m in masks.items()}


def _title(model: str) -> str:
    card = os.path.join(model, CARD_FILE)
    if os.path.isfile(card):  # a converted or fine-tuned dir (often just '.../model'): its card's name
        with open(card) as fh:
            name = json.load(fh).get("name")
        if name:
            return str(name)
    return os.path.splitext(os.path.basename(model.rstrip("/")))[0]


def titles_for(models: list[str]) -> list[tuple[str, str]]:
    """(title, model) per model: a built-in name as is, a model dir by its card's name, a file by its
    stem; repeats get _2, _3."""
    out, seen = [], {}
    for m in models:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", _title(m)) or "model"
        seen[base] = seen.get(base, 0) + 1
        out.append((base if seen[base] == 1 else f"{base}_{seen[base]}", m))
    return out


def pairwise(maps: dict[str, np.ndarray], coverage: dict[str, np.ndarray]) -> dict:
    """Pearson and Spearman correlation of every pair of maps over the pixels both cover.

    Returns:
      {"names": [...], "pearson": K x K, "spearman": K x K, "pixels": K x K common covered pixels}.
    """
    names = list(maps)
    k = len(names)
    out = {"names": names, "pearson": np.eye(k).tolist(), "spearman": np.eye(k).tolist(),
           "pixels": [[0] * k for _ in range(k)]}
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            both = coverage[a] & coverage[b]
            out["pixels"][i][j] = int(both.sum())
            if i < j:
                for key, fn in (("pearson", stats.pearson), ("spearman", stats.spearman)):
                    out[key][i][j] = out[key][j][i] = fn(maps[a], maps[b], both)
    return out


def markdown(pairs: dict, region_md: str) -> str:
    """The correlation matrix and the region tables as markdown."""
    names = pairs["names"]
    md = "**Pearson correlation of the CMS maps (common covered pixels)**\n\n| | " + " | ".join(names) + " |\n"
    md += "|---|" + "---:|" * len(names) + "\n"
    md += "".join(f"| {a} | " + " | ".join(f"{v:.3f}" for v in row) + " |\n"
                  for a, row in zip(names, pairs["pearson"]))
    return md + "\n" + region_md


def figure(base: RunConfig, out_dir: str, models: list, *, task: str = "gender", workers: int = 2,
           align_cache: str | None = None, name: str = "fig11", suptitle: str = "") -> dict:
    """Write NAME.png (one CMS per model), NAME.json and NAME.md.

    Args:
      base: the run settings shared by all models (images, max_images, canvas, ...); its model is ignored.
      out_dir: output folder; each model's run goes to ``out_dir/<title>``.
      models: built-in names or model paths (titled by `titles_for`), or (title, model) pairs.
      task: what the models do, for the titles.
      workers: host processes for alignment.
      align_cache: landmark cache folder shared by the runs (default ``out_dir/align_cache``).
      name: file name stem of the outputs.
      suptitle: the PNG's title (default: Fig. 11's).

    Returns:
      The JSON dict.
    """
    if not models:
        raise ValueError(f"{name}: no model given")
    cache = align_cache or os.path.join(out_dir, "align_cache")
    tiles, titles, done, skipped, maps, cover = [], [], {}, {}, {}, {}
    masks = None
    named = models if models and isinstance(models[0], tuple) else titles_for(models)
    for title, model in named:
        try:
            run = common.run_or_reuse(dataclasses.replace(base, model=model), os.path.join(out_dir, title),
                                      workers=workers, align_cache=cache)
        except Exception as e:  # an absent or unloadable model is reported, the others still drawn
            skipped[title] = f"{type(e).__name__}: {e}"
            print(f"{name}: {title} skipped: {skipped[title]}", flush=True)
            continue
        if masks is None:
            masks = regions.region_masks(run.canon.vertices[:468], run.canon.canvas_hw)
        maps[title], cover[title] = run.cms, run.coverage
        tiles.append(common.cms_tile(run))
        titles.append(f"{title} ({run.summary['images_done']} faces)")
        done[title] = {"model": model, "run_dir": run.out_dir, "images_done": run.summary["images_done"],
                       "images_skipped": len(run.summary["images_skipped"]),
                       "cms_range": [float(run.cms[run.coverage].min()), float(run.cms[run.coverage].max())],
                       "top2pct_pixels_by_region": peak_region(run.cms, masks, run.coverage)}
    if not tiles:
        raise RuntimeError(f"{name}: every model failed: {skipped}")
    common_cover = np.logical_and.reduce(list(cover.values()))  # densities over the same pixels
    table, region_md = regions.shares_table(maps, masks, common_cover)
    for title, t in table.items():
        done[title].update(region_shares=t["share"], region_density=t["density"])
    pairs = pairwise(maps, cover)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{name}.md"), "w") as fh:
        fh.write(markdown(pairs, region_md))
    common.panels(tiles, titles, os.path.join(out_dir, f"{name}.png"),
                  suptitle=suptitle or f"Fig. 11: CMS of {len(tiles)} {task} models (red high)")
    return common.write_json(os.path.join(out_dir, f"{name}.json"), {
        "task": task, "images": base.images, "max_images": base.max_images, "models": done,
        "skipped": skipped, "pairwise": pairs, "panels": len(tiles)})
