"""Fig. 9 / Fig. 10: Average Drop %, % Increase in Confidence and Win % of GradCAM, GradCAM++,
ScoreCAM and the reprojected CMS (Eqs. 7-11) for a model over a set of faces.

  CMS_JAX_ASSETS=../shared python -m experiments.fig09_metrics --model=gender \
      --images=../shared/faces/utkface --max_images=100 --label_from=utkface:gender \
      --out_dir=out/fig09_gender

Fig. 10 (several models of one task, one table each plus fig10.md side by side):

  CMS_JAX_ASSETS=../shared python -m experiments.fig09_metrics --models=gender,/path/other_gender.hdf5 \
      --images=../shared/faces/utkface --max_images=100 --out_dir=out/fig10

Writes fig09.json and fig09.md (the table, also printed), fig09_grid.png (Fig. 2-style:
face, GradCAM, GradCAM++, ScoreCAM, CMS) and heatmaps.npz. The CMS comes from, in order:
--cms_heatmaps (an .npz with ``files`` and ``heatmaps`` (N, H, W) at the model input size,
one per image, for CMS maps made elsewhere); --cms_dir (the output folder of
experiments/cms.py, whose cms.npy is reprojected onto each face, Fig. 6d); or, if neither is
given, a CMS job run here on the same images into OUT_DIR/cms (so the CMS is in-sample, as
in the paper, which computes CMS and metrics on the same CelebA subset). --smoke runs in seconds on the
tiny model with synthetic images and a synthetic (centred Gaussian) CMS.
"""
import json
import os

import numpy as np
from absl import app, flags

from cms_jax import viz
from cms_jax.baselines import compare

_MODEL = flags.DEFINE_string("model", "gender", "Built-in model name or a model file/dir.")
_MODELS = flags.DEFINE_list("models", [], "Fig. 10: several models, each in OUT_DIR/<i>_<name>/.")
_IMAGES = flags.DEFINE_string("images", "", "Folder, glob, .txt list or comma-separated images.")
_MAX_IMAGES = flags.DEFINE_integer("max_images", 100, "Use the first N images (0 = all).")
_OUT_DIR = flags.DEFINE_string("out_dir", "out/fig09", "Output folder.")
_CMS_DIR = flags.DEFINE_string("cms_dir", "", "Output folder of experiments/cms.py to reproject.")
_CMS_NPZ = flags.DEFINE_string("cms_heatmaps", "", ".npz with files + (N, H, W) CMS heatmaps.")
_LABELS = flags.DEFINE_string("label_from", "", "Target class per file, SOURCE:FIELD (e.g. utkface:gender).")
_S_FRAC = flags.DEFINE_float("s_frac", 0.0, "Eq. 8 sum as a fraction of pixels (0 = mean of methods).")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Images per jitted baseline call.")
_SC_BATCH = flags.DEFINE_integer("scorecam_batch", 64, "Masked images per ScoreCAM forward pass.")
_GRID = flags.DEFINE_integer("grid_faces", 4, "Faces in the PNG grid.")
_WORKERS = flags.DEFINE_integer("workers", 2, "Host worker processes for alignment.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Seconds-long run: tiny model, synthetic faces and CMS.")


