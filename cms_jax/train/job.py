"""One fine-tuning run end to end: labels -> crops -> split -> train -> converted model.

``finetune(cfg, out_dir)`` writes under `out_dir`:
  checkpoints/   Orbax steps (resumable with ``resume=True``)
  model/         the fine-tuned network as a converted-model directory
                 (``cms_jax.models.load(out_dir + '/model')``)
  summary.json   config, classes, split sizes, skipped files, per-epoch history,
                 final validation accuracy, seconds.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np

from cms_jax.models import vgg
from cms_jax.models.base import make_preprocess
from cms_jax.train import backbone, data, labels, trainer


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """A fine-tuning run (the flags of ``experiments/finetune.py``)."""

    images: str                      # folder, glob, .txt list (cms_jax.data.image_list.expand_images)
    labels: str = "utkface:gender"   # utkface:gender|age_bin|race, celeba:PATH:ATTRIBUTE, csv:PATH
    backbone: str = "vgg_face"       # vgg_face | tiny | scratch
    weights: str = ""                # converted VGG-Face directory (backbone vgg_face)
    input_size: int = 0              # tiny / scratch input side (0: 32 / 64)
    crop: str = "align"              # align (MediaPipe + crop policy) | resize (already-cropped faces)
    crop_policy: str = ""            # override the backbone's crop policy ('' keeps it)
    crop_margin: float = -1.0        # override the backbone's crop margin (< 0 keeps it)
    max_images: int = 0
    val_fraction: float = 0.2
    batch_size: int = 32
    steps: int = 1000
    optimizer: str = "adamw"         # adamw | sgd (with momentum)
    lr: float = 1e-4
    schedule: str = "cosine"         # cosine | constant
    warmup: int = 0
    weight_decay: float = 1e-4
    momentum: float = 0.9
    freeze_conv: bool = False
    flip: bool = True
    seed: int = 0
    shuffle_labels: bool = False     # Adebayo's data randomisation: the training labels permuted (seeded)
    checkpoint_every: int = 100
    name: str = ""                   # model name in the card (default: backbone_task)

    def fingerprint(self) -> dict:
        """What a resumed run must share with the original (everything but bookkeeping)."""
        d = dataclasses.asdict(self)
        d.pop("checkpoint_every")
        return d


def _faces(cfg: FinetuneConfig, bb: backbone.Backbone, workers: int, cache_dir: str):
    from cms_jax.data.image_list import expand_images

    files, y, names = labels.load_labels(cfg.labels, expand_images(cfg.images))
    if cfg.max_images:
        files, y = files[:cfg.max_images], y[:cfg.max_images]
    if not files:
        raise ValueError(f"no labelled images: {cfg.images!r} has no file that {cfg.labels!r} labels")
    model = vgg.vgg_face_model(bb.params, bb.config, crop_policy=bb.crop_policy, crop_margin=bb.crop_margin)
    faces = data.load_faces(files, y, bb.config.input_size, mode=cfg.crop, model=model, workers=workers,
                            cache_dir=cache_dir)
    return faces, names


def finetune(cfg: FinetuneConfig, out_dir: str, *, resume: bool = False, workers: int = 2,
             stop_at: int | None = None, mesh=None, stream=None, align_cache: str | None = None) -> dict:
    """Run (or resume) a fine-tuning job; returns the summary (also written to summary.json).

    Args:
      cfg: the run.
      out_dir: output folder (see the module docstring).
      resume: continue from the checkpoints in `out_dir`.
      workers: host processes for face alignment (``crop='align'``).
      stop_at: stop after this step, checkpointed (tests, time-boxed runs); resume later.
      mesh: the ``data`` mesh (default: all local devices).
      stream: progress output (default stderr).
      align_cache: landmark cache folder (default ``out_dir/align_cache``); share one between the
        runs of several tasks on the same faces, since alignment does not depend on the task.
    """
    t0 = time.time()
    os.makedirs(out_dir, exist_ok=True)
    # Class count first (it sizes fc8): read the labels of the images alone, cheaply.
    from cms_jax.data.image_list import expand_images

    _, _, names = labels.load_labels(cfg.labels, expand_images(cfg.images))
    bb = backbone.build(cfg.backbone, len(names), weights=cfg.weights, input_size=cfg.input_size, seed=cfg.seed)
    if cfg.crop_policy or cfg.crop_margin >= 0:
        bb = dataclasses.replace(bb, crop_policy=cfg.crop_policy or bb.crop_policy,
                                 crop_margin=cfg.crop_margin if cfg.crop_margin >= 0 else bb.crop_margin)
    faces, names = _faces(cfg, bb, workers, align_cache or os.path.join(out_dir, "align_cache"))
    val = data.is_validation(faces.files, cfg.val_fraction)
    train_set, val_set = faces.subset(~val), faces.subset(val)
    if cfg.shuffle_labels:  # the labels no longer say anything about the faces; validation keeps the true ones
        perm = np.random.default_rng(cfg.seed + 7919).permutation(len(train_set.labels))
        train_set = dataclasses.replace(train_set, labels=train_set.labels[perm])
    norm = bb.normalisation
    preprocess = make_preprocess(bb.colour, norm["scale"], norm["mean"], norm["std"])
    tx = backbone.make_optimizer(cfg.optimizer, cfg.lr, cfg.steps, schedule=cfg.schedule, warmup=cfg.warmup,
                                 weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                                 freeze_conv=cfg.freeze_conv, params=bb.params)
    graphdef, _ = vgg.abstract_vgg(bb.config)
    res = trainer.train(bb.params, graphdef, tx, train_set, val_set, preprocess, batch_size=cfg.batch_size,
                        steps=cfg.steps, seed=cfg.seed, ckpt_dir=os.path.join(out_dir, "checkpoints"),
                        fingerprint=cfg.fingerprint(), flip=cfg.flip, resume=resume,
                        checkpoint_every=cfg.checkpoint_every, stop_at=stop_at, mesh=mesh, stream=stream)
    task = cfg.labels.split(":")[-1] if not cfg.labels.startswith("csv") else "csv"
    summary = {
        "config": dataclasses.asdict(cfg), "class_names": list(names), "steps_done": res.step,
        "finished": res.finished, "train_images": len(train_set), "val_images": len(val_set),
        "train_class_counts": np.bincount(train_set.labels, minlength=len(names)).tolist(),
        "val_class_counts": np.bincount(val_set.labels, minlength=len(names)).tolist(),
        "skipped": faces.skipped, "history": res.history,
        "val_accuracy": res.history[-1]["val_accuracy"] if res.history else None,
        "seconds": time.time() - t0, "model_dir": None,
    }
    if res.finished:
        summary["model_dir"] = backbone.export(os.path.join(out_dir, "model"), res.params, bb, names,
                                               cfg.name or f"{cfg.backbone}_{task}")
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary
