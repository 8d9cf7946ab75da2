"""Fig. 15 without photo pairs: digital eye make-up on aligned faces, and the same paint on the
cheeks as a control; phi(man) of each gender model on all three versions.

  CMS_JAX_ASSETS=../shared python -m experiments.fig15_makeup --models=gender \
      --images=../shared/faces/utkface_22k --max_images=1000 --out_dir=out/fig15_makeup

Writes fig15_makeup.json, fig15_makeup.md (the table, also printed), fig15_makeup_<i>.png (example
faces per model) and fig15_makeup_<i>.npz (phi(man) per face). The logic is
`cms_jax.figures.makeup`. --smoke runs in seconds on the shipped gender model and 6 UTKFace faces.
"""
from absl import app, flags, logging

from cms_jax.figures import makeup

_MODELS = flags.DEFINE_list("models", ["gender"], "Gender models: built-in names or model files/dirs.")
_IMAGES = flags.DEFINE_string("images", "", "Faces whose gender --label_from gives (folder, glob, .txt list).")
_MAX = flags.DEFINE_integer("max_images", 1000, "Use the first N images (0 = all).")
_LABELS = flags.DEFINE_string("label_from", "utkface:gender", "True gender, SOURCE:FIELD.")
_EXAMPLES = flags.DEFINE_integer("examples", 6, "Faces in each example figure.")
_WORKERS = flags.DEFINE_integer("workers", 2, "Alignment worker processes.")
_ALIGN_CACHE = flags.DEFINE_string("align_cache", "", "Landmark cache folder (default OUT_DIR/align_cache).")
_OUT_DIR = flags.DEFINE_string("out_dir", "out/fig15_makeup", "Output folder.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Seconds-long run: the gender model on 6 UTKFace faces.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if _SMOKE.value:
        from cms_jax.assets import resolve_dir
        images, max_images, workers = str(resolve_dir("utkface")), 6, 0
    else:
        if not _IMAGES.value:
            raise app.UsageError("--images is required (faces with a gender label)")
        images, max_images, workers = _IMAGES.value, _MAX.value, _WORKERS.value
    result = makeup.run(_MODELS.value, images, _OUT_DIR.value, max_images=max_images,
                        label_from=_LABELS.value, examples=_EXAMPLES.value, workers=workers,
                        align_cache=_ALIGN_CACHE.value or f"{_OUT_DIR.value}/align_cache")
    print(makeup.markdown(result))


if __name__ == "__main__":
    app.run(main)
