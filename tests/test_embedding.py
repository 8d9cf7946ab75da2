"""The embedding net trained for the pair audits: CosFace loss, the people split, the people bootstrap, the run."""
from __future__ import annotations

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from cms_jax import sources
from cms_jax.models import vgg
from cms_jax.train import embedding, losses


def test_cosface_loss_equals_a_hand_computation():
    config = vgg.VGGConfig(num_classes=8, input_size=(32, 32), widths=(4, 4, 4, 4, 4), fc_width=16)
    graphdef, _ = vgg.abstract_vgg(config)
    params = vgg.init_vgg(config, 0)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(8, 5)).astype(np.float32)
    x = rng.normal(size=(3, 32, 32, 3)).astype(np.float32)
    y = np.array([0, 4, 2])
    got = float(losses.cosface(graphdef, {**params, "centres": {"kernel": centres}}, jnp.asarray(x), jnp.asarray(y)))
    from flax import nnx
    e = np.asarray(nnx.merge(graphdef, params)(x), np.float64)
    cos = (e / np.linalg.norm(e, axis=1, keepdims=True)) @ (centres / np.linalg.norm(centres, axis=0))
    logits = losses.COSFACE_SCALE * (cos - losses.COSFACE_MARGIN * np.eye(5)[y])
    want = np.mean(np.log(np.exp(logits).sum(1)) - logits[np.arange(3), y])
    assert got == pytest.approx(want, rel=1e-5)


def test_people_split_is_stable_and_the_bootstrap_brackets_the_estimate():
    people = [f"Person_{k}" for k in range(400)]
    held = embedding.split_people(people, 0.3)
    assert 0.25 < held.mean() < 0.35
    assert (embedding.split_people(people[::-1], 0.3)[::-1] == held).all()  # order does not move anyone
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(40), 3)
    e = rng.normal(size=(40, 16))[labels] + 0.8 * rng.normal(size=(120, 16))
    m = embedding.verification(e, labels)
    assert (m["n_genuine"], m["n_impostor"]) == (40 * 3, 120 * 119 // 2 - 40 * 3)
    ci = embedding.people_bootstrap(e, labels, 0.01, 100, 0)
    assert ci["eer"][0] <= m["eer"] <= ci["eer"][1] and ci["eer"][1] < 0.5
    assert ci["tar@far=0.01"][0] <= m["tar@far=0.01"]["tar"] <= ci["tar@far=0.01"][1]


def test_train_embedding_holds_people_apart_and_exports_an_embedding_model(shared_dir, tmp_path):
    from cms_jax import models
    from cms_jax.train.data import is_validation

    import pathlib
    # Absolute: a .txt list's relative lines are read relative to the list (CI passes CMS_JAX_ASSETS=../shared).
    lfw = sorted((pathlib.Path(shared_dir).resolve() / "faces" / "lfw").glob("*.jpg"))[:200]
    listing = tmp_path / "photos.txt"
    listing.write_text("\n".join(map(str, lfw)))
    cfg = embedding.EmbeddingConfig(images=str(listing), dim=16, input_size=32, batch_size=16, steps=12, warmup=2,
                                    checkpoint_every=6, bootstrap=20)
    s = embedding.train_embedding(cfg, str(tmp_path / "run"), workers=0)
    sp = s["split"]
    evals = (tmp_path / "run" / "eval_images.txt").read_text().split()
    eval_people = set(sources.read("lfw:identity", evals))
    assert len(eval_people) == sp["eval_people"] and len(evals) == sp["eval_photos"]
    assert is_validation(sorted(eval_people), 0.3).all()  # every evaluation person is a held-out one
    photos = {os.path.basename(str(f)) for f in lfw}
    train_people = {sources.lfw_identity(f) for f in photos} - eval_people
    assert sp["train_people"] <= len(train_people) and sp["train_photos"] + sp["eval_photos"] <= len(lfw)
    assert sp["eval_pairs"]["genuine"] == s["eval"]["n_genuine"] and 0.0 <= s["eval"]["eer"] <= 1.0
    assert [h["step"] for h in s["history"]][-1] == 12 and "val_eer" in s["history"][-1]
    m = models.load(s["model_dir"])
    assert m.output == "embedding" and len(m.class_names) == 16
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["finished"]
