"""Fig. 15: a model's confidences on pairs of images (the paper's faces with and without eye
make-up; here any pairs listed in a CSV of file_a,file_b[,label]).

  CMS_JAX_ASSETS=../shared python -m experiments.fig15_pairs --model=gender \
      --pairs=pairs.csv --out_dir=out/fig15

Writes fig15.png (each pair with its confidences), fig15.json and fig15.md (the table, also
printed). Relative paths in the CSV are taken from its folder; the label is a class name or
index. --smoke runs in seconds on the tiny model with pairs of CelebA samples.
"""
import os

from absl import app, flags

from cms_jax.figures import common, pairs
from cms_jax.occlusion import SCORES
from cms_jax.pipeline import RunConfig

_MODEL = flags.DEFINE_string("model", "gender", "Built-in model name or a model file/dir.")
_PAIRS = flags.DEFINE_string("pairs", "", "CSV of file_a,file_b[,label].")
_SCORE = flags.DEFINE_enum("score", "prob", list(SCORES), "Confidence: softmax prob or raw logit.")
_OUT_DIR = flags.DEFINE_string("out_dir", "out/fig15", "Output folder.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Seconds-long run: tiny model, 2 pairs of CelebA samples.")


def main(argv):
    del argv
    if _SMOKE.value:
        files = common.smoke_images(4).split(",")
        csv_path = os.path.join(_OUT_DIR.value, "smoke_pairs.csv")
        os.makedirs(_OUT_DIR.value, exist_ok=True)
        with open(csv_path, "w") as fh:
            fh.write(f"file_a,file_b,label\n{files[0]},{files[1]},class_0\n{files[2]},{files[3]},\n")
        cfg = RunConfig(model="tiny", score=_SCORE.value)
    else:
        if not _PAIRS.value:
            raise app.UsageError("--pairs is required (CSV of file_a,file_b[,label])")
        csv_path, cfg = _PAIRS.value, RunConfig(model=_MODEL.value, score=_SCORE.value)
    pairs.figure(cfg, csv_path, _OUT_DIR.value)
    print(open(os.path.join(_OUT_DIR.value, "fig15.md")).read())


if __name__ == "__main__":
    app.run(main)
