"""Fig. 14: individual occlusion maps beside the model's CMS (Eq. 6).

Single occlusion maps vary with pose, lighting and occlusion; the CMS
averages the aligned CIS maps. The JSON says how far each face's CIS is from
the CMS (Spearman over the canonical face), the spread the figure shows.
"""
from __future__ import annotations

import os

import numpy as np

from cms_jax import viz
from cms_jax.figures import common, per_image, stats
from cms_jax.pipeline import RunConfig
from cms_jax.data.image_list import expand_images


def figure(cfg: RunConfig, out_dir: str, *, show: int = 5, cms_dir: str = "", workers: int = 2) -> dict:
    """Write fig14.png (row 1: faces' occlusion maps then the CMS; row 2: their CIS maps) and fig14.json.

    Args:
      cfg: the CMS run (model and images).
      out_dir: output folder; the run goes to ``out_dir/cms`` unless ``cms_dir`` is given.
      show: faces shown.
      cms_dir: a finished run of the model to take the CMS from.
      workers: host processes for alignment.

    Returns:
      The JSON dict.
    """
    run, cfg = common.run_from(cfg, out_dir, cms_dir, workers)
    fm = per_image.FaceMaps(cfg)
    faces, skipped = fm.prepare(expand_images(cfg.images, cfg.max_images)[:3 * show + 2])
    faces = faces[:show]
    if not faces:
        raise ValueError(f"fig14: no face found among the first images of {cfg.images!r}: {skipped}")
    d = fm.drops(faces)
    occ_tiles, cis_tiles, rows = [], [], []
    for i, face in enumerate(faces):
        occ = fm.occlusion_map(face, int(d["targets"][i]))
        cis = fm.cis(d["drops"][i], d["valid"][i], d["sides"][i])
        occ_tiles.append(viz.overlay(per_image.face_rgb(face), occ))
        cis_tiles.append(viz.overlay(fm.canon.image, cis, run.coverage))
        rows.append({"file": face.path, "clean": float(d["clean"][i]),
                     "cis_vs_cms": stats.compare(run.cms, cis, run.coverage)})
    names = [common.short_name(f.path) for f in faces]
    tiles = occ_tiles + [common.cms_tile(run)] + cis_tiles + [np.full_like(cis_tiles[0], 255)]
    titles = ([f"occlusion\n{n}" for n in names] + [f"CMS ({run.summary['images_done']} images)"]
              + [f"CIS\n{n}" for n in names] + [""])
    common.panels(tiles, titles, os.path.join(out_dir, "fig14.png"), cols=len(faces) + 1,
                  suptitle=f"Fig. 14: {cfg.model}, individual maps vs the CMS")
    sp = [r["cis_vs_cms"]["spearman"] for r in rows]
    return common.write_json(os.path.join(out_dir, "fig14.json"), {
        "model": cfg.model, "cms_dir": run.out_dir, "cms_images": run.summary["images_done"],
        "faces": rows, "cis_vs_cms_spearman_mean": float(np.mean(sp)), "skipped": skipped,
        "panels": {"rows": 2, "cols": len(faces) + 1}})
