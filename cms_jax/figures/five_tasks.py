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


def model_name(task: str, seed: int) -> str:
    """A trained model's name in Fig. 1: the task, with ``_seed<k>`` beyond seed 0."""
    return task if seed == 0 else f"{task}_seed{seed}"


def seed_agreement(pairs: dict, task_of: dict[str, str], *, permutations: int = 10000, seed: int = 0) -> dict:
    """Do two seeds of one task agree more than two different tasks? A permutation test over models.

    ``pairs`` is `task_models.pairwise` of every trained model's CMS; ``task_of`` names each model's
    task. The statistic is the mean Pearson of same-task pairs (different seeds) minus the mean of
    different-task pairs; the task labels are shuffled over the models (the number of models per
    task kept), and p is the share of shuffles reaching the observed difference.

    Returns:
      ``{"within": {task: [r, ...]}, "within_mean", "between_mean", "difference", "p", "permutations"}``,
      or ``{"tested": False, "reason"}`` when no task has two seeds.
    """
    names = [n for n in pairs["names"] if n in task_of]
    r = np.asarray(pairs["pearson"], np.float64)[np.ix_([pairs["names"].index(n) for n in names],
                                                        [pairs["names"].index(n) for n in names])]
    labels = np.asarray([task_of[n] for n in names])
    iu = np.triu_indices(len(names), 1)
    vals = r[iu]

    def diff(lab):
        same = lab[iu[0]] == lab[iu[1]]
        return vals[same].mean() - vals[~same].mean() if same.any() and (~same).any() else np.nan

    obs = diff(labels)
    if not np.isfinite(obs):
        return {"tested": False, "reason": "no task has two seeds (or only one task)"}
    rng = np.random.default_rng(seed)
    null = np.asarray([diff(rng.permutation(labels)) for _ in range(permutations)])
    same = labels[iu[0]] == labels[iu[1]]
    within = {t: [float(v) for v, a, b in zip(vals, labels[iu[0]], labels[iu[1]]) if a == b == t]
              for t in sorted(set(labels))}
    return {"tested": True, "within": {t: v for t, v in within.items() if v},
            "within_mean": float(vals[same].mean()), "between_mean": float(vals[~same].mean()),
            "difference": float(obs), "p": float((1 + (null >= obs - 1e-12).sum()) / (1 + permutations)),
            "permutations": permutations, "models": len(names)}


def run(images: str, out_dir: str, base: FinetuneConfig, *, task_names=TASKS, fig_images: int = 1000,
        fig_batch: int = 1024, workers: int = 2, align_cache: str | None = None, seeds=(0,)) -> dict:
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
      seeds: training seeds per task (initial weights and batch order); seed 0 trains in
        ``task_<name>/``, seed k in ``task_<name>_seed<k>/``. With two or more, `seed_agreement`
        tests whether seeds of one task agree more than different tasks do.
    """
    cache = align_cache or os.path.join(out_dir, "align_cache")
    labels_dir = os.path.join(out_dir, "labels")
    files = expand_images(images, base.max_images)
    teach = {}
    for t in task_names:
        csv_path = os.path.join(labels_dir, t + ".csv")
        if t in pseudo.TEACHERS and not os.path.isfile(csv_path):
            teach[t] = pseudo.teach(t, files, csv_path, workers=workers, cache_dir=cache)
    trained, models, task_of = {}, {}, {}
    for t, sd in [(t, sd) for t in task_names for sd in seeds]:
        name = model_name(t, sd)
        cfg = dataclasses.replace(base, images=images, labels=label_spec(t, labels_dir), seed=sd,
                                  flip=base.flip and t != "headpose", name=f"{base.backbone}_{name}")
        run_dir = os.path.join(out_dir, f"task_{name}")
        done = os.path.join(run_dir, "summary.json")
        s = {}
        if os.path.isfile(done):
            with open(done) as f:
                s = json.load(f)
        if not s.get("model_dir"):
            s = finetune(cfg, run_dir, resume=os.path.isdir(os.path.join(run_dir, "checkpoints")),
                         workers=workers, align_cache=cache)
        counts = np.asarray(s["val_class_counts"])
        trained[name] = {"labels": cfg.labels, "classes": s["class_names"], "train_images": s["train_images"],
                         "val_images": s["val_images"], "val_accuracy": s["val_accuracy"],
                         "majority_baseline": float(counts.max() / max(counts.sum(), 1)),
                         "steps": s["steps_done"], "seconds": s["seconds"], "model_dir": s["model_dir"],
                         "task": t, "seed": sd}
        models[name] = s["model_dir"]
        task_of[name] = t
    held = heldout_list(files, base.val_fraction, fig_images, os.path.join(out_dir, "heldout.txt"))
    fig = tasks.figure(RunConfig(images=held, batch_size=fig_batch, incremental="auto"), os.path.join(out_dir, "fig01"),
                       model_names=(), extra=models, workers=workers, align_cache=cache)
    return common.write_json(os.path.join(out_dir, "five_tasks.json"), {
        "images": images, "backbone": base.backbone, "teachers": teach, "tasks": trained,
        "heldout_list": held, "fig01": fig, "seeds": list(seeds),
        "seed_agreement": seed_agreement(fig["pairwise"], task_of)})


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
    md = "\n".join(lines) + "\n\n" + task_models.markdown(result["fig01"]["pairwise"], "")
    a = result.get("seed_agreement", {})
    if a.get("tested"):
        md += (f"\nSeeds of one task agree at mean Pearson {a['within_mean']:.3f}, different tasks at "
               f"{a['between_mean']:.3f} (difference {a['difference']:+.3f}; permutation test over the "
               f"{a['models']} models' task labels, {a['permutations']} shuffles: p = {a['p']:.4f}).\n")
    return md
