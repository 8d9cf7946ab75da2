"""A face-embedding network trained here, for the pair audits of `cms_jax.verify`.

No pretrained face-recognition weights are among the assets, so the audit's
real model is trained on the LFW photos themselves, with a split a verifier
must have: the people are divided, not the photos. A person is held out for
evaluation when the hash of their name falls below ``eval_fraction``
(`data.is_validation` on the name: stable across runs and machines), so no
photo of an evaluation person is ever seen in training. Training people with
fewer than ``min_photos`` aligned photos are dropped (one photo gives the
margin loss nothing to pull together).

The network is the from-scratch VGG of `backbone` (``scratch``) whose fc8,
``dim`` wide, is the embedding; it is trained with the CosFace margin loss of
`losses` (one learnt centre per training person, dropped at export). After
each epoch, and at the end, it is judged by verification on the held-out
people: every genuine pair of their photos and every impostor pair, the
cosine of the two embeddings, TAR at each FAR and EER (`cms_jax.roc`), the
TAR with a 95% CI from a bootstrap over held-out people (pairs share photos,
so resampling pairs alone would understate the spread). Two controls are
measured on the same pairs: the cosine of the mean-centred pixels of the
model's crops, and the network at its random initial weights (step 0).

``train_embedding(cfg, out_dir)`` writes ``model/`` (a converted-model
directory with ``output: embedding``; ``cms_jax.models.load(out_dir + '/model')``),
``eval_images.txt`` (the held-out people's photos, for ``experiments/verify.py``),
``checkpoints/`` (resumable) and ``summary.json``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time

import jax
import numpy as np
from flax import nnx

from cms_jax import roc, sources
from cms_jax.models import vgg
from cms_jax.models.base import make_preprocess
from cms_jax.train import backbone, data, trainer


@dataclasses.dataclass(frozen=True)
class EmbeddingConfig:
    """An embedding run (the flags of ``experiments/train_embedding.py``)."""

    images: str                      # folder, glob, .txt list
    identity: str = "lfw:identity"   # the identity source (cms_jax.sources)
    dim: int = 128                   # embedding width (fc8)
    input_size: int = 64
    eval_fraction: float = 0.3       # share of the people held out (by a hash of the name)
    min_photos: int = 2              # training people need this many aligned photos
    batch_size: int = 64
    steps: int = 3000
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 5e-4
    seed: int = 0
    checkpoint_every: int = 500
    bootstrap: int = 300             # draws of the people bootstrap of the final metrics
    name: str = "lfw_cosface"

    def fingerprint(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("checkpoint_every")
        return d


def split_people(people, fraction: float) -> np.ndarray:
    """bool per person: True when held out for evaluation (hash of the name below ``fraction``)."""
    return data.is_validation(list(people), fraction)


def all_pairs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every unordered pair (i < j) of ``labels``: (i, j, same person)."""
    i, j = np.triu_indices(len(labels), k=1)
    return i, j, labels[i] == labels[j]


