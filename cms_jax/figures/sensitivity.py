"""How much the CMS depends on the choices the paper leaves open, over the same >= 1,000 faces.

Fig. 16 varies the patch on one face. Here every variant is a whole main-job run over
the same faces (`pipeline.run_job`, landmarks shared through one cache), compared with
the baseline run (the defaults: patch 15 px at 224 scaled to the input, 468 vertices,
fill 0 in the normalised input, softmax probability, Eq. 6's mean):

* the patch: 2, 8 and 12 px (the baseline's is 4 px at a 64 px input; a size equal to the
  baseline's is left out);
* the mesh: subdivision level 1 (1,833 vertices);
* the fill: black (the normalised value of a 0 pixel) instead of 0 in the normalised
  input (mid-grey for a model whose inputs lie in [-1, 1]), and a blur fill (each square
  takes its image's own pixels blurred by a Gaussian, Fong & Vedaldi's perturbation, of
  sigma 10 px at 224 scaled to the input unless given; `RunConfig.fill_blur`, dense forward);
* the confidence: the raw logit (``--score=logit``) instead of the probability;
* Eq. 6: 'covered' (each pixel's mean over the faces whose CIS reaches it), computed
  from the baseline's own drops (no rescoring).

For each: Pearson and Spearman with the baseline CMS on the pixels both cover, each
region's share of the positive saliency and its change in points, beside the
baseline's split-half correlation (two random halves of the faces), the level that
sampling alone reaches. Writes sensitivity.json and sensitivity.md.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from cms_jax.figures import stats


@dataclasses.dataclass(frozen=True)
class SensitivityConfig:
    """The flags of ``experiments/sensitivity.py``."""
    model: str = "gender"
    images: str = ""
    max_images: int = 1000
    canvas: int = 256
    patches: tuple[int, ...] = (2, 8, 12)
    blur_sigma: float = 0.0        # the blur fill's sigma in input pixels (0: 10 px at 224, scaled)
    seed: int = 0
    workers: int = 2
    smoke: bool = False


def variants(cfg: SensitivityConfig, model, base_patch: int) -> dict[str, dict]:
    """Variant name -> the RunConfig fields it changes (the baseline is ``{}``; a patch equal to
    the baseline's ``base_patch`` is not a variant)."""
    black = float(np.asarray(model.preprocess(np.zeros((1, *model.input_size, 3), np.uint8))).reshape(-1)[0])
    out = {f"baseline (patch {base_patch} px)": {}}
    out.update({f"patch {p} px": {"patch_size": p} for p in cfg.patches if p != base_patch})
    out["subdivision 1"] = {"subdivision": 1}
    out[f"fill black ({black:g})"] = {"fill": black}
    sigma = cfg.blur_sigma or 10.0 * model.input_size[0] / 224
    out[f"fill blur (sigma {sigma:.3g} px)"] = {"fill_blur": float(sigma)}
    out["logit"] = {"score": "logit"}
    return out


def _run(cfg: SensitivityConfig, images: str, name: str, change: dict, out_dir: str, cache: str):
    """The variant's run in ``out_dir/<name>``, reused when finished with the same flags (`common.run_or_reuse`)."""
    from cms_jax.figures.common import run_or_reuse
    from cms_jax.pipeline import RunConfig
    folder = os.path.join(out_dir, name.split(" (")[0].replace(" ", "_"))
    return run_or_reuse(RunConfig(model=cfg.model, images=images, max_images=cfg.max_images, canvas=cfg.canvas,
                                  incremental="auto", **change), folder, workers=cfg.workers, align_cache=cache)


def _shares(cms, canon, coverage) -> dict[str, float]:
    from cms_jax import regions
    masks = regions.region_masks(canon.vertices[:468], canon.canvas_hw)
    return regions.region_shares(np.where(coverage, cms, 0.0), masks)


def run(cfg: SensitivityConfig, out_dir: str) -> dict:
    """Every variant's run, its comparison with the baseline, into ``out_dir`` (module docstring)."""
    from cms_jax import models
    from cms_jax.accumulate import cms_from_drops
    from cms_jax.pipeline import RunConfig, default_images
    from cms_jax.scoring.scorer import Scorer

    if cfg.smoke:
        cfg = dataclasses.replace(cfg, model="tiny", max_images=4, canvas=128, patches=(4, 8))
    images = cfg.images or default_images()
    os.makedirs(out_dir, exist_ok=True)
    cache = os.path.join(out_dir, "align_cache")
    model = models.load(cfg.model)
    base_patch = int(Scorer(RunConfig(model=cfg.model, images=images), model=model).patch)
    named = variants(cfg, model, base_patch)
    runs = {name: _run(cfg, images, name, change, out_dir, cache) for name, change in named.items()}
    base = next(iter(runs.values()))
    canon0, cover0 = base.canon, base.coverage
    covered = cms_from_drops(base.drops, base.valid, canon0.vertices, canon0.canvas_hw, base.sides, "covered")
    maps = {name: (r.cms, r.coverage) for name, r in runs.items()}
    maps["Eq. 6 covered"] = (covered, cover0)
    files = set(map(str, base.files))
    rng = np.random.default_rng(cfg.seed)
    half = rng.permutation(len(base.files))
    halves = [cms_from_drops(base.drops[h], base.valid[h], canon0.vertices, canon0.canvas_hw, base.sides[h])
              for h in (half[:len(half) // 2], half[len(half) // 2:])]
    floor = stats.compare(*halves, cover0) if len(half) >= 2 else None
    shares0 = _shares(base.cms, canon0, cover0)
    rows = {}
    for name, (m, cover) in maps.items():
        both = cover & cover0
        scored = set(map(str, runs[name].files)) if name in runs else files
        shares = _shares(m, canon0, cover)
        rows[name] = {"pearson": stats.pearson(base.cms, m, both), "spearman": stats.spearman(base.cms, m, both),
                      "common_pixels": int(both.sum()), "faces": len(scored), "faces_in_common": len(scored & files),
                      "shares": shares, "share_change": {k: shares[k] - shares0[k] for k in shares}}
    summary = {"model": model.name, "faces": len(files), "canvas": cfg.canvas, "split_half": floor,
               "variants": named, "rows": rows}
    with open(os.path.join(out_dir, "sensitivity.json"), "w") as f:
        json.dump(summary, f, indent=2)
    md = markdown(summary)
    with open(os.path.join(out_dir, "sensitivity.md"), "w") as f:
        f.write(md)
    print(md)
    return summary


def markdown(summary: dict) -> str:
    """The table: each variant's correlation with the baseline and its region shares (change in points)."""
    rows = summary["rows"]
    regions = list(next(iter(rows.values()))["shares"])
    floor = summary["split_half"]
    lines = [f"# Sensitivity of the CMS of {summary['model']} ({summary['faces']} faces, {summary['canvas']} px)", "",
             "Split-half floor of the baseline (two random halves of the faces): " + (
                 f"Pearson {floor['pearson']:.3f}, Spearman {floor['spearman']:.3f}." if floor else "n/a."), "",
             "| variant | faces | Pearson | Spearman | " + " | ".join(f"{r} % (Δ)" for r in regions) + " |",
             "|---|---:|---:|---:|" + "---|" * len(regions)]
    for name, r in rows.items():
        cells = [f"{r['shares'][k]:.1f} ({r['share_change'][k]:+.1f})" for k in regions]
        lines.append(f"| {name} | {r['faces']} | {r['pearson']:.3f} | {r['spearman']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
