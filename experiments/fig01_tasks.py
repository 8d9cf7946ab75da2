"""Fig. 1: the CMS of each face-task model side by side, over the same faces.

  CMS_JAX_ASSETS=../shared python -m experiments.fig01_tasks \
      --images=../shared/faces/utkface --max_images=60 --out_dir=out/fig01

Writes fig01.png (one CMS per model), fig01.json (region shares and peaks per model) and
one CMS run per model in OUT_DIR/<model>. --vgg_weights adds VGG-Face (or a fine-tuned VGG:
any model path `cms_jax.models.load` reads). --smoke runs in seconds on the tiny model.
"""
from absl import app, flags, logging

from cms_jax.figures import common, tasks
from cms_jax.pipeline import RunConfig

_MODELS = flags.DEFINE_list("models", list(tasks.DEFAULT_MODELS), "Built-in model names.")
_VGG = flags.DEFINE_string("vgg_weights", "", "VGG-Face model path (converted dir, .h5, .onnx) to add.")
_IMAGES = flags.DEFINE_string("images", "", "Folder, glob, .txt list or comma-separated images.")
_MAX_IMAGES = flags.DEFINE_integer("max_images", 60, "Use the first N images (0 = all).")
_OUT_DIR = flags.DEFINE_string("out_dir", "out/fig01", "Output folder.")
_WORKERS = flags.DEFINE_integer("workers", 2, "Host worker processes (decode + MediaPipe).")
_ALIGN_CACHE = flags.DEFINE_string("align_cache", "", "Landmark cache folder (default OUT_DIR/align_cache).")
_SMOKE = flags.DEFINE_bool("smoke", False, "Seconds-long run: tiny model, 3 CelebA samples.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # Orbax logs every checkpoint step at INFO
    if _SMOKE.value:
        base = RunConfig(images=common.smoke_images(3), batch_size=256)
        result = tasks.figure(base, _OUT_DIR.value, model_names=["tiny"], workers=0)
    else:
        base = RunConfig(images=_IMAGES.value, max_images=_MAX_IMAGES.value, incremental="auto")
        result = tasks.figure(base, _OUT_DIR.value, model_names=_MODELS.value,
                              extra={"vgg_face": _VGG.value} if _VGG.value else None, workers=_WORKERS.value,
                              align_cache=_ALIGN_CACHE.value or None)
    for name, r in result["models"].items():
        print(f"{name}: {r['images_done']} faces, region shares "
              + ", ".join(f"{k} {v:.0f}%" for k, v in r["region_shares"].items()))
    print(f"-> {_OUT_DIR.value}/fig01.png")


if __name__ == "__main__":
    app.run(main)
