"""Fig. 6: (a) occlusion map, (b) CIS (Eqs. 1-5), (c) CMS (Eq. 6), (d) CMS reprojected onto the input.

The CMS comes from a pipeline run over the whole image set (reused when
``cms_dir`` names a finished one); the first ``show`` faces get a row each.
"""
from __future__ import annotations

import os


from cms_jax import viz
from cms_jax.figures import common, per_image
from cms_jax.pipeline import RunConfig
from cms_jax.data.image_list import expand_images


def figure(cfg: RunConfig, out_dir: str, *, show: int = 4, cms_dir: str = "", workers: int = 2) -> dict:
    """Write fig06.png (one row per face: face, occlusion, CIS, CMS, reprojected CMS) and fig06.json.

    Args:
      cfg: the CMS run (model, images, patch, ...).
      out_dir: output folder; the run goes to ``out_dir/cms`` unless ``cms_dir`` is given.
      show: faces shown (the first of the sorted image list that align).
      cms_dir: a finished run of the same model to take the CMS from.
      workers: host processes for alignment.

    Returns:
      The JSON dict: per face its file, class, clean confidence and map ranges.
    """
    run, cfg = common.run_from(cfg, out_dir, cms_dir, workers)
    fm = per_image.FaceMaps(cfg)
    faces, skipped = fm.prepare(expand_images(cfg.images, cfg.max_images)[:3 * show + 2], workers=0)
    faces = faces[:show]
    if not faces:
        raise ValueError(f"fig06: no face found among the first images of {cfg.images!r}: {skipped}")
    d = fm.drops(faces)
    cms_tile = common.cms_tile(run)
    tiles, titles, rows = [], [], []
    for i, face in enumerate(faces):
        occ = fm.occlusion_map(face, int(d["targets"][i]))
        cis = fm.cis(d["drops"][i], d["valid"][i], d["sides"][i])
        rep = fm.reprojected_cms(run.cms, d["xy"][i], d["valid"][i])
        mask = fm.image_mask(d["xy"][i], d["valid"][i])
        rgb = per_image.face_rgb(face)
        cls = fm.model.class_names[int(d["targets"][i])] if fm.model.output == "classes" else ""
        tiles += [rgb, viz.overlay(rgb, occ), viz.overlay(fm.canon.image, cis, run.coverage),
                  cms_tile, viz.overlay(rgb, rep, mask)]
        name = common.short_name(face.path)
        titles += [f"{name}\n{cls} {d['clean'][i]:.2f}", "(a) occlusion map", "(b) CIS", "(c) CMS",
                   "(d) CMS reprojected"]
        rows.append({"file": face.path, "class": cls, "clean": float(d["clean"][i]),
                     "occlusion_range": [float(occ.min()), float(occ.max())],
                     "cis_range": [float(cis[run.coverage].min()), float(cis[run.coverage].max())],
                     "reprojected_range": [float(rep[mask].min()), float(rep[mask].max())]})
    common.panels(tiles, titles, os.path.join(out_dir, "fig06.png"), cols=5,
                  suptitle=f"Fig. 6: {cfg.model}, CMS over {run.summary['images_done']} images")
    return common.write_json(os.path.join(out_dir, "fig06.json"), {
        "model": cfg.model, "cms_dir": run.out_dir, "cms_images": run.summary["images_done"],
        "panels_per_row": 5, "faces": rows, "skipped": skipped})