def cosine_matrix(e: np.ndarray) -> np.ndarray:
    e = np.asarray(e, np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    return e @ e.T


def verification(e: np.ndarray, labels: np.ndarray, fars=roc.FARS) -> dict:
    """TAR@FAR and EER of cosine verification over all pairs of ``e`` (module docstring)."""
    i, j, same = all_pairs(labels)
    s = cosine_matrix(e)[i, j]
    return roc.metrics(s[same], s[~same], fars)


def people_bootstrap(e: np.ndarray, labels: np.ndarray, far: float, draws: int, seed: int) -> dict:
    """95% percentile CIs of the TAR at ``far`` and of the EER, resampling people with replacement."""
    sim = cosine_matrix(e)
    people = np.unique(labels)
    rows = {p: np.flatnonzero(labels == p) for p in people}
    rng = np.random.default_rng(seed)
    tars, eers = [], []
    for _ in range(draws):
        pick = rng.choice(people, len(people), replace=True)
        idx = np.concatenate([rows[p] for p in pick])
        draw = np.concatenate([np.full(len(rows[p]), k) for k, p in enumerate(pick)])
        person = labels[idx]
        i, j = np.triu_indices(len(idx), k=1)
        # Each draw is a cluster: genuine pairs lie within one draw, impostor pairs join two different
        # people; pairs of two draws of the same person are neither (the original holds no such pair).
        same = draw[i] == draw[j]
        keep = same | (person[i] != person[j])
        i, j, same = i[keep], j[keep], same[keep]
        s = sim[idx[i], idx[j]]
        g, m = s[same], s[~same]
        tars.append(roc.tar_at(g, roc.threshold_at_far(m, far)))
        eers.append(roc.eer(g, m)[0])
    return {f"tar@far={far:g}": [float(np.percentile(tars, 2.5)), float(np.percentile(tars, 97.5))],
            "eer": [float(np.percentile(eers, 2.5)), float(np.percentile(eers, 97.5))],
            "draws": draws, "level": 0.95, "unit": "held-out people, resampled with replacement"}


def _embedder(graphdef, preprocess, batch: int = 256):
    fwd = jax.jit(lambda p, x: nnx.merge(graphdef, p)(x))

    def embed(params, images: np.ndarray) -> np.ndarray:
        net = {k: v for k, v in params.items() if k != "centres"}
        return np.concatenate([np.asarray(fwd(net, preprocess(images[i:i + batch])))
                               for i in range(0, len(images), batch)])
    return embed


def _faces(cfg: EmbeddingConfig, bb: backbone.Backbone, workers: int, cache_dir: str):
    from cms_jax.data.image_list import expand_images

    files = expand_images(cfg.images)
    names = sources.read(cfg.identity, files)
    unnamed = [{"file": f, "reason": f"no identity from {cfg.identity}"} for f, n in zip(files, names) if n is None]
    files, names = [f for f, n in zip(files, names) if n], [n for n in names if n]
    people = sorted(set(names))
    if len(people) < 4:
        raise ValueError(f"{cfg.images!r}: {len(people)} people by {cfg.identity!r}; an embedding needs many")
    index = {p: k for k, p in enumerate(people)}
    model = vgg.vgg_face_model(bb.params, bb.config, crop_policy=bb.crop_policy, crop_margin=bb.crop_margin)
    faces = data.load_faces(files, np.asarray([index[n] for n in names]), bb.config.input_size, mode="align",
                            model=model, workers=workers, cache_dir=cache_dir)
    faces.skipped = unnamed + faces.skipped
    return faces, people


def _split(faces: data.FaceSet, people: list[str], cfg: EmbeddingConfig):
    held = split_people(people, cfg.eval_fraction)
    photos = np.bincount(faces.labels, minlength=len(people))
    train_people = np.flatnonzero(~held & (photos >= cfg.min_photos))
    eval_people = np.flatnonzero(held & (photos >= 2))  # a genuine pair needs two photos
    train = faces.subset(np.isin(faces.labels, train_people))
    relabel = np.full(len(people), -1)
    relabel[train_people] = np.arange(len(train_people))
    train.labels = relabel[train.labels]
    return train, faces.subset(np.isin(faces.labels, eval_people)), train_people, eval_people


def train_embedding(cfg: EmbeddingConfig, out_dir: str, *, workers: int = 2, resume: bool = False,
                    stop_at: int | None = None, mesh=None, stream=None, align_cache: str | None = None) -> dict:
    """Train (or resume) the embedding network; returns the summary (also written to summary.json)."""
    t0 = time.time()
    os.makedirs(out_dir, exist_ok=True)
    bb = backbone.build("scratch", cfg.dim, input_size=cfg.input_size, seed=cfg.seed)
    faces, people = _faces(cfg, bb, workers, align_cache or os.path.join(out_dir, "align_cache"))
    train_set, eval_set, train_people, eval_people = _split(faces, people, cfg)
    if len(train_people) < 2 or len(eval_people) < 2:
        raise ValueError(f"the split leaves {len(train_people)} training and {len(eval_people)} evaluation people "
                         f"with enough photos ({len(faces)} faces aligned, {len(faces.skipped)} skipped"
                         f"{', e.g. ' + str(faces.skipped[0]) if faces.skipped else ''}); add images or change "
                         f"--eval_fraction")
    with open(os.path.join(out_dir, "eval_images.txt"), "w") as f:
        f.write("\n".join(eval_set.files) + "\n")
    norm = bb.normalisation
    preprocess = make_preprocess(bb.colour, norm["scale"], norm["mean"], norm["std"])
    rng = np.random.default_rng([cfg.seed, 1])
    params = {**bb.params, "centres": {"kernel": rng.normal(0.0, 1.0, (cfg.dim, len(train_people)))
                                       .astype(np.float32)}}
    tx = backbone.make_optimizer("adamw", cfg.lr, cfg.steps, warmup=cfg.warmup, weight_decay=cfg.weight_decay,
                                 params=params)
    graphdef, _ = vgg.abstract_vgg(bb.config)
    embed = _embedder(graphdef, preprocess)

    def validate(p):
        m = verification(embed(p, eval_set.images), eval_set.labels)
        return {"val_eer": m["eer"], **{f"val_tar@far={f:g}": m[f"tar@far={f:g}"]["tar"] for f in roc.FARS}}

    initial = verification(embed(params, eval_set.images), eval_set.labels)
    centred = eval_set.images.reshape(len(eval_set), -1).astype(np.float64)
    pixels = verification(centred - centred.mean(axis=1, keepdims=True), eval_set.labels)
    res = trainer.train(params, graphdef, tx, train_set, eval_set, preprocess, batch_size=cfg.batch_size,
                        steps=cfg.steps, seed=cfg.seed, ckpt_dir=os.path.join(out_dir, "checkpoints"),
                        fingerprint=cfg.fingerprint(), flip=True, resume=resume,
                        checkpoint_every=cfg.checkpoint_every, stop_at=stop_at, mesh=mesh, stream=stream,
                        objective="cosface", validate=validate)
    e = embed(res.params, eval_set.images)
    final = verification(e, eval_set.labels)
    i, j, same = all_pairs(eval_set.labels)
    summary = {
        "config": dataclasses.asdict(cfg), "steps_done": res.step, "finished": res.finished,
        "split": {"rule": f"people held out when the MD5 of the name < {cfg.eval_fraction} "
                          f"(cms_jax.train.data.is_validation); training people need >= {cfg.min_photos} photos, "
                          f"evaluation people >= 2",
                  "people": len(people), "train_people": len(train_people), "eval_people": len(eval_people),
                  "train_photos": len(train_set), "eval_photos": len(eval_set),
                  "eval_pairs": {"genuine": int(same.sum()), "impostor": int((~same).sum())},
                  "overlap_people": 0},
        "eval": final,
        "eval_ci": people_bootstrap(e, eval_set.labels, roc.FARS[0], cfg.bootstrap, cfg.seed),
        "controls": {"random_init": initial, "pixel_cosine": pixels},
        "history": res.history, "skipped": faces.skipped, "seconds": time.time() - t0, "model_dir": None,
    }
    if res.finished:
        net = {k: v for k, v in res.params.items() if k != "centres"}
        summary["model_dir"] = backbone.export(os.path.join(out_dir, "model"), net, bb,
                                               [f"dim_{k}" for k in range(cfg.dim)], cfg.name, output="embedding")
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary
