"""Fig. 5: the CMS of n = 10, 50, 100, 200, ... images against the CMS of the whole set.

  CMS_JAX_ASSETS=../shared python -m experiments.fig05_num_images --model=gender \
      --images=../shared/faces/utkface --out_dir=out/fig05

Writes fig05.png (Pearson and Spearman correlation with the whole-set CMS against n, and between
the CMS of n images from disjoint halves of the set, mean ± sd over random orders), fig05_maps.png (the CMS at each n) and fig05.json. Subsets are formed from
the run's drops.npz without rescoring; --cms_dir reuses a finished run of experiments/cms.py,
otherwise the run goes to OUT_DIR/cms. --smoke runs in seconds on the tiny model.
"""
import os

from absl import app, flags, logging

from cms_jax.figures import common, num_images
from cms_jax.pipeline import RunConfig

_MODEL = flags.DEFINE_string("model", "gender", "Built-in model name or a model file/dir.")
_IMAGES = flags.DEFINE_string("images", "", "Folder, glob, .txt list or comma-separated images.")
_MAX_IMAGES = flags.DEFINE_integer("max_images", 0, "Use the first N images (0 = all).")
_CMS_DIR = flags.DEFINE_string("cms_dir", "", "A finished run of experiments/cms.py to reuse.")
_NS = flags.DEFINE_list("ns", [str(n) for n in num_images.DEFAULT_NS], "Subset sizes (the whole set is added).")
_ORDERS = flags.DEFINE_integer("orders", 5, "Random orders averaged.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random orders.")
_OUT_DIR = flags.DEFINE_string("out_dir", "out/fig05", "Output folder.")
_WORKERS = flags.DEFINE_integer("workers", 2, "Host worker processes (decode + MediaPipe).")
_SMOKE = flags.DEFINE_bool("smoke", False, "Seconds-long run: tiny model, 3 CelebA samples, n = 1, 2.")


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
    ns = [1, 2] if _SMOKE.value else [int(n) for n in _NS.value]
    result = num_images.figure(run, _OUT_DIR.value, ns=ns, orders=_ORDERS.value, seed=_SEED.value)
    for row in result["curve"]:
        print(f"n = {row['n']:>5}: pearson {row['pearson_mean']:.3f} ± {row['pearson_sd']:.3f}, "
              f"spearman {row['spearman_mean']:.3f} ± {row['spearman_sd']:.3f}")
    for row in result["split_half_curve"]:
        print(f"n = {row['n']:>5} vs n other images: pearson {row['pearson_mean']:.3f} ± {row['pearson_sd']:.3f}, "
              f"spearman {row['spearman_mean']:.3f} ± {row['spearman_sd']:.3f}")
    print(f"-> {_OUT_DIR.value}/fig05.png")


if __name__ == "__main__":
    app.run(main)
