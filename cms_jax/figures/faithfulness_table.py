"""Faithfulness on the same faces: the CIS, the CMS, the CAMs, RISE and controls, by five metrics with CIs.

Figs. 9-10 compare one CMS (the same map for every face) with per-image CAMs, so a
win there cannot tell "faithful" from "covers the face". Here every method explains
the *same target* on the *same faces* (the class the model predicts on the clean
face, from the main job's drops.npz, stated in the output), and the controls say
what covering the face alone scores:

* methods: the per-image CIS drawn on the face (its own drops at its own vertices,
  Eqs. 1-5 in image space), the reprojected CMS (Fig. 6d), GradCAM, GradCAM++,
  ScoreCAM, RISE (`baselines.rise`);
* controls: the face oval (1 inside the hull of the landmarks), a centred Gaussian,
  a random map on the face (uniform noise inside the oval, seeded per face), and
  another task's CMS (``control_model``'s, reprojected the same way).

Metrics per face (`cms_jax.faithfulness`, in the model's normalised input, pixels
removed to the run's fill): the paper's Average Drop, % Increase and Win % (Eqs.
7-11, `metrics.faithfulness`, with the clip rate of 1 - H), Deletion and Insertion
AUC, ROAD MoRF / LeRF and their gap. Each mean has a 95% bootstrap CI over faces;
each method is compared with the CIS and with the face oval by a paired bootstrap of
the difference and Wilcoxon (McNemar for % Increase) (`figures.paired`).
Writes faithfulness.json, faithfulness.md and heatmaps.npz.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys

import numpy as np

METHODS = ("CIS", "CMS", "GradCAM", "GradCAM++", "ScoreCAM", "RISE")
CONTROLS = ("face oval", "centre Gaussian", "random on face", "other task's CMS")
# metric -> (higher is better, per-face values are yes/no)
METRICS = {"average_drop": (True, False), "increase": (False, True), "win": (True, False),
           "deletion": (False, False), "insertion": (True, False), "road_morf": (False, False),
           "road_lerf": (True, False), "road_gap": (True, False)}


@dataclasses.dataclass(frozen=True)
class FaithConfig:
    """The flags of ``experiments/faithfulness.py``."""
    model: str = "gender"
    control_model: str = "expression"   # its CMS is the "another task" control
    images: str = ""
    max_images: int = 1000
    rise_masks: int = 1000
    steps: int = 32                     # deletion / insertion steps
    road_fractions: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
    bootstrap: int = 1000
    seed: int = 0
    workers: int = 2
    smoke: bool = False


def _face_oval(xy: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    import cv2
    hull = cv2.convexHull(np.round(xy[:468]).astype(np.int32))
    m = np.zeros(hw, np.uint8)
    cv2.fillConvexPoly(m, hull, 1)
    return m.astype(np.float32)


def _gaussian(hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    yy, xx = np.mgrid[:h, :w]
    return np.exp(-((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2) / (2 * (min(h, w) / 6) ** 2)).astype(np.float32)


def _run_cms(model: str, cfg: FaithConfig, images: str, out_dir: str, cache: str):
    """The model's CMS run in ``out_dir/cms_<model>``, reused when finished (`common.run_or_reuse`)."""
    from cms_jax.figures.common import run_or_reuse
    from cms_jax.pipeline import RunConfig
    return run_or_reuse(RunConfig(model=model, images=images, max_images=cfg.max_images, incremental="auto"),
                        os.path.join(out_dir, f"cms_{model.replace('/', '_')}"), workers=cfg.workers,
                        align_cache=cache)


