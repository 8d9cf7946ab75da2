"""Fig. 9 / Fig. 10: Average Drop %, % Increase in Confidence and Win % of GradCAM, GradCAM++,
ScoreCAM and the reprojected CMS (Eqs. 7-11) for a model over a set of faces.

  CMS_JAX_ASSETS=../shared python -m experiments.fig09_metrics --model=gender \
      --images=../shared/faces/utkface --max_images=100 --label_from=utkface:gender \
      --out_dir=out/fig09_gender

Fig. 10 (several models of one task, one table each plus fig10.md side by side):

  CMS_JAX_ASSETS=../shared python -m experiments.fig09_metrics --models=gender,/path/other_gender.hdf5 \
      --images=../shared/faces/utkface --max_images=100 --out_dir=out/fig10

Writes fig09.json and fig09.md (the table, then every cell with its 95% bootstrap CI over faces
and the CMS against each CAM on the same faces: paired bootstrap, Wilcoxon / McNemar), per_face.npz, fig09_grid.png (Fig. 2-style:
face, GradCAM, GradCAM++, ScoreCAM, CMS) and heatmaps.npz. The CMS comes from, in order:
--cms_heatmaps (an .npz with ``files`` and ``heatmaps`` (N, H, W) at the model input size,
one per image, for CMS maps made elsewhere); --cms_dir (the output folder of
experiments/cms.py, whose cms.npy is reprojected onto each face, Fig. 6d); or, if neither is
given, a CMS job run here on the same images into OUT_DIR/cms (so the CMS is in-sample, as
in the paper, which computes CMS and metrics on the same CelebA subset). The logic is
`cms_jax.figures.metrics_table`. --smoke runs in seconds on the tiny model with synthetic
images and a synthetic (centred Gaussian) CMS.
"""
from absl import app, flags

from cms_jax.figures import metrics_table

_MODEL = flags.DEFINE_string("model", "gender", "Built-in model name or a model file/dir.")
_MODELS = flags.DEFINE_list("models", [], "Fig. 10: several models, each in OUT_DIR/<i>_<name>/.")
_IMAGES = flags.DEFINE_string("images", "", "Folder, glob, .txt list or comma-separated images.")
_MAX_IMAGES = flags.DEFINE_integer("max_images", 100, "Use the first N images (0 = all).")
_OUT_DIR = flags.DEFINE_string("out_dir", "out/fig09", "Output folder.")
_CMS_DIR = flags.DEFINE_string("cms_dir", "", "Output folder of experiments/cms.py to reproject.")
_CMS_NPZ = flags.DEFINE_string("cms_heatmaps", "", ".npz with files + (N, H, W) CMS heatmaps.")
_LABELS = flags.DEFINE_string("label_from", "", "Target class per file, SOURCE:FIELD (e.g. utkface:gender).")
_S_FRAC = flags.DEFINE_float("s_frac", 0.0, "Eq. 8 sum as a fraction of pixels (0 = mean of methods).")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Images per jitted baseline call.")
_SC_BATCH = flags.DEFINE_integer("scorecam_batch", 64, "Masked images per ScoreCAM forward pass.")
_GRID = flags.DEFINE_integer("grid_faces", 4, "Faces in the PNG grid.")
_BOOT = flags.DEFINE_integer("bootstrap", 1000, "Bootstrap draws of each 95% CI (faces resampled).")
_WORKERS = flags.DEFINE_integer("workers", 2, "Host worker processes for alignment.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Seconds-long run: tiny model, synthetic faces and CMS.")


def main(argv):
    del argv
    cfg = metrics_table.MetricsConfig(
        model=_MODEL.value, models=tuple(_MODELS.value), images=_IMAGES.value, max_images=_MAX_IMAGES.value,
        label_from=_LABELS.value, cms_dir=_CMS_DIR.value, cms_heatmaps=_CMS_NPZ.value, s_frac=_S_FRAC.value,
        batch_size=_BATCH.value, scorecam_batch=_SC_BATCH.value, grid_faces=_GRID.value, bootstrap=_BOOT.value,
        workers=_WORKERS.value, smoke=_SMOKE.value)
    metrics_table.run(cfg, _OUT_DIR.value)


if __name__ == "__main__":
    app.run(main)
