"""Fig. 9 / Fig. 10: the faithfulness table (Eqs. 7-11) of GradCAM, GradCAM++, ScoreCAM and the CMS.

For a model and a set of faces: aligned crops at the model input, each crop's
CMS heatmap, the three CAM baselines, and Average Drop %, % Increase in
Confidence and Win % of all four on negative explanation images (Eqs. 7-11,
`cms_jax.baselines.compare.fig9_table`). The CMS heatmaps come from, in order:
``cms_heatmaps`` (an .npz with ``files`` and ``heatmaps`` (N, H, W) at the
model input size, one per image, for CMS maps made elsewhere); ``cms_dir``
(the output folder of the main job, whose ``cms.npy`` is reprojected onto each
face, Fig. 6d); or, if neither is given, a CMS job run on the same images into
``out_dir/cms`` (so the CMS is in-sample, as in the paper, which computes CMS
and metrics on the same CelebA subset). Fig. 10 is one table per model of a
task (``models``), each in ``out_dir/<i>_<name>/``, and ``fig10.md`` side by side.

Each table writes fig09.json and fig09.md (the table, also printed), fig09_grid.png (Fig.
2-style: face, GradCAM, GradCAM++, ScoreCAM, CMS) and heatmaps.npz. ``smoke`` uses the tiny
model, synthetic images and a synthetic (centred Gaussian) CMS.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, NamedTuple

import numpy as np

from cms_jax import metrics, viz
from cms_jax.baselines import compare


@dataclasses.dataclass(frozen=True)
class MetricsConfig:
    """One Fig. 9 / Fig. 10 experiment (the flags of ``experiments/fig09_metrics.py``)."""
    model: str = "gender"          # built-in model name or a model file/dir
    models: tuple[str, ...] = ()   # Fig. 10: several models (then ``model`` is not used)
    images: str = ""               # folder, glob, .txt list or comma-separated images ("": CelebA samples)
    max_images: int = 100          # use the first N images (0 = all)
    label_from: str = ""           # target class per file, SOURCE:FIELD ("": the model's prediction)
    cms_dir: str = ""              # output folder of the main job whose CMS is reprojected
    cms_heatmaps: str = ""         # .npz with files + (N, H, W) CMS heatmaps
    s_frac: float = 0.0            # Eq. 8 sum as a fraction of pixels (0 = mean of methods)
    batch_size: int = 8            # images per jitted baseline call
    scorecam_batch: int = 64       # masked images per ScoreCAM forward pass (16 with ``smoke``)
    grid_faces: int = 4            # faces in the PNG grid
    bootstrap: int = 1000          # bootstrap draws of each CI (resampling faces)
    workers: int = 2               # host worker processes for alignment
    smoke: bool = False            # seconds: tiny model, synthetic faces and CMS


class Inputs(NamedTuple):
    """What one table is computed from."""
    model: Any              # the FaceModel
    crops: np.ndarray       # (N, H, W, 3) uint8 at the model input
    cms_maps: np.ndarray    # (N, H, W) float32 CMS heatmaps on the crops
    targets: np.ndarray | None  # (N,) classes, None = the model's prediction
    files: list[str]


def smoke_inputs() -> Inputs:
    """The tiny model, 6 random crops and a centred Gaussian as every crop's CMS."""
    from cms_jax.models.vgg import tiny_vgg

    model = tiny_vgg()
    h, w = model.input_size
    crops = np.random.default_rng(0).integers(0, 256, (6, h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    blob = np.exp(-((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / (2 * (h / 6) ** 2)).astype(np.float32)
    return Inputs(model, crops, np.broadcast_to(blob, crops.shape[:3]).copy(), None,
                  [f"synthetic_{i}" for i in range(6)])


def real_inputs(cfg: MetricsConfig, model_name: str, out_dir: str) -> Inputs:
    """Aligned crops of ``cfg.images``, their CMS heatmaps (see the module docstring), targets, files.

    Without ``cfg.cms_heatmaps`` or ``cfg.cms_dir``, the CMS job runs into ``out_dir/cms`` first.

    Raises:
      SystemExit: no face could be used.
    """
    from cms_jax import models
    from cms_jax.figures.common import reused_config
    from cms_jax.pipeline import RunConfig, default_images, run_job
    from cms_jax.data.image_list import expand_images
    from cms_jax.scoring.labels import LabelRule
    from cms_jax.data.prepare import FacePreparer
    from cms_jax.scoring.scorer import Scorer

    model = models.load(model_name)
    run_cfg = RunConfig(model=model_name, images=cfg.images or default_images(), max_images=cfg.max_images,
                        label_from=cfg.label_from,
                        incremental="auto")  # as the main job: same drops, fewer FLOPs where the model allows
    cms_npz = None
    if cfg.cms_heatmaps:
        with np.load(cfg.cms_heatmaps) as z:
            cms_npz = dict(zip([str(f) for f in z["files"]], z["heatmaps"]))
    elif cfg.cms_dir:
        with open(os.path.join(cfg.cms_dir, "summary.json")) as f:
            saved = json.load(f)["config"]
        run_cfg = reused_config(saved, run_cfg.images, run_cfg.max_images, label_from=run_cfg.label_from)
    cms_dir = cfg.cms_dir or os.path.join(out_dir, "cms")
    if cms_npz is None and not cfg.cms_dir:
        run_job(run_cfg, cms_dir, workers=cfg.workers)
    scorer = Scorer(run_cfg, model=model)
    cms = None if cms_npz is not None else np.load(os.path.join(cms_dir, "cms.npy"))
    crops, maps, targets, files = [], [], [], []
    rule = LabelRule(run_cfg.label_from, model)  # a rule that does not fit the model stops here
    preparer = FacePreparer(model, workers=cfg.workers)
    try:
        for p in preparer.imap(expand_images(run_cfg.images, run_cfg.max_images)):
            label, why = rule(p.path) if p.reason is None else (None, p.reason)
            if why is not None:
                continue
            if cms_npz is not None:
                if p.path not in cms_npz:
                    continue
                heat = cms_npz[p.path]
            else:
                xy, valid = scorer.vertices(p.xy, p.z)
                heat = compare.reproject_cms(cms, scorer.canon.vertices, xy, model.input_size,
                                             scorer.patch, valid)
            crops.append(p.crop)
            maps.append(heat)
            targets.append(label)
            files.append(p.path)
    finally:
        preparer.close()
    if not crops:
        raise SystemExit(f"no usable faces in {run_cfg.images!r}")
    tg = None if any(t is None for t in targets) else np.asarray(targets)
    return Inputs(model, np.stack(crops), np.stack(maps).astype(np.float32), tg, files)


def table_for(inputs: Inputs, cfg: MetricsConfig, out_dir: str, label: str = "") -> tuple[dict, str]:
    """Compute, write and print one model's Fig. 9 table and grid into ``out_dir``.

    Returns:
      (the table as in fig09.json, its markdown).
    """
    model, crops, cms_maps, targets, files = inputs
    table, maps = compare.fig9_table(model, crops, cms_maps, targets,
                                     s_frac=cfg.s_frac or None, batch_size=cfg.batch_size,
                                     scorecam_batch=16 if cfg.smoke else cfg.scorecam_batch, per_image=True)
    per = metrics.per_face(table.pop("per_image"))
    table["model"] = model.name
    table["target"] = "the labels of label_from" if targets is not None else "the class predicted on each face"
    table["s_rule"] = (f"s = {cfg.s_frac} * H * W" if cfg.s_frac
                       else "s = mean over methods of the min-max-normalised map sums")
    table["uncertainty"] = uncertainty(per, draws=cfg.bootstrap)
    title = f"{model.name} ({label})" if label and label != model.name else model.name
    md = (compare.markdown_table(table, title=f"{title}: Fig. 9 metrics") + "\n\n"
          + uncertainty_markdown(table["uncertainty"]))
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "fig09.json"), "w") as f:
        json.dump(table, f, indent=2)
    with open(os.path.join(out_dir, "fig09.md"), "w") as f:
        f.write(md + "\n")
    np.savez_compressed(os.path.join(out_dir, "heatmaps.npz"), files=np.asarray(files),
                        **{k.replace("+", "p"): v for k, v in maps.items()})
    np.savez_compressed(os.path.join(out_dir, "per_face.npz"), files=np.asarray(files),
                        **{f"{m.replace('+', 'p')}__{k}": v for m, r in per.items() for k, v in r.items()})
    viz.save_png(os.path.join(out_dir, "fig09_grid.png"), compare.method_grid(crops, maps, cfg.grid_faces))
    print(json.dumps(table, indent=2))
    print(md)
    return table, md


# per-face metric -> (its column, higher is better, yes/no per face, the factor of its displayed mean)
_COLUMNS = {"average_drop": ("Average Drop %", True, False, 1.0), "increase": ("% Increase", False, True, 100.0),
            "win": ("Win %", True, False, 1.0)}


def uncertainty(per: dict, *, draws: int = 1000, seed: int = 0, reference: str = "CMS") -> dict:
    """95% bootstrap CIs over faces of every cell, and each method against ``reference`` on the same faces.

    Args:
      per: `metrics.per_face` of the table's faces.
      draws: bootstrap draws.
      seed: their seed (the same faces resampled for every method).
      reference: the method the others are compared with (paired bootstrap of reference − method;
        Wilcoxon, McNemar for % Increase: `figures.paired`).

    Returns:
      ``{"n", "draws", "reference", "methods": {m: {metric: {"mean", "ci", "n"}}},
      "vs_reference": {m: {metric: {"diff", "ci", "n", "test", "p"}}}}``; % Increase in percent.
    """
    from cms_jax.figures.paired import bootstrap_mean, paired

    def scaled(d: dict, f: float) -> dict:
        return {**d, **{k: (v * f if k in ("mean", "diff") else [c * f for c in v] if k == "ci" else v)
                        for k, v in d.items() if k in ("mean", "diff", "ci")}}

    out = {"n": int(len(next(iter(per.values()))["win"])), "draws": draws, "reference": reference,
           "methods": {}, "vs_reference": {}}
    for m, r in per.items():
        out["methods"][m] = {k: scaled(bootstrap_mean(r[k], draws=draws, seed=seed), _COLUMNS[k][3])
                             for k in _COLUMNS}
        if m != reference and reference in per:
            out["vs_reference"][m] = {k: scaled(paired(per[reference][k], r[k], binary=_COLUMNS[k][2],
                                                       draws=draws, seed=seed), _COLUMNS[k][3])
                                      for k in _COLUMNS}
    return out


def uncertainty_markdown(u: dict) -> str:
    """The CIs of `uncertainty` and the paired differences from its reference, as Markdown."""
    cols = list(_COLUMNS)
    lines = [f"95% bootstrap CIs over faces (n = {u['n']}, {u['draws']} draws):", "",
             "| method | " + " | ".join(_COLUMNS[k][0] for k in cols) + " |", "|---|" + "---|" * len(cols)]
    for m, r in u["methods"].items():
        lines.append(f"| {m} | " + " | ".join(f"{r[k]['mean']:.2f} [{r[k]['ci'][0]:.2f}, {r[k]['ci'][1]:.2f}]"
                                              for k in cols) + " |")
    if u["vs_reference"]:
        ref = u["reference"]
        lines += ["", f"{ref} − method on the same faces (95% paired bootstrap CI; p of Wilcoxon, McNemar for "
                      f"% Increase):", "", "| method | " + " | ".join(_COLUMNS[k][0] for k in cols) + " |",
                  "|---|" + "---|" * len(cols)]
        for m, r in u["vs_reference"].items():
            lines.append(f"| {m} | " + " | ".join(
                f"{r[k]['diff']:+.2f} [{r[k]['ci'][0]:+.2f}, {r[k]['ci'][1]:+.2f}] p={r[k]['p']:.2g}"
                for k in cols) + " |")
    return "\n".join(lines)


def folder_label(model: str) -> str:
    """A model's name in Fig. 10's sub-folders: a built-in name, a file's name, or for a trained
    model's ``.../<run>/model`` folder the run's name."""
    parts = [p for p in model.replace(os.sep, "/").split("/") if p]
    if len(parts) >= 2 and parts[-1] == "model":
        return parts[-2]
    return parts[-1] if parts else model


def run(cfg: MetricsConfig, out_dir: str) -> list[dict]:
    """Fig. 9 (one model, or the smoke inputs) or Fig. 10 (``cfg.models``: a table each + fig10.md).

    Returns:
      The tables, one per model.
    """
    if cfg.smoke:
        return [table_for(smoke_inputs(), cfg, out_dir)[0]]
    if not cfg.models:
        return [table_for(real_inputs(cfg, cfg.model, out_dir), cfg, out_dir)[0]]
    tables, mds = [], []
    for i, name in enumerate(cfg.models):
        sub = os.path.join(out_dir, f"{i}_{folder_label(name)}")
        table, md = table_for(real_inputs(cfg, name, sub), cfg, sub, label=folder_label(name))
        tables.append(table)
        mds.append(md)
    with open(os.path.join(out_dir, "fig10.md"), "w") as f:
        f.write("\n\n".join(mds) + "\n")
    return tables