def heatmaps(cfg: FaithConfig, out_dir: str):
    """Crops, targets, files and every method's and control's (N, H, W) map (module docstring)."""
    import jax.numpy as jnp

    from cms_jax import models, occlusion
    from cms_jax.baselines import compare, rise
    from cms_jax.data.prepare import FacePreparer
    from cms_jax.pipeline import RunConfig, default_images
    from cms_jax.projection import reproject
    from cms_jax.scoring.scorer import Scorer

    images = cfg.images or default_images()
    cache = os.path.join(out_dir, "align_cache")
    main = _run_cms(cfg.model, cfg, images, out_dir, cache)
    other = _run_cms(cfg.control_model, cfg, images, out_dir, cache)
    model = models.load(cfg.model)
    scorer = Scorer(RunConfig(model=cfg.model, images=images))
    hw = tuple(model.input_size)
    row = {str(f): i for i, f in enumerate(main.files)}
    faces = []
    preparer = FacePreparer(model, workers=cfg.workers, cache_dir=cache)
    try:
        for p in preparer.imap([str(f) for f in main.files]):
            if p.reason is None and p.path in row:
                faces.append(p)
    finally:
        preparer.close()
    if not faces:
        raise SystemExit(f"faithfulness: none of the {len(row)} scored faces could be prepared again")
    crops = np.stack([p.crop for p in faces])
    idx = np.asarray([row[p.path] for p in faces])
    targets = main.targets[idx].astype(np.int32)
    maps = {k: [] for k in METHODS + CONTROLS}
    rng = np.random.default_rng(cfg.seed)
    for p, i in zip(faces, idx):
        xy, valid = scorer.vertices(p.xy, p.z)
        if not np.array_equal(valid, main.valid[i]):
            raise AssertionError(f"{p.path}: its vertices differ from the run's (valid masks disagree)")
        oval = _face_oval(p.xy, hw)
        maps["CIS"].append(reproject(main.drops[i], xy, hw, scorer.patch, valid))
        maps["CMS"].append(compare.reproject_cms(main.cms, scorer.canon.vertices, xy, hw, scorer.patch, valid))
        maps["other task's CMS"].append(compare.reproject_cms(other.cms, scorer.canon.vertices, xy, hw,
                                                              scorer.patch, valid))
        maps["face oval"].append(oval)
        maps["centre Gaussian"].append(_gaussian(hw))
        maps["random on face"].append(rng.random(hw).astype(np.float32) * oval)
    maps.update(compare.baseline_heatmaps(model, crops, targets, scorecam_batch=16 if cfg.smoke else 64))
    mode = occlusion.score_mode("prob", model.outputs_are_probs, model.output)
    x = model.preprocess(crops)
    rise_maps = []
    for s in range(0, len(x), 8):
        sl = np.arange(s, s + 8).clip(max=len(x) - 1)  # one shape: the last batch repeats its last face
        r = rise(model.apply_fn, model.params, jnp.asarray(x[sl]), jnp.asarray(targets[sl]),
                 n_masks=cfg.rise_masks, mode=mode, fill=float(scorer.cfg.fill), seed=cfg.seed)
        rise_maps.append(np.asarray(r)[:min(8, len(x) - s)])
    maps["RISE"] = np.concatenate(rise_maps)
    maps = {k: np.asarray(np.stack(v) if isinstance(v, list) else v, np.float32) for k, v in maps.items()}
    return model, scorer, crops, targets, [p.path for p in faces], maps, mode


def scores(model, scorer, crops, targets, maps, mode, cfg: FaithConfig) -> tuple[dict, dict]:
    """Per face and method, every metric of `METRICS`; and the paper's table (clip rates)."""
    import jax
    import jax.numpy as jnp

    from cms_jax import faithfulness as fa
    from cms_jax import metrics, occlusion
    from cms_jax.baselines import compare

    paper = metrics.faithfulness(compare.confidence_fn(model), crops.astype(np.float32), maps, targets,
                                 per_image=True)
    per = metrics.per_face(paper["per_image"])

    @jax.jit
    def conf(xb, t):
        return occlusion.phi(model.apply_fn(model.params, xb), mode, jnp.full((xb.shape[0],), t, jnp.int32))[0]

    x = model.preprocess(crops)
    for i in range(len(x)):
        score = lambda b, t=int(targets[i]): np.asarray(conf(jnp.asarray(b), t))  # noqa: E731
        one = fa.evaluate(score, x[i][None], {m: stack[i][None] for m, stack in maps.items()}, steps=cfg.steps,
                          fill=float(scorer.cfg.fill), road_fractions=cfg.road_fractions, seed=cfg.seed + i)
        for m, r in one.items():
            for k, v in r.items():
                per[m].setdefault(k, np.zeros(len(x)))[i] = v[0]
        if (i + 1) % 50 == 0 or i + 1 == len(x):
            print(f"faithfulness: {i + 1}/{len(x)} faces scored", file=sys.stderr, flush=True)
    return per, paper


