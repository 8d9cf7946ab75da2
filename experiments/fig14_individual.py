"""Fig. 14: individual occlusion maps beside the model's CMS.

  CMS_JAX_ASSETS=../shared python -m experiments.fig14_individual --model=gender \
      --images=../shared/faces/utkface --max_images=60 --out_dir=out/fig14

Writes fig14.png (row 1: occlusion maps of single faces, then the CMS; row 2: their CIS) and
fig14.json (each CIS's similarity to the CMS). The CMS is that of the image set (a run in
OUT_DIR/cms, or --cms_dir: a finished run of experiments/cms.py). --smoke runs in seconds on
the tiny model.
"""
from absl import app, flags, logging

from cms_jax.figures import common, individual
from cms_jax.pipeline import RunConfig

_MODEL = flags.DEFINE_string("model", "gender", "Built-in model name or a model file/dir.")
_IMAGES = flags.DEFINE_string("images", "", "Folder, glob, .txt list or comma-separated images.")
_MAX_IMAGES = flags.DEFINE_integer("max_images", 60, "Use the first N images (0 = all).")
_CMS_DIR = flags.DEFINE_string("cms_dir", "", "A finished run of experiments/cms.py to take the CMS from.")
_SHOW = flags.DEFINE_integer("show", 5, "Faces shown.")
_OUT_DIR = flags.DEFINE_string("out_dir", "out/fig14", "Output folder.")
_WORKERS = flags.DEFINE_integer("workers", 2, "Host worker processes (decode + MediaPipe).")
_SMOKE = flags.DEFINE_bool("smoke", False, "Seconds-long run: tiny model, 3 CelebA samples.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # Orbax logs every checkpoint step at INFO
    if _SMOKE.value:
        cfg = RunConfig(model="tiny", images=common.smoke_images(3), batch_size=256)
    else:
        cfg = RunConfig(model=_MODEL.value, images=_IMAGES.value, max_images=_MAX_IMAGES.value, incremental="auto")
    result = individual.figure(cfg, _OUT_DIR.value, show=3 if _SMOKE.value else _SHOW.value,
                               cms_dir=_CMS_DIR.value, workers=0 if _SMOKE.value else _WORKERS.value)
    print(f"mean Spearman of single CIS maps with the CMS: {result['cis_vs_cms_spearman_mean']:.3f} "
          f"-> {_OUT_DIR.value}/fig14.png")


if __name__ == "__main__":
    app.run(main)
