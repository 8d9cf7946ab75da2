"""Fig. 11: the CMS of several gender models side by side, over the same faces.

  CMS_JAX_ASSETS=../shared python -m experiments.fig11_gender_models \
      --models=gender,/path/other_gender.h5,/path/converted_dir --images=../shared/faces/utkface \
      --max_images=100 --out_dir=out/fig11 --align_cache=out/align_cache

Writes fig11.png (one CMS per model), fig11.json and fig11.md (the Pearson and Spearman
correlation of every pair of CMS maps over the pixels both cover; each map's share and density of
saliency per facial region) and one CMS run per model in OUT_DIR/<title>. Models are built-in
names or paths `cms_jax.models.load` reads (converted dirs, .h5, .onnx). --smoke runs in seconds:
the tiny model twice on 3 CelebA samples (the two maps correlate at 1).
"""
from absl import app, flags, logging

from cms_jax.figures import common, task_models
from cms_jax.pipeline import RunConfig

_MODELS = flags.DEFINE_list("models", ["gender"], "Built-in model names or model paths.")
_IMAGES = flags.DEFINE_string("images", "", "Folder, glob, .txt list or comma-separated images.")
_MAX_IMAGES = flags.DEFINE_integer("max_images", 100, "Use the first N images (0 = all).")
_LABEL_FROM = flags.DEFINE_string("label_from", "", "Score the labelled class (e.g. utkface:gender), "
                                  "not the predicted one; see `cms_jax.scoring.labels`.")
_OUT_DIR = flags.DEFINE_string("out_dir", "out/fig11", "Output folder.")
_WORKERS = flags.DEFINE_integer("workers", 2, "Host worker processes (decode + MediaPipe).")
_ALIGN_CACHE = flags.DEFINE_string("align_cache", "", "Landmark cache folder (default OUT_DIR/align_cache).")
_SMOKE = flags.DEFINE_bool("smoke", False, "Seconds-long run: the tiny model twice, 3 CelebA samples.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # Orbax logs every checkpoint step at INFO
    if _SMOKE.value:
        base, models, workers = RunConfig(images=common.smoke_images(3), batch_size=256), ["tiny", "tiny"], 0
    else:
        base = RunConfig(images=_IMAGES.value, max_images=_MAX_IMAGES.value, label_from=_LABEL_FROM.value,
                        incremental="auto")  # as the main job: the same drops, fewer FLOPs
        models, workers = _MODELS.value, _WORKERS.value
    result = task_models.figure(base, _OUT_DIR.value, models, workers=workers,
                                align_cache=_ALIGN_CACHE.value or None)
    for title, r in result["models"].items():
        print(f"{title}: {r['images_done']} faces, region shares "
              + ", ".join(f"{k} {v:.0f}%" for k, v in r["region_shares"].items()))
    p = result["pairwise"]
    for i, a in enumerate(p["names"]):
        for j in range(i + 1, len(p["names"])):
            print(f"Pearson {a} vs {p['names'][j]}: {p['pearson'][i][j]:.3f}")
    print(f"-> {_OUT_DIR.value}/fig11.png")


if __name__ == "__main__":
    app.run(main)
