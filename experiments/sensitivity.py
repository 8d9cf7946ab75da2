"""Sensitivity of the CMS over the same faces: patch size, mesh, fill, probability vs logit, Eq. 6's reduction.

  CMS_JAX_ASSETS=../shared python -m experiments.sensitivity --model=gender \
      --images=../shared/faces/utkface_22k --max_images=1000 --out_dir=out/sensitivity

Each variant is a whole main-job run over the same faces (OUT_DIR/<variant>/, reused when
finished): patch 2, 8, 12 px; mesh subdivision 1; fill black instead of 0 in the normalised
input; the logit instead of the probability; and Eq. 6's 'covered' mean from the baseline's
drops. Writes sensitivity.json and sensitivity.md (also printed): each variant's Pearson and
Spearman with the baseline CMS on the pixels both cover and its region shares with their
change, beside the baseline's split-half floor. The logic is `cms_jax.figures.sensitivity`.
--smoke runs in seconds on the tiny model and 4 CelebA samples.
"""
from absl import app, flags, logging

from cms_jax.figures import sensitivity

_MODEL = flags.DEFINE_string("model", "gender", "Built-in model name or a model file/dir.")
_IMAGES = flags.DEFINE_string("images", "", "Folder, glob, .txt list or comma-separated images "
                              "(default: the CelebA samples).")
_MAX_IMAGES = flags.DEFINE_integer("max_images", 1000, "Use the first N images (0 = all).")
_CANVAS = flags.DEFINE_integer("canvas", 256, "Canonical canvas side of every run.")
_PATCHES = flags.DEFINE_list("patches", ["2", "8", "12"], "Patch sizes (input px) compared with the default.")
_BLUR = flags.DEFINE_float("blur_sigma", 0.0, "Sigma (input px) of the blur-fill variant (0: 10 px at 224, scaled).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the split halves.")
_WORKERS = flags.DEFINE_integer("workers", 2, "Host worker processes (decode + MediaPipe).")
_OUT_DIR = flags.DEFINE_string("out_dir", "out/sensitivity", "Output folder.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Seconds-long run: tiny model, 4 CelebA samples, 128 px canvas.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    sensitivity.run(sensitivity.SensitivityConfig(
        model=_MODEL.value, images=_IMAGES.value, max_images=_MAX_IMAGES.value, canvas=_CANVAS.value,
        patches=tuple(int(p) for p in _PATCHES.value), blur_sigma=_BLUR.value, seed=_SEED.value, workers=_WORKERS.value,
        smoke=_SMOKE.value), _OUT_DIR.value)


if __name__ == "__main__":
    app.run(main)
