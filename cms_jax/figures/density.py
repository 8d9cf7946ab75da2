"""Fig. 4: the CIS with and without density normalisation, P* (Eq. 4) against P = P* / N (Eq. 5).

The raw splat P* follows the mesh density N as much as the drops. On the
paper's PRNet mesh points crowd at the sides of the face and thin out on the
nose, so normalising raised the nose; MediaPipe's 468-vertex mesh is instead
densest on the eyes, nose tip and lips, so here normalising lowers those.
Everything is re-rendered from a run's ``drops.npz``: no rescoring. The JSON
gives the share of each facial region (`cms_jax.regions`) in each map.
"""
from __future__ import annotations

import os

import numpy as np

from cms_jax import regions, viz
from cms_jax.figures import common, stats
from cms_jax.projection import count_normalise, splat


def figure(run: common.Run, out_dir: str, *, show: int = 3) -> dict:
    """Write fig04.png (per face: P*, N, P; last row: mean P*, N, the CMS) and fig04.json.

    Args:
      run: a finished pipeline run (`common.load_run` / `common.run_or_reuse`).
      out_dir: output folder.
      show: faces shown, the first of the run.

    Returns:
      The JSON dict: region shares with and without normalisation, per face and for the mean.
    """
    canon, hw, cov = run.canon, run.canon.canvas_hw, run.coverage
    masks = regions.region_masks(canon.vertices[:468], hw)
    n = min(show, len(run.files))
    tiles, titles, faces = [], [], []
    sum_raw, sum_density = np.zeros(hw, np.float64), np.zeros(hw, np.float64)
    ones = np.ones(len(canon.vertices), np.float32)
    last_side, density_i = None, None
    for i in range(len(run.files)):
        side = float(run.sides[i])
        p_star, count = splat(run.drops[i], canon.vertices, hw, side, run.valid[i])
        sum_raw += p_star
        if side != last_side:  # N of all vertices at this image's side (loose, tight crops: once)
            last_side, density_i = side, splat(ones, canon.vertices, hw, side)[1]
        sum_density += density_i
        if i >= n:
            continue
        p = np.asarray(count_normalise(p_star, count))
        name = common.short_name(run.files[i])
        tiles += [viz.overlay(canon.image, p_star, cov), viz.overlay(canon.image, count, cov),
                  viz.overlay(canon.image, p, cov)]
        titles += [f"{name}\nP* (no normalisation)", "N (vertex density)", "P = P* / N (CIS)"]
        faces.append({"file": str(run.files[i]),
                      "shares_unnormalised": regions.region_shares(p_star, masks),
                      "shares_normalised": regions.region_shares(p, masks),
                      "spearman_raw_vs_normalised": stats.spearman(p_star, p, cov)})
    mean_raw, density = sum_raw / len(run.files), sum_density / len(run.files)
    tiles += [viz.overlay(canon.image, mean_raw, cov), viz.overlay(canon.image, density, cov),
              common.cms_tile(run)]
    one_side = bool((run.sides == run.sides[0]).all())
    titles += [f"mean P* over {len(run.files)} images", "N (all vertices)" if one_side else "mean N (all vertices)",
               "CMS (mean of P)"]
    common.panels(tiles, titles, os.path.join(out_dir, "fig04.png"), cols=3,
                  suptitle=f"Fig. 4: density normalisation, {run.summary['model']}")
    return common.write_json(os.path.join(out_dir, "fig04.json"), {
        "model": run.summary["model"], "cms_dir": run.out_dir, "images": len(run.files),
        "faces": faces,
        "mean": {"shares_unnormalised": regions.region_shares(mean_raw, masks),
                 "shares_normalised": regions.region_shares(run.cms, masks),
                 "spearman_raw_vs_normalised": stats.spearman(mean_raw, run.cms, cov)},
        "density_range": [float(density[cov].min()), float(density[cov].max())],
        "panels": {"rows": n + 1, "cols": 3}})
