"""Fine-tuning face models for the paper's tasks (Sec. 4.1.1): labels, data, training, export.

  labels      classes from a label source (cms_jax.sources); age and head-pose bins
  pseudo      labels from a teacher model (expression, head-pose bins), as the paper's FER/PRNet labels
  data        crops (aligned or resized), stable hash split, seeded batch order
  backbone    VGG-Face / tiny twin / small VGG from scratch; optax optimiser; converted-model export
  trainer     jit-compiled data-parallel train step, validation, progress
  checkpoint  resumable Orbax state
  job         ``finetune(FinetuneConfig, out_dir)``: the whole run
"""
from cms_jax.train.job import FinetuneConfig, finetune
from cms_jax.train.labels import age_bin, age_bin_names, load_labels, pose_bin, pose_bin_names

__all__ = ["FinetuneConfig", "age_bin", "age_bin_names", "finetune", "load_labels", "pose_bin",
           "pose_bin_names"]
