"""Fig. 1's premise, testable: one architecture trained for five face tasks, then their CMSs.

The paper fine-tunes one network (VGG-Face) for recognition, gender, age,
head pose and expression, labelling CelebA with DEX, PRNet and a FER-2013
model, and finds that the same architecture looks at different parts of the
face for each task (Sec. 4.1.1, Fig. 1). The shipped models all differ in
architecture, so they cannot test that. Here one backbone
(`cms_jax.train.backbone`, the small VGG-16-shaped net unless told otherwise)
is trained from the same initial weights on the same faces for five tasks:

  gender, age_bin, race   from UTKFace file names (race stands in for
                          recognition: UTKFace has no identities)
  expression              pseudo-labels of the shipped FER-2013 model (`train.pseudo`)
  headpose                the paper's 9 yaw x pitch bins of FSA-Net's angles

Every task uses the same train/validation split (a hash of the file name,
`train.data.is_validation`), so the validation faces are held out of every
model; Fig. 1 is then drawn on the first ``fig_images`` of them
(`figures.tasks.figure`), with a region table per task.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from cms_jax.figures import common, task_models, tasks
from cms_jax.pipeline import RunConfig
from cms_jax.data.image_list import expand_images
from cms_jax.train import FinetuneConfig, data, finetune, pseudo

TASKS = ("gender", "age_bin", "race", "headpose", "expression")


def label_spec(task: str, labels_dir: str) -> str:
    """The label source of a task (`cms_jax.sources` syntax)."""
    if task in ("gender", "age_bin", "race"):
        return f"utkface:{task}"
    if task in pseudo.TEACHERS:
        return f"csv:{os.path.join(labels_dir, task + '.csv')}"
    raise ValueError(f"task {task!r}: expected one of {TASKS}")


def heldout_list(files, val_fraction: float, n: int, path: str) -> str:
    """Write the first `n` validation files (sorted) to a .txt list; returns its path."""
    val = [f for f, v in zip(files, data.is_validation(files, val_fraction)) if v][:n]
    if not val:
        raise ValueError(f"no validation file among {len(files)} (val_fraction {val_fraction})")
    with open(path, "w") as f:
        f.write("\n".join(val) + "\n")
    return path


def run(images: str, out_dir: str, base: FinetuneConfig, *, task_names=TASKS, fig_images: int = 1000,
        fig_batch: int = 1024, workers: int = 2, align_cache: str | None = None) -> dict:
    """Pseudo-label, train one model per task, draw Fig. 1 on held-out faces; returns fig05-style JSON.

    Args:
      images: the faces (folder, glob, list): UTKFace names for gender/age/race.
      out_dir: labels/, task_<name>/ (each a `finetune` run, resumable), fig01/, five_tasks.json.
      base: the training settings shared by every task (its ``labels`` and ``flip`` are set per task:
        no mirroring for head pose, whose yaw bins a mirror swaps).
      task_names: a subset of `TASKS`.
      fig_images: held-out faces in Fig. 1.
      fig_batch: the CMS runs' device batch.
      workers: alignment worker processes.
      align_cache: landmark cache shared by every step (default ``out_dir/align_cache``).
    """
    cache = align_cache or os.path.join(out_dir, "align_cache")
    labels_dir = os.path.join(out_dir, "labels")
    files = expand_images(images, base.max_images)
    teach = {}
    for t in task_names:
        csv_path = os.path.join(labels_dir, t + ".csv")
        if t in pseudo.TEACHERS and not os.path.isfile(csv_path):
            teach[t] = pseudo.teach(t, files, csv_path, workers=workers, cache_dir=cache)
    trained, models = {}, {}
    for t in task_names:
        cfg = dataclasses.replace(base, images=images, labels=label_spec(t, labels_dir),
                                  flip=base.flip and t != "headpose", name=f"{base.backbone}_{t}")
        run_dir = os.path.join(out_dir, f"task_{t}")
        done = os.path.join(run_dir, "summary.json")
        s = {}
        if os.path.isfile(done):
            with open(done) as f:
                s = json.load(f)
        if not s.get("model_dir"):
            s = finetune(cfg, run_dir, resume=os.path.isdir(os.path.join(run_dir, "checkpoints")),
                         workers=workers, align_cache=cache)
        counts = np.asarray(s["val_class_counts"])
        trained[t] = {"labels": cfg.labels, "classes": s["class_names"], "train_images": s["train_images"],
                      "val_images": s["val_images"], "val_accuracy": s["val_accuracy"],
                      "majority_baseline": float(counts.max() / max(counts.sum(), 1)),
                      "steps": s["steps_done"], "seconds": s["seconds"], "model_dir": s["model_dir"]}
        models[t] = s["model_dir"]
    held = heldout_list(files, base.val_fraction, fig_images, os.path.join(out_dir, "heldout.txt"))
    fig = tasks.figure(RunConfig(images=held, batch_size=fig_batch, incremental="auto"), os.path.join(out_dir, "fig01"),
                       model_names=(), extra=models, workers=workers, align_cache=cache)
    return common.write_json(os.path.join(out_dir, "five_tasks.json"), {
        "images": images, "backbone": base.backbone, "teachers": teach, "tasks": trained,
        "heldout_list": held, "fig01": fig})


def markdown(result: dict) -> str:
    """The accuracy and region table of a `run` result, as Markdown."""
    regions = list(next(iter(result["fig01"]["models"].values()))["region_shares"])
    lines = ["| task | labels | classes | val acc. | majority | faces in Fig. 1 | "
             + " | ".join(regions) + " |", "|" + "---|" * (6 + len(regions))]
    for t, r in result["tasks"].items():
        m = result["fig01"]["models"].get(t, {})
        shares = " | ".join(f"{m['region_shares'][k]:.1f}" for k in regions) if m else " | ".join("-" * len(regions))
        lines.append(f"| {t} | {r['labels'].split('/')[-1]} | {len(r['classes'])} | {r['val_accuracy']:.3f} | "
                     f"{r['majority_baseline']:.3f} | {m.get('images_done', 0)} | {shares} |")
    return "\n".join(lines) + "\n\n" + task_models.markdown(result["fig01"]["pairwise"], "")