def summarise(per: dict, paper: dict, cfg: FaithConfig) -> dict:
    """Means with CIs, and paired comparisons with the CIS and the face oval."""
    from cms_jax.figures.paired import bootstrap_mean, paired

    out = {"methods": {}, "vs_CIS": {}, "vs_face_oval": {}}
    for m, r in per.items():
        out["methods"][m] = {k: bootstrap_mean(r[k], draws=cfg.bootstrap, seed=cfg.seed) for k in METRICS}
        out["methods"][m]["clip_rate"] = paper["methods"][m]["clip_rate"]
        for ref, key in (("CIS", "vs_CIS"), ("face oval", "vs_face_oval")):
            if m != ref:
                out[key][m] = {k: paired(r[k], per[ref][k], binary=METRICS[k][1], draws=cfg.bootstrap,
                                         seed=cfg.seed) for k in METRICS}
    return out


def _cell(c: dict) -> str:
    return f"{c['mean']:.3f} [{c['ci'][0]:.3f}, {c['ci'][1]:.3f}]"


def markdown(summary: dict) -> str:
    """The tables: every metric with its CI, and the paired differences from the CIS and the face oval."""
    names = list(METRICS)
    arrow = {k: "↑" if METRICS[k][0] else "↓" for k in names}
    lines = [f"# Faithfulness of {summary['model']} on the same {summary['n']} faces", "",
             f"Target: {summary['target']}. Pixels removed to the fill {summary['fill']:g} (normalised "
             f"input); RISE with {summary['rise_masks']} masks; deletion / insertion in {summary['steps']} "
             f"steps; ROAD at {summary['road_fractions']}. 95% bootstrap CIs over faces (n = {summary['n']}).",
             "", "| method | " + " | ".join(f"{k} {arrow[k]}" for k in names) + " | clip rate |",
             "|---|" + "---|" * (len(names) + 1)]
    for m, r in summary["table"]["methods"].items():
        lines.append(f"| {m} | " + " | ".join(_cell(r[k]) for k in names) + f" | {r['clip_rate']:.3f} |")
    for key, title in (("vs_CIS", "the per-image CIS"), ("vs_face_oval", "the face oval control")):
        lines += ["", f"Paired difference from {title} (method − it; 95% paired bootstrap CI; p of Wilcoxon, "
                      f"McNemar for increase):", "",
                  "| method | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for m, r in summary["table"][key].items():
            lines.append(f"| {m} | " + " | ".join(
                f"{r[k]['diff']:+.3f} [{r[k]['ci'][0]:+.3f}, {r[k]['ci'][1]:+.3f}] p={r[k]['p']:.2g}"
                for k in names) + " |")
    return "\n".join(lines) + "\n"


def run(cfg: FaithConfig, out_dir: str) -> dict:
    """The whole experiment into ``out_dir`` (module docstring); returns the summary."""
    import time
    t0 = time.monotonic()
    if cfg.smoke:
        cfg = dataclasses.replace(cfg, model="tiny", control_model="tiny", max_images=4, rise_masks=32,
                                  steps=8, road_fractions=(0.2, 0.6), bootstrap=100)
    os.makedirs(out_dir, exist_ok=True)
    model, scorer, crops, targets, files, maps, mode = heatmaps(cfg, out_dir)
    per, paper = scores(model, scorer, crops, targets, maps, mode, cfg)
    summary = {"model": model.name, "control_model": cfg.control_model, "n": int(len(crops)),
               "target": "the class predicted on the clean face (the main job's drops.npz targets), the same "
                         "for every method", "targets": {str(c): int((targets == c).sum()) for c in
                                                        np.unique(targets)},
               "fill": float(scorer.cfg.fill), "rise_masks": cfg.rise_masks, "steps": cfg.steps,
               "road_fractions": list(cfg.road_fractions), "table": summarise(per, paper, cfg),
               "seconds": time.monotonic() - t0}
    with open(os.path.join(out_dir, "faithfulness.json"), "w") as f:
        json.dump(summary, f, indent=2)
    md = markdown(summary)
    with open(os.path.join(out_dir, "faithfulness.md"), "w") as f:
        f.write(md)
    np.savez_compressed(os.path.join(out_dir, "heatmaps.npz"), files=np.asarray(files), targets=targets,
                        **{k.replace(" ", "_").replace("'", "").replace("+", "p"): v for k, v in maps.items()},
                        **{f"per__{m.replace(' ', '_').replace(chr(39), '').replace('+', 'p')}__{k}": v
                           for m, r in per.items() for k, v in r.items()})
    print(md)
    return summary
