"""Fig. 7: Adebayo et al.'s sanity check: randomise the model's layers cumulatively from the output
and compare each CMS with the trained model's (Spearman, |Spearman|, SSIM and HOG similarity),
over --draws independent draws, against the split-half noise floor and the fully random model.

  CMS_JAX_ASSETS=../shared python -m experiments.fig07_sanity --model=gender \
      --images=../shared/faces/utkface --max_images=150 --levels=1,2,4,8,15 --out_dir=out/fig07

Writes fig07.png (similarity against the number of layers randomised), fig07_maps.png (the
CMS of each model), fig07_maps.npz and fig07.json. --levels picks how many output-side layers
are randomised at each step (default 1, 2, 3, 4, 8, ..., all). --smoke runs in seconds on the
tiny model.
"""
from absl import app, flags, logging

from cms_jax.figures import common, sanity
from cms_jax.pipeline import RunConfig

_MODEL = flags.DEFINE_string("model", "gender", "Built-in model name or a model file/dir (not a black box).")
_IMAGES = flags.DEFINE_string("images", "", "Folder, glob, .txt list or comma-separated images.")
_MAX_IMAGES = flags.DEFINE_integer("max_images", 60, "Use the first N images (0 = all).")
_LEVELS = flags.DEFINE_list("levels", [], "Numbers of output-side layers randomised (default 1-4, then doubling).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random weights.")
_DRAWS = flags.DEFINE_integer("draws", 5, "Independent random draws of the cascade (and random half splits).")
_OUT_DIR = flags.DEFINE_string("out_dir", "out/fig07", "Output folder.")
_WORKERS = flags.DEFINE_integer("workers", 2, "Host worker processes (decode + MediaPipe).")
_ALIGN_CACHE = flags.DEFINE_string("align_cache", "", "Landmark cache folder (default OUT_DIR/align_cache).")
_SMOKE = flags.DEFINE_bool("smoke", False, "Seconds-long run: tiny model, 3 CelebA samples, 3 levels and all, "
                           "2 draws.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # Orbax logs every checkpoint step at INFO
    if _SMOKE.value:
        cfg, levels = RunConfig(model="tiny", images=common.smoke_images(3), batch_size=256), [1, 4, 10]
    else:
        cfg = RunConfig(model=_MODEL.value, images=_IMAGES.value, max_images=_MAX_IMAGES.value,
                        incremental="auto")  # as the main job: the same drops, fewer FLOPs where the model allows
        levels = [int(k) for k in _LEVELS.value] or None
    result = sanity.figure(cfg, _OUT_DIR.value, levels=levels, seed=_SEED.value,
                           draws=2 if _SMOKE.value else _DRAWS.value,
                           workers=0 if _SMOKE.value else _WORKERS.value,
                           align_cache=_ALIGN_CACHE.value or f"{_OUT_DIR.value}/align_cache")
    for r in result["levels"]:
        print(f"last {r['layers_randomised']:>2} layers randomised: spearman {r['spearman']:+.3f} "
              f"[{r['spearman_min']:+.3f}, {r['spearman_max']:+.3f}] ({r['negative_spearman_draws']} of "
              f"{result['draws']} draws negative), |spearman| {r['spearman_abs']:+.3f}, ssim {r['ssim']:+.3f}, "
              f"hog {r['hog']:+.3f}")
    print(f"-> {_OUT_DIR.value}/fig07.png")


if __name__ == "__main__":
    app.run(main)
