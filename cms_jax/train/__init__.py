"""Fine-tuning face models for the paper's tasks (Sec. 4.1.1): labels, data, training, export.

  labels      CelebA attribute files, file,label CSVs, UTKFace names; age and head-pose bins
  data        crops (aligned or resized), stable hash split, seeded batch order
  backbone    VGG-Face / tiny twin / small VGG from scratch; optax optimiser; converted-model export
  trainer     jit-compiled data-parallel train step, validation, progress
  checkpoint  resumable Orbax state
  job         ``finetune(FinetuneConfig, out_dir)``: the whole run
"""
from cms_jax.train.job import FinetuneConfig, finetune
from cms_jax.train.labels import (age_bin, age_bin_names, load_labels, pose_bin, pose_bin_names,
                                  read_celeba_attr, read_csv_labels, utkface_fields)

__all__ = ["FinetuneConfig", "age_bin", "age_bin_names", "finetune", "load_labels", "pose_bin",
           "pose_bin_names", "read_celeba_attr", "read_csv_labels", "utkface_fields"]
