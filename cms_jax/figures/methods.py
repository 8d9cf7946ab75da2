"""Fig. 2: the saliency of every method side by side on a few faces (rows = faces, columns = methods).

The paper's columns (b)-(i) are the baselines of `cms_jax.baselines` and the
Zeiler & Fergus occlusion map; a last column adds the face's CIS (Eqs. 1-5)
reprojected onto the crop as in Fig. 6d. Every method explains the same class
of a face: the model's prediction, which the CIS run picks. The JSON holds, per
method, the seconds per face (a second call, so without compilation; for the
CIS the occlusion at every vertex, Eq. 1, which dominates) and per
face: the map's range and spread, its Pearson and Spearman correlation with the
reprojected CIS and its Pearson correlation with the occlusion map over the
pixels the CIS reaches, and ``centre_share``, the share of the map's mass
(min-max scaled to [0, 1] over the crop) in the central quarter of the crop
(the middle half of each side; a uniform map gives 0.25): the paper's remark
that most methods "highlight a large area in the center of the face", measured.
"""
from __future__ import annotations

import os
import time

import jax.numpy as jnp
import numpy as np

from cms_jax import baselines, viz
from cms_jax.figures.paired import bootstrap_mean
from cms_jax.figures import common, per_image, stats
from cms_jax.pipeline import RunConfig
from cms_jax.data.image_list import expand_images

# (key, panel title): the paper's columns (b)-(i), then the CIS.
COLUMNS = (("gradients", "(b) gradients"), ("smoothgrad", "(c) SmoothGrad"),
           ("guided_backprop", "(d) guided backprop"), ("guided_gradcam++", "(e) guided GradCAM++"),
           ("gradcam", "(f) GradCAM"), ("gradcam++", "(g) GradCAM++"), ("scorecam", "(h) ScoreCAM"),
           ("occlusion", "(i) occlusion map"), ("cis", "CIS (Fig. 6d)"))


def centre_share(m: np.ndarray) -> float:
    """Share of a map's mass, min-max scaled over the crop, in the middle half of each side (uniform: 0.25)."""
    u = viz.minmax_scale(m)
    h, w = u.shape
    total = float(u.sum())
    centre = float(u[h // 4:h - h // 4, w // 4:w - w // 4].sum())
    return centre / total if total > 0 else 0.0


def _timed(fn, n: int) -> tuple[np.ndarray, float, float]:
    """Run ``fn`` twice: (its output, seconds of the first call, seconds per face of the second)."""
    t0 = time.perf_counter()
    np.asarray(fn())
    t1 = time.perf_counter()
    out = np.asarray(fn())
    return out, t1 - t0, (time.perf_counter() - t1) / n


def _timed_drops(fm: per_image.FaceMaps, faces) -> tuple[dict, float, float]:
    """Eq. 1 at every vertex of ``faces``, twice: (drops, first call seconds, seconds per face)."""
    t0 = time.perf_counter()
    fm.drops(faces)
    t1 = time.perf_counter()
    d = fm.drops(faces)
    return d, t1 - t0, (time.perf_counter() - t1) / len(faces)


def method_maps(fm: per_image.FaceMaps, faces) -> tuple[dict, dict, dict]:
    """Every column's (N, H, W) maps of ``faces`` at the model input size.

    Returns:
      (name -> maps, name -> {first_call_seconds, seconds_per_image}, CIS extras: targets, clean, mask).
    """
    model, n = fm.model, len(faces)
    d, first, per = _timed_drops(fm, faces)
    maps, mask = [], []
    for i in range(n):
        c = fm.cis(d["drops"][i], d["valid"][i], d["sides"][i])
        maps.append(fm.reprojected_cms(c, d["xy"][i], d["valid"][i]))
        mask.append(fm.image_mask(d["xy"][i], d["valid"][i]))
    out = {"cis": np.stack(maps)}
    times = {"cis": {"first_call_seconds": first, "seconds_per_image": per}}
    extra = {"targets": d["targets"], "clean": d["clean"], "mask": np.stack(mask)}
    x = jnp.asarray(model.preprocess(np.stack([f.crop for f in faces])))
    t = jnp.asarray(d["targets"], jnp.int32)
    patch = int(fm.patch)
    kwargs = {"occlusion": dict(patch=patch, stride=max(1, patch // 2), fill=fm.fill, mode=fm.mode)}
    for key, _ in COLUMNS[:-1]:
        method = "grid_occlusion" if key == "occlusion" else key
        m, first, per = _timed(lambda: baselines.explain(model, x, method, t, **kwargs.get(key, {})), n)
        out[key] = m.astype(np.float32)
        times[key] = {"first_call_seconds": first, "seconds_per_image": per}
    return out, times, extra


def map_stats(m: np.ndarray, cis: np.ndarray, occlusion: np.ndarray, mask: np.ndarray) -> dict:
    """One face's numbers for one method's map (see the module docstring)."""
    return {"finite": bool(np.isfinite(m).all()), "range": [float(m.min()), float(m.max())],
            "std": float(m.std()), "pearson_vs_cis": stats.pearson(m, cis, mask),
            "spearman_vs_cis": stats.spearman(m, cis, mask),
            "pearson_vs_occlusion": stats.pearson(m, occlusion, mask), "centre_share": centre_share(m)}


_STATS = ("pearson_vs_cis", "spearman_vs_cis", "pearson_vs_occlusion", "centre_share")


def figure(cfg: RunConfig, out_dir: str, *, faces: int = 4, workers: int = 0, show: int = 0) -> dict:
    """Write fig02.png (a row per face: the face, then one overlay per method), fig02.json, fig02_maps.npz.

    Args:
      cfg: model (a classifier with CAM layers: `FaceModel.features_fn`) and images.
      out_dir: output folder.
      faces: rows (the first faces of the sorted image list that align).
      workers: host processes for alignment.
      show: rows drawn in fig02.png (0 = every face); the statistics cover every face, each mean
        with its 95% bootstrap CI over the faces (``ci_<stat>``).

    Returns:
      The JSON dict.
    """
    fm = per_image.FaceMaps(cfg)
    if fm.model.output != "classes":
        raise ValueError(f"fig02: {cfg.model} outputs {fm.model.output}; the baselines explain classes")
    found, skipped = fm.prepare(expand_images(cfg.images, cfg.max_images)[:3 * faces + 2], workers=workers)
    found = found[:faces]
    if not found:
        raise ValueError(f"fig02: no face found among the first images of {cfg.images!r}: {skipped}")
    maps, times, extra = method_maps(fm, found)
    tiles, titles, rows = [], [], []
    names = fm.model.class_names
    for i, face in enumerate(found):
        rows.append({"file": face.path, "class": names[int(extra["targets"][i])],
                     "clean": float(extra["clean"][i])})
        if show and i >= show:
            continue
        rgb = per_image.face_rgb(face)
        tiles.append(rgb)
        titles.append(f"{common.short_name(face.path)}\n{names[int(extra['targets'][i])]} "
                      f"{extra['clean'][i]:.2f}")
        for key, title in COLUMNS:
            tiles.append(viz.overlay(rgb, maps[key][i], extra["mask"][i] if key == "cis" else None))
            titles.append(title)
    methods = {}
    for key, title in COLUMNS:
        per = [map_stats(maps[key][i], maps["cis"][i], maps["occlusion"][i], extra["mask"][i])
               for i in range(len(found))]
        methods[key] = {"title": title, **times[key], "per_image": per,
                        **{f"mean_{s}": float(np.mean([p[s] for p in per])) for s in _STATS},
                        **{f"ci_{s}": bootstrap_mean(np.asarray([p[s] for p in per]))["ci"] for s in _STATS}}
    common.panels(tiles, titles, os.path.join(out_dir, "fig02.png"), cols=1 + len(COLUMNS),
                  suptitle=f"Fig. 2: saliency methods on {cfg.model} (red high)")
    np.savez_compressed(os.path.join(out_dir, "fig02_maps.npz"), files=np.asarray([f.path for f in found]),
                        mask=extra["mask"], **{k.replace("+", "p"): v for k, v in maps.items()})
    return common.write_json(os.path.join(out_dir, "fig02.json"), {
        "model": cfg.model, "patch_size": int(fm.patch), "faces": rows,
        "columns": [k for k, _ in COLUMNS], "methods": methods, "skipped": skipped,
        "stats_note": ("pearson/spearman_vs_cis and pearson_vs_occlusion: over the crop pixels the CIS "
                       "reaches (its reprojection mask); centre_share: mass of the map min-max scaled "
                       "over the crop inside the middle half of each side (uniform = 0.25); "
                       "seconds_per_image: second call on the batch of faces (no compilation; for the CIS "
                       "the occlusion at every vertex, Eq. 1, without the splat), first_call_seconds "
                       "includes compilation")})
