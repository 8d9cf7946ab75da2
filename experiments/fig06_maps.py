"""Fig. 6: (a) occlusion map, (b) CIS, (c) CMS and (d) the CMS reprojected onto the input, for a few faces.

  CMS_JAX_ASSETS=../shared python -m experiments.fig06_maps --model=gender \
      --images=../shared/faces/utkface --max_images=60 --out_dir=out/fig06

Writes fig06.png (one row per face) and fig06.json. The CMS is that of the image set (a run in
OUT_DIR/cms, or --cms_dir: a finished run of experiments/cms.py, whose settings are then used).
--smoke runs in seconds on the tiny model.
"""
from absl import app, flags, logging

from cms_jax.figures import common, maps
from cms_jax.pipeline import RunConfig

_MODEL = flags.DEFINE_string("model", "gender", "Built-in model name or a model file/dir.")
_IMAGES = flags.DEFINE_string("images", "", "Folder, glob, .txt list or comma-separated images.")
_MAX_IMAGES = flags.DEFINE_integer("max_images", 60, "Use the first N images (0 = all).")
_CMS_DIR = flags.DEFINE_string("cms_dir", "", "A finished run of experiments/cms.py to take the CMS from.")
_SHOW = flags.DEFINE_integer("show", 4, "Faces shown.")
_OUT_DIR = flags.DEFINE_string("out_dir", "out/fig06", "Output folder.")
_WORKERS = flags.DEFINE_integer("workers", 2, "Host worker processes (decode + MediaPipe).")
_SMOKE = flags.DEFINE_bool("smoke", False, "Seconds-long run: tiny model, 3 CelebA samples.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # Orbax logs every checkpoint step at INFO
    if _SMOKE.value:
        cfg = RunConfig(model="tiny", images=common.smoke_images(3), batch_size=256)
    else:
        cfg = RunConfig(model=_MODEL.value, images=_IMAGES.value, max_images=_MAX_IMAGES.value, incremental="auto")
    result = maps.figure(cfg, _OUT_DIR.value, show=2 if _SMOKE.value else _SHOW.value, cms_dir=_CMS_DIR.value,
                         workers=0 if _SMOKE.value else _WORKERS.value)
    print(f"{len(result['faces'])} faces, CMS over {result['cms_images']} images -> {_OUT_DIR.value}/fig06.png")


if __name__ == "__main__":
    app.run(main)
