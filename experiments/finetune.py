"""Fine-tune a VGG backbone for a face task (paper Sec. 4.1.1), resumable, into a loadable model.

Paper setting (needs converted VGG-Face weights, `python -m converters.vgg_face_dag`):

  CMS_JAX_ASSETS=../shared python -m experiments.finetune --backbone=vgg_face --weights=runs/vgg_face \
      --images=../shared/faces/utkface --labels=utkface:gender --out_dir=out/finetune_gender

Without VGG-Face weights, a small VGG-shaped net from scratch on the UTKFace chips:

  CMS_JAX_ASSETS=../shared python -m experiments.finetune --backbone=scratch --crop=resize \
      --images=../shared/faces/utkface --labels=utkface:gender --steps=300 --batch_size=32 \
      --lr=1e-3 --out_dir=out/finetune_scratch

Labels: utkface:gender | utkface:age_bin (10 bins of 10 years) | utkface:race | celeba:list_attr_celeba.txt:Male |
csv:labels.csv (file,label). Writes <out_dir>/model (load with cms_jax.models.load, or feed to
`python -m experiments.cms --model=<out_dir>/model`), summary.json and checkpoints/; --resume
continues a killed run at the same step with the same data order.
"""
from absl import app, flags, logging

from cms_jax.train import FinetuneConfig, finetune

_IMAGES = flags.DEFINE_string("images", "", "Folder, glob or .txt list of face images.")
_LABELS = flags.DEFINE_string("labels", "utkface:gender", "SOURCE:FIELD: utkface:gender|age_bin|race, celeba:PATH:ATTRIBUTE or csv:PATH.")
_OUT_DIR = flags.DEFINE_string("out_dir", "out/finetune", "Output folder.")
_BACKBONE = flags.DEFINE_enum("backbone", "vgg_face", ["vgg_face", "tiny", "scratch"], "Network to train.")
_WEIGHTS = flags.DEFINE_string("weights", "", "Converted VGG-Face directory (backbone vgg_face).")
_INPUT = flags.DEFINE_integer("input_size", 0, "Input side for tiny/scratch (0: 32/64).")
_CROP = flags.DEFINE_enum("crop", "align", ["align", "resize"], "MediaPipe crop with the model's policy, "
                          "or a plain resize of already-cropped faces.")
_POLICY = flags.DEFINE_string("crop_policy", "", "Override crop policy (loose|tight|whole) of the model card.")
_MARGIN = flags.DEFINE_float("crop_margin", -1.0, "Override crop margin (fraction of the face box side).")
_MAX = flags.DEFINE_integer("max_images", 0, "Use the first N labelled images (0 = all).")
_VAL = flags.DEFINE_float("val_fraction", 0.2, "Validation share (hash of the file name).")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Global batch (multiple of the device count).")
_STEPS = flags.DEFINE_integer("steps", 1000, "Optimiser steps.")
_OPT = flags.DEFINE_enum("optimizer", "adamw", ["adamw", "sgd"], "adamw, or sgd with Nesterov momentum.")
_LR = flags.DEFINE_float("lr", 1e-4, "Peak learning rate.")
_SCHED = flags.DEFINE_enum("schedule", "cosine", ["cosine", "constant"], "Learning-rate schedule.")
_WARMUP = flags.DEFINE_integer("warmup", 0, "Linear warmup steps.")
_WD = flags.DEFINE_float("weight_decay", 1e-4, "Weight decay (kernels only).")
_MOM = flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
_FREEZE = flags.DEFINE_bool("freeze_conv", False, "Train only fc6-fc8.")
_FLIP = flags.DEFINE_bool("flip", True, "Random horizontal flips (turn off for head-pose yaw).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the new weights, data order and flips.")
_SHUFFLE = flags.DEFINE_bool("shuffle_labels", False, "Adebayo's data-randomisation test: train on the "
                             "training labels permuted (seeded); validation keeps the true labels.")
_CKPT = flags.DEFINE_integer("checkpoint_every", 100, "Steps between checkpoints.")
_WORKERS = flags.DEFINE_integer("workers", 2, "Alignment worker processes (--crop=align).")
_ALIGN_CACHE = flags.DEFINE_string("align_cache", "", "Landmark cache folder (default OUT_DIR/align_cache).")
_RESUME = flags.DEFINE_bool("resume", False, "Continue from the checkpoints in --out_dir.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Seconds-long run: tiny twin, 32 UTKFace faces, 8 steps.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # Orbax logs every checkpoint at INFO
    smoke = _SMOKE.value
    if smoke:
        from cms_jax.assets import resolve_dir
        images = str(resolve_dir("utkface"))
    cfg = FinetuneConfig(
        images=images if smoke else _IMAGES.value, labels="utkface:gender" if smoke else _LABELS.value,
        backbone="tiny" if smoke else _BACKBONE.value, weights=_WEIGHTS.value, input_size=_INPUT.value,
        crop="resize" if smoke else _CROP.value, crop_policy=_POLICY.value, crop_margin=_MARGIN.value,
        max_images=32 if smoke else _MAX.value, val_fraction=_VAL.value, batch_size=8 if smoke else _BATCH.value,
        steps=8 if smoke else _STEPS.value, optimizer=_OPT.value, lr=1e-3 if smoke else _LR.value,
        schedule=_SCHED.value, warmup=_WARMUP.value, weight_decay=_WD.value, momentum=_MOM.value,
        freeze_conv=_FREEZE.value, flip=_FLIP.value, seed=_SEED.value, shuffle_labels=_SHUFFLE.value,
        checkpoint_every=4 if smoke else _CKPT.value)
    s = finetune(cfg, _OUT_DIR.value, resume=_RESUME.value, workers=_WORKERS.value,
                 align_cache=_ALIGN_CACHE.value or None)
    print(f"{cfg.backbone} on {cfg.labels}: {s['steps_done']} steps, {s['train_images']} train / "
          f"{s['val_images']} val faces, val accuracy {s['val_accuracy']:.4f}, {s['seconds']:.1f}s "
          f"-> {s['model_dir']}")


if __name__ == "__main__":
    app.run(main)
