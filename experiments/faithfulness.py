"""Faithfulness on the same faces: CIS, CMS, GradCAM/++, ScoreCAM and RISE against four controls.

  CMS_JAX_ASSETS=../shared python -m experiments.faithfulness --model=gender --control_model=expression \
      --images=../shared/faces/utkface_22k --max_images=1000 --out_dir=out/faithfulness

Every method explains the class the model predicts on the clean face (the same target for all)
on the same faces; the controls (face oval, centred Gaussian, random map on the face, another
task's CMS) say what covering the face alone scores. Metrics: the paper's Average Drop, %
Increase and Win % (Eqs. 7-11, with the clip rate), Deletion and Insertion AUC (RISE) and ROAD
MoRF / LeRF with noisy linear imputation, each with a 95% bootstrap CI over faces, and each
method's paired difference from the CIS and from the face oval (bootstrap CI, Wilcoxon or
McNemar). The CMS runs of both models go into OUT_DIR/cms_<model> first (reused when finished).
Writes faithfulness.json, faithfulness.md (also printed) and heatmaps.npz. The logic is
`cms_jax.figures.faithfulness_table`. --smoke runs in seconds on the tiny model and 4 CelebA
samples (the control model is the tiny model too).
"""
from absl import app, flags

from cms_jax.figures import faithfulness_table as ft

_MODEL = flags.DEFINE_string("model", "gender", "The model to explain (built-in name or a model file/dir).")
_CONTROL = flags.DEFINE_string("control_model", "expression", "Another task's model: its CMS is a control.")
_IMAGES = flags.DEFINE_string("images", "", "Folder, glob, .txt list or comma-separated images "
                              "(default: the CelebA samples).")
_MAX_IMAGES = flags.DEFINE_integer("max_images", 1000, "Use the first N images (0 = all).")
_RISE = flags.DEFINE_integer("rise_masks", 1000, "RISE masks per face.")
_STEPS = flags.DEFINE_integer("steps", 32, "Deletion / insertion steps.")
_ROAD = flags.DEFINE_list("road_fractions", ["0.1", "0.3", "0.5", "0.7", "0.9"], "ROAD's removed fractions.")
_BOOT = flags.DEFINE_integer("bootstrap", 1000, "Bootstrap draws of every CI.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of RISE's masks, the random control, tie breaks and the bootstrap.")
_WORKERS = flags.DEFINE_integer("workers", 2, "Host worker processes (decode + MediaPipe).")
_OUT_DIR = flags.DEFINE_string("out_dir", "out/faithfulness", "Output folder.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Seconds-long run: tiny model, 4 CelebA samples, 32 RISE masks.")


def main(argv):
    del argv
    ft.run(ft.FaithConfig(model=_MODEL.value, control_model=_CONTROL.value, images=_IMAGES.value,
                          max_images=_MAX_IMAGES.value, rise_masks=_RISE.value, steps=_STEPS.value,
                          road_fractions=tuple(float(f) for f in _ROAD.value), bootstrap=_BOOT.value,
                          seed=_SEED.value, workers=_WORKERS.value, smoke=_SMOKE.value), _OUT_DIR.value)


if __name__ == "__main__":
    app.run(main)
