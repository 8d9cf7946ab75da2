"""Fig. 2: nine saliency methods side by side on a few faces (rows = faces, columns = methods).

  CMS_JAX_ASSETS=../shared python -m experiments.fig02_methods --model=gender \
      --images=../shared/faces/utkface --faces=6 --out_dir=out/fig02

Writes fig02.png (the face, vanilla gradients, SmoothGrad, guided backprop, guided GradCAM++,
GradCAM, GradCAM++, ScoreCAM, occlusion map, CIS reprojected), fig02.json (per method: seconds per
face and each map's correlation with the CIS, see `cms_jax.figures.methods`) and fig02_maps.npz.
--smoke runs in seconds on the tiny model.
"""
from absl import app, flags

from cms_jax.figures import common, methods
from cms_jax.pipeline import RunConfig

_MODEL = flags.DEFINE_string("model", "gender", "Built-in classifier name or a model file/dir.")
_IMAGES = flags.DEFINE_string("images", "", "Folder, glob, .txt list or comma-separated images.")
_FACES = flags.DEFINE_integer("faces", 4, "Rows: the first faces of the sorted list that align.")
_OUT_DIR = flags.DEFINE_string("out_dir", "out/fig02", "Output folder.")
_SHOW = flags.DEFINE_integer("show", 0, "Rows drawn in fig02.png (0 = every face); the statistics use all.")
_WORKERS = flags.DEFINE_integer("workers", 0, "Host worker processes for alignment.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Seconds-long run: tiny model, 2 CelebA samples.")


def main(argv):
    del argv
    if _SMOKE.value:
        cfg, faces = RunConfig(model="tiny", images=common.smoke_images(2), batch_size=256), 2
    else:
        cfg, faces = RunConfig(model=_MODEL.value, images=_IMAGES.value or common.smoke_images(8)), _FACES.value
    result = methods.figure(cfg, _OUT_DIR.value, faces=faces, workers=0 if _SMOKE.value else _WORKERS.value,
                             show=0 if _SMOKE.value else _SHOW.value)
    for key, r in result["methods"].items():
        print(f"{key:>17}: {1e3 * r['seconds_per_image']:8.1f} ms/face, Pearson vs CIS "
              f"{r['mean_pearson_vs_cis']:+.2f} [{r['ci_pearson_vs_cis'][0]:+.2f}, {r['ci_pearson_vs_cis'][1]:+.2f}], centre share {r['mean_centre_share']:.2f}")
    print(f"-> {_OUT_DIR.value}/fig02.png")


if __name__ == "__main__":
    app.run(main)
