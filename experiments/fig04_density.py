"""Fig. 4: the CIS with and without density normalisation (Eq. 4's P* against Eq. 5's P = P* / N).

  CMS_JAX_ASSETS=../shared python -m experiments.fig04_density --model=gender \
      --images=../shared/faces/utkface --max_images=60 --out_dir=out/fig04

Writes fig04.png (per face: P*, the count N, P; last row: over all faces) and fig04.json (the
share of each facial region with and without normalisation). --cms_dir reuses a finished run
of experiments/cms.py (its drops.npz; no rescoring); otherwise the run goes to OUT_DIR/cms.
--smoke runs in seconds on the tiny model.
"""
import os

from absl import app, flags, logging

from cms_jax.figures import common, density
from cms_jax.pipeline import RunConfig

_MODEL = flags.DEFINE_string("model", "gender", "Built-in model name or a model file/dir.")
_IMAGES = flags.DEFINE_string("images", "", "Folder, glob, .txt list or comma-separated images.")
_MAX_IMAGES = flags.DEFINE_integer("max_images", 60, "Use the first N images (0 = all).")
_CMS_DIR = flags.DEFINE_string("cms_dir", "", "A finished run of experiments/cms.py to reuse.")
_SHOW = flags.DEFINE_integer("show", 3, "Faces shown.")
_OUT_DIR = flags.DEFINE_string("out_dir", "out/fig04", "Output folder.")
_WORKERS = flags.DEFINE_integer("workers", 2, "Host worker processes (decode + MediaPipe).")
_SMOKE = flags.DEFINE_bool("smoke", False, "Seconds-long run: tiny model, 3 CelebA samples.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # Orbax logs every checkpoint step at INFO
    if _CMS_DIR.value:
        run = common.load_run(_CMS_DIR.value)
    else:
        cfg = (RunConfig(model="tiny", images=common.smoke_images(3), batch_size=256) if _SMOKE.value else
               RunConfig(model=_MODEL.value, images=_IMAGES.value, max_images=_MAX_IMAGES.value))
        run = common.run_or_reuse(cfg, os.path.join(_OUT_DIR.value, "cms"),
                                  workers=0 if _SMOKE.value else _WORKERS.value)
    result = density.figure(run, _OUT_DIR.value, show=2 if _SMOKE.value else _SHOW.value)
    m = result["mean"]
    print(f"nose share {m['shares_unnormalised']['nose']:.1f}% without normalisation, "
          f"{m['shares_normalised']['nose']:.1f}% with -> {_OUT_DIR.value}/fig04.png")


if __name__ == "__main__":
    app.run(main)
