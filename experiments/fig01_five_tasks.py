"""Fig. 1 with one architecture trained for five tasks (Sec. 4.1.1): labels, training, CMS per task.

At scale (the run behind RESULTS.md; hours on a 2-core CPU, resumable: rerun the same command):

  CMS_JAX_ASSETS=../shared python -m experiments.fig01_five_tasks \
      --images=../shared/faces/utkface_22k --steps=820 --batch_size=64 --lr=1e-3 --warmup=50 \
      --fig_images=1000 --out_dir=out/five_tasks

Pseudo-labels expression (FER-2013 model) and head-pose bins (FSA-Net), trains the same backbone
for gender, age bins, race, head pose and expression on one hash split, then draws Fig. 1 on the
first --fig_images held-out faces. Writes OUT_DIR/five_tasks.json, five_tasks.md and
fig01/fig01.png. --smoke runs in under a minute on the tiny twin.
"""
from absl import app, flags, logging

from cms_jax.figures import five_tasks
from cms_jax.train import FinetuneConfig

_IMAGES = flags.DEFINE_string("images", "", "UTKFace-named faces (folder, glob or .txt list).")
_OUT_DIR = flags.DEFINE_string("out_dir", "out/five_tasks", "Output folder.")
_TASKS = flags.DEFINE_list("tasks", list(five_tasks.TASKS), "Tasks to train.")
_BACKBONE = flags.DEFINE_enum("backbone", "scratch", ["scratch", "tiny"], "The one architecture.")
_INPUT = flags.DEFINE_integer("input_size", 64, "Input side.")
_STEPS = flags.DEFINE_integer("steps", 820, "Optimiser steps per task.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Batch size.")
_LR = flags.DEFINE_float("lr", 1e-3, "Peak learning rate (adamw, cosine).")
_WARMUP = flags.DEFINE_integer("warmup", 50, "Warmup steps.")
_VAL = flags.DEFINE_float("val_fraction", 0.2, "Held-out share (hash of the file name), the same for every task.")
_MAX = flags.DEFINE_integer("max_images", 0, "Use the first N faces (0 = all).")
_FIG = flags.DEFINE_integer("fig_images", 1000, "Held-out faces in Fig. 1.")
_WORKERS = flags.DEFINE_integer("workers", 2, "Alignment worker processes.")
_ALIGN_CACHE = flags.DEFINE_string("align_cache", "", "Landmark cache folder (default OUT_DIR/align_cache).")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Training seeds per task; with two or more, a permutation test of "
                           "whether seeds of one task agree more than different tasks.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Under a minute: tiny twin, 40 UTKFace faces, gender and expression "
                           "(a file-name label and a teacher's), seeds 0 and 1, 4 steps, 3 Fig. 1 faces.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # Orbax logs every checkpoint at INFO
    smoke = _SMOKE.value
    if smoke:
        from cms_jax.assets import resolve_dir
        images = str(resolve_dir("utkface"))
    base = FinetuneConfig(images="", backbone="tiny" if smoke else _BACKBONE.value, crop="align",
                          input_size=32 if smoke else _INPUT.value, max_images=40 if smoke else _MAX.value,
                          val_fraction=0.5 if smoke else _VAL.value, batch_size=8 if smoke else _BATCH.value,
                          steps=4 if smoke else _STEPS.value, lr=_LR.value, warmup=0 if smoke else _WARMUP.value,
                          checkpoint_every=200)
    result = five_tasks.run(images if smoke else _IMAGES.value, _OUT_DIR.value, base,
                            task_names=("gender", "expression") if smoke else _TASKS.value,
                            fig_images=3 if smoke else _FIG.value, fig_batch=256 if smoke else 1024,
                            workers=0 if smoke else _WORKERS.value, align_cache=_ALIGN_CACHE.value or None,
                            seeds=(0, 1) if smoke else tuple(int(k) for k in _SEEDS.value))
    md = five_tasks.markdown(result)
    with open(f"{_OUT_DIR.value}/five_tasks.md", "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    app.run(main)