def _smoke_inputs():
    from cms_jax.models.vgg import tiny_vgg

    model = tiny_vgg()
    h, w = model.input_size
    crops = np.random.default_rng(0).integers(0, 256, (6, h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    blob = np.exp(-((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / (2 * (h / 6) ** 2)).astype(np.float32)
    return model, crops, np.broadcast_to(blob, crops.shape[:3]).copy(), None, [f"synthetic_{i}" for i in range(6)]


def _real_inputs(model_name: str, out_dir: str):
    """Model, aligned crops, their reprojected CMS maps, targets and file names."""
    from cms_jax import models
    from cms_jax.pipeline import RunConfig, default_images, run_job
    from cms_jax.pipeline.inputs import expand_images
    from cms_jax.pipeline.labels import LabelRule
    from cms_jax.pipeline.prepare import FacePreparer
    from cms_jax.pipeline.scoring import Scorer

    model = models.load(model_name)
    cfg = RunConfig(model=model_name, images=_IMAGES.value or default_images(),
                    max_images=_MAX_IMAGES.value, label_from=_LABELS.value,
                    incremental="auto")  # as the main job: same drops, fewer FLOPs where the model allows
    cms_npz = None
    if _CMS_NPZ.value:
        with np.load(_CMS_NPZ.value) as z:
            cms_npz = dict(zip([str(f) for f in z["files"]], z["heatmaps"]))
    elif _CMS_DIR.value:
        with open(os.path.join(_CMS_DIR.value, "summary.json")) as f:
            saved = json.load(f)["config"]
        cfg = RunConfig(**{**saved, "images": cfg.images, "max_images": cfg.max_images,
                           "label_from": cfg.label_from})  # same mesh, canvas and patch as the CMS
    cms_dir = _CMS_DIR.value or os.path.join(out_dir, "cms")
    if cms_npz is None and not _CMS_DIR.value:
        run_job(cfg, cms_dir, workers=_WORKERS.value)
    scorer = Scorer(cfg, model=model)
    cms = None if cms_npz is not None else np.load(os.path.join(cms_dir, "cms.npy"))
    crops, maps, targets, files = [], [], [], []
    rule = LabelRule(cfg.label_from, model)  # a rule that does not fit the model stops here
    preparer = FacePreparer(model, workers=_WORKERS.value)
    try:
        for p in preparer.imap(expand_images(cfg.images, cfg.max_images)):
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
        raise SystemExit(f"no usable faces in {cfg.images!r}")
    tg = None if any(t is None for t in targets) else np.asarray(targets)
    return model, np.stack(crops), np.stack(maps).astype(np.float32), tg, files


def table_for(inputs, out_dir: str) -> tuple[dict, str]:
    """Compute, write and print one model's Fig. 9 table and grid into ``out_dir``."""
    model, crops, cms_maps, targets, files = inputs
    table, maps = compare.fig9_table(model, crops, cms_maps, targets,
                                     s_frac=_S_FRAC.value or None, batch_size=_BATCH.value,
                                     scorecam_batch=16 if _SMOKE.value else _SC_BATCH.value)
    table["model"] = model.name
    table["s_rule"] = (f"s = {_S_FRAC.value} * H * W" if _S_FRAC.value
                       else "s = mean over methods of the min-max-normalised map sums")
    md = compare.markdown_table(table, title=f"{model.name}: Fig. 9 metrics")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "fig09.json"), "w") as f:
        json.dump(table, f, indent=2)
    with open(os.path.join(out_dir, "fig09.md"), "w") as f:
        f.write(md + "\n")
    np.savez_compressed(os.path.join(out_dir, "heatmaps.npz"), files=np.asarray(files),
                        **{k.replace("+", "p"): v for k, v in maps.items()})
    viz.save_png(os.path.join(out_dir, "fig09_grid.png"), compare.method_grid(crops, maps, _GRID.value))
    print(json.dumps(table, indent=2))
    print(md)
    return table, md


def main(argv):
    del argv
    if _SMOKE.value:
        table_for(_smoke_inputs(), _OUT_DIR.value)
        return
    if not _MODELS.value:
        table_for(_real_inputs(_MODEL.value, _OUT_DIR.value), _OUT_DIR.value)
        return
    mds = []
    for i, name in enumerate(_MODELS.value):
        sub = os.path.join(_OUT_DIR.value, f"{i}_{os.path.basename(name.rstrip('/'))}")
        mds.append(table_for(_real_inputs(name, sub), sub)[1])
    with open(os.path.join(_OUT_DIR.value, "fig10.md"), "w") as f:
        f.write("\n\n".join(mds) + "\n")


if __name__ == "__main__":
    app.run(main)
