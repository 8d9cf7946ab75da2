"""Fine-tuning (cms_jax.train, experiments/finetune.py): labels, bins, training, resume, export."""
import dataclasses
import glob
import io
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from cms_jax import sources
from cms_jax.models import load, vgg
from cms_jax.models.outputs import _bin_probs
from cms_jax.sharding import data_mesh, data_sharding, replicate
from cms_jax.train import backbone, data, labels, trainer
from cms_jax.train.checkpoint import TrainCheckpoint

ROOT = os.path.join(os.path.dirname(__file__), "..")


# ---- labels and bins (no JAX) -------------------------------------------------------------

def test_age_bins_hand_computed():
    ages = [0, 9, 9.99, 10, 19, 20, 45, 89, 90, 117]
    assert labels.age_bin(ages).tolist() == [0, 0, 0, 1, 1, 2, 4, 8, 9, 9]
    assert len(labels.age_bin_names()) == 10 and labels.age_bin_names()[-1] == "age[90,inf)"
    with pytest.raises(ValueError, match="ages must be finite and >= 0"):
        labels.age_bin([-1])


def test_pose_bins_hand_computed_and_consistent_with_models_outputs():
    # (yaw, pitch) -> 3 * pitch_bin + yaw_bin with edges yaw +-15, pitch +-10; [a, b) bins.
    cases = {(-30, -20): 0, (0, -20): 1, (30, -20): 2, (-15.01, 0): 3, (0, 0): 4, (15, 0): 5,
             (-40, 10): 6, (14.9, 25): 7, (15, 10): 8, (-15, -10): 4}
    yaw, pitch = np.array(list(cases)).T
    assert labels.pose_bin(yaw, pitch).tolist() == list(cases.values())
    # Thresholds are parameters: yaw edges +-5 move yaw 10 to the right column.
    assert labels.pose_bin(10, 0, yaw_edges=(-5, 5)).item() == 5
    # Off the edges, the hard bin is the most likely soft bin of cms_jax.models.pose_bins
    # (same class order); on an edge the soft bins tie, so those cases are left out.
    off = ~np.isin(yaw, (-15, 15)) & ~np.isin(pitch, (-10, 10))
    py = np.asarray(_bin_probs(np.asarray(yaw[off], np.float32), (-15.0, 15.0), 0.01))
    pp = np.asarray(_bin_probs(np.asarray(pitch[off], np.float32), (-10.0, 10.0), 0.01))
    soft = (pp[:, :, None] * py[:, None, :]).reshape(int(off.sum()), 9).argmax(1)
    assert off.sum() == 6 and soft.tolist() == np.array(list(cases.values()))[off].tolist()
    assert labels.pose_bin_names()[0] == "pitch[-inf,-10)/yaw[-inf,-15)"
    with pytest.raises(ValueError, match="yaw_edges must be two increasing edges"):
        labels.pose_bin(0, 0, yaw_edges=(15, -15))


def test_celeba_attribute_reader(tmp_path):
    p = tmp_path / "list_attr_celeba.txt"
    p.write_text("3\n5_o_Clock_Shadow Male Smiling\n000001.jpg -1  1 -1\n000002.jpg  1 -1  1\n"
                 "000003.jpg -1 -1  1\n")
    assert sources.read_celeba_attr(p, "Male") == {"000001.jpg": True, "000002.jpg": False, "000003.jpg": False}
    assert sources.read_celeba_attr(p, "Smiling") == {"000001.jpg": False, "000002.jpg": True, "000003.jpg": True}
    files, y, names = labels.load_labels(f"celeba:{p}:Smiling", ["/x/000003.jpg", "/x/999.jpg", "/x/000001.jpg"])
    assert files == ["/x/000003.jpg", "/x/000001.jpg"] and y.tolist() == [1, 0]
    assert names == ("not_Smiling", "Smiling")
    with pytest.raises(ValueError, match="no attribute 'Bald'; it has 5_o_Clock_Shadow, Male, Smiling"):
        sources.read_celeba_attr(p, "Bald")
    bad = tmp_path / "bad.txt"
    bad.write_text("1\nMale Smiling\n000001.jpg 1 0\n")
    with pytest.raises(ValueError, match="line 3: Smiling is '0', expected 1 or -1"):
        sources.read_celeba_attr(bad, "Smiling")


def test_csv_and_utkface_labels(tmp_path):
    c = tmp_path / "l.csv"
    c.write_text("file,label\na.jpg,happy\nb.jpg,sad\nc.jpg,happy\n")
    kept, y, names = labels.load_labels(f"csv:{c}", ["/d/c.jpg", "/d/x.jpg", "/d/b.jpg", "/d/a.jpg"])
    assert names == ("happy", "sad") and kept == ["/d/c.jpg", "/d/b.jpg", "/d/a.jpg"] and y.tolist() == [0, 1, 0]
    c.write_text("a.jpg,2\nb.jpg,0\n")
    _, y, names = labels.load_labels(f"csv:{c}", ["a.jpg", "b.jpg"])
    assert y.tolist() == [2, 0] and names == ("class_0", "class_1", "class_2")
    files = ["d/26_0_1_2017.jpg.chip.jpg", "d/93_1_0_2017.jpg", "d/notutk.jpg"]
    kept, y, names = labels.load_labels("utkface:gender", files)
    assert kept == files[:2] and y.tolist() == [1, 0] and names == ("woman", "man")  # 0 male -> 'man'
    assert labels.load_labels("utkface:age_bin", files)[1].tolist() == [2, 9]
    kept, y, names = labels.load_labels("utkface:race", files)
    assert y.tolist() == [1, 0] and names[:2] == ("White", "Black")


def test_split_is_a_stable_hash_and_batches_are_seeded():
    files = [f"/a/img_{i}.jpg" for i in range(400)]
    val = data.is_validation(files, 0.25)
    assert 0.18 < val.mean() < 0.32
    # Same answer for the same base names in another folder and order.
    moved = [f.replace("/a/", "/b/") for f in files[::-1]]
    assert (data.is_validation(moved, 0.25)[::-1] == val).all()
    # Batch order: a pure function of (seed, step); an epoch covers distinct examples.
    epoch0 = np.concatenate([data.batch_indices(50, 8, 3, s) for s in range(6)])
    assert len(set(epoch0.tolist())) == 48
    assert (data.batch_indices(50, 8, 3, 7) == data.batch_indices(50, 8, 3, 7)).all()
    assert not (data.batch_indices(50, 8, 3, 6) == data.batch_indices(50, 8, 4, 6)).all()
    with pytest.raises(ValueError, match="fewer than one batch"):
        data.steps_per_epoch(5, 8)


# ---- training on 32 UTKFace faces with the tiny twin --------------------------------------

@pytest.fixture(scope="module")
def utk32(shared_dir):
    files = sorted(glob.glob(os.path.join(shared_dir, "faces", "utkface", "*.jpg")))[::18][:32]
    kept, y, _ = labels.load_labels("utkface:gender", files)
    return data.load_faces(kept, y, (32, 32), mode="resize")


def _tiny_setup(steps=6, schedule="cosine"):
    bb = backbone.build("tiny", 2, seed=0)
    tx = backbone.make_optimizer("adamw", 3e-3, steps, schedule=schedule, params=bb.params)
    from cms_jax.models.base import make_preprocess
    n = bb.normalisation
    return bb, tx, vgg.abstract_vgg(bb.config)[0], make_preprocess("RGB", n["scale"], n["mean"], n["std"])


def test_loss_decreases_on_a_fixed_batch_and_step_compiles_once(utk32):
    assert len(utk32) == 32 and set(utk32.labels.tolist()) == {0, 1}
    bb, tx, graphdef, prep = _tiny_setup(steps=30, schedule="constant")
    mesh = data_mesh()
    assert mesh.shape["data"] == 8  # the multi-device path runs (tests/conftest.py)
    step = trainer.make_train_step(graphdef, tx, mesh)
    x = jax.device_put(prep(utk32.images[:16]), data_sharding(mesh))
    y = jax.device_put(utk32.labels[:16].astype(np.int32), data_sharding(mesh))
    # Placed as `trainer.train` places them, so the first call compiles the only version.
    params, opt = replicate(bb.params, mesh), replicate(tx.init(bb.params), mesh)
    losses = []
    for _ in range(30):
        params, opt, loss = step(params, opt, x, y)
        losses.append(float(loss))
    assert abs(losses[0] - np.log(2)) < 0.02 and np.mean(losses[-3:]) < 0.5 * losses[0], losses
    assert step._cache_size() == 1  # one compilation for every step


def test_freeze_conv_leaves_conv_layers_unchanged(utk32):
    bb, _, graphdef, prep = _tiny_setup()
    tx = backbone.make_optimizer("sgd", 1e-2, 5, freeze_conv=True, params=bb.params)
    mesh = data_mesh()
    step = trainer.make_train_step(graphdef, tx, mesh)
    x, y = data.train_batch(utk32, prep, 8, 0, 0)
    params, _, _ = step(bb.params, tx.init(bb.params), x, y)
    assert all(np.array_equal(params[k]["kernel"], bb.params[k]["kernel"]) for k in vgg.CONV_NAMES)
    assert not np.array_equal(params["fc8"]["kernel"], bb.params["fc8"]["kernel"])


def test_resume_after_stop_equals_uninterrupted_run(utk32, tmp_path):
    bb, tx, graphdef, prep = _tiny_setup(steps=6)
    train_set, val_set = utk32.subset(np.arange(32) < 24), utk32.subset(np.arange(32) >= 24)
    kw = dict(batch_size=8, steps=6, seed=1, fingerprint={"run": "a"}, checkpoint_every=2,
              stream=io.StringIO())
    full = trainer.train(bb.params, graphdef, tx, train_set, val_set, prep, ckpt_dir=str(tmp_path / "a"), **kw)
    part = trainer.train(bb.params, graphdef, tx, train_set, val_set, prep, ckpt_dir=str(tmp_path / "b"),
                         stop_at=5, **kw)
    assert not part.finished and part.step == 5
    # As if killed while writing step 5: the resume starts mid-epoch from step 4 (epoch 1, 1 step in).
    shutil.rmtree(tmp_path / "b" / "5")
    ckpt = TrainCheckpoint(str(tmp_path / "b"))
    assert ckpt.latest_step() == 4
    ckpt.close()
    with pytest.raises(ValueError, match="pass --resume"):
        trainer.train(bb.params, graphdef, tx, train_set, val_set, prep, ckpt_dir=str(tmp_path / "b"), **kw)
    with pytest.raises(ValueError, match="differs in run"):
        trainer.train(bb.params, graphdef, tx, train_set, val_set, prep, ckpt_dir=str(tmp_path / "b"),
                      resume=True, **{**kw, "fingerprint": {"run": "b"}})
    rest = trainer.train(bb.params, graphdef, tx, train_set, val_set, prep, ckpt_dir=str(tmp_path / "b"),
                         resume=True, **kw)
    assert rest.finished and rest.step == 6
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(rest.params)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(full.params["fc8"]["kernel"], bb.params["fc8"]["kernel"])
    assert [h["step"] for h in rest.history] == [3, 6] and rest.history == full.history
    assert 0.0 <= full.history[-1]["val_accuracy"] <= 1.0


def test_finetune_script_smoke_writes_a_loadable_model(tmp_path, shared_dir):
    out = tmp_path / "ft"
    env = {**os.environ, "CMS_JAX_ASSETS": shared_dir}
    r = subprocess.run([sys.executable, "-m", "experiments.finetune", "--smoke", f"--out_dir={out}"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "val accuracy" in r.stdout and "8/8 steps" in r.stderr  # the shared progress line
    s = json.loads((out / "summary.json").read_text())
    assert s["finished"] and s["steps_done"] == 8 and s["train_images"] + s["val_images"] == 32
    assert s["class_names"] == ["woman", "man"] and 0.0 <= s["val_accuracy"] <= 1.0
    assert [h["step"] for h in s["history"]] == [3, 6, 8]
    m = load(s["model_dir"])
    assert m.class_names == ("woman", "man") and m.input_size == (32, 32) and m.name == "tiny_gender"
    imgs = data.load_faces(sorted(glob.glob(os.path.join(shared_dir, "faces", "utkface", "*.jpg")))[:4],
                           np.zeros(4), (32, 32)).images
    scores = np.asarray(m(m.preprocess(imgs)))
    assert scores.shape == (4, 2) and np.isfinite(scores).all() and np.ptp(scores[:, 0]) > 0


def test_vgg_face_backbone_keeps_weights_and_replaces_fc8(tmp_path):
    # A converted directory in the VGG-Face format (tiny shape: no real VGG-Face weights here).
    from converters.common import save_converted
    from cms_jax.models.card import ModelCard

    cfg = dataclasses.replace(vgg.TINY, num_classes=7)
    src = vgg.init_vgg(cfg, seed=5)
    card = ModelCard(name="vggface_like", architecture="vgg16", config=cfg.to_dict(), input_size=(32, 32),
                     channels=3, colour="RGB", normalisation={"scale": 1.0, "mean": [1.0, 2.0, 3.0],
                                                              "std": [1.0, 1.0, 1.0]},
                     crop_policy="loose", crop_margin=0.5, class_names=tuple(f"id{i}" for i in range(7)))
    save_converted(tmp_path / "vf", src, card)
    bb = backbone.build("vgg_face", 3, weights=str(tmp_path / "vf"), seed=1)
    assert bb.config.num_classes == 3 and bb.params["fc8"]["kernel"].shape == (32, 3)
    assert not bb.params["fc8"]["bias"].any()
    for k in vgg.CONV_NAMES + ("fc6", "fc7"):
        np.testing.assert_array_equal(bb.params[k]["kernel"], src[k]["kernel"])
    assert (bb.normalisation["mean"], bb.crop_policy, bb.crop_margin) == ([1.0, 2.0, 3.0], "loose", 0.5)
    with pytest.raises(ValueError, match="fc6 is tied to it"):
        backbone.build("vgg_face", 3, weights=str(tmp_path / "vf"), input_size=64)
    with pytest.raises(ValueError, match="needs --weights=DIR"):
        backbone.build("vgg_face", 3)
    # The export round-trips through cms_jax.models.load with the card's preprocessing.
    m = load(backbone.export(str(tmp_path / "out"), bb.params, bb, ("a", "b", "c"), "ft"))
    assert m.class_names == ("a", "b", "c") and m.crop_policy == "loose"
    np.testing.assert_allclose(m.preprocess(np.full((1, 32, 32, 3), 10, np.uint8))[0, 0, 0], [9, 8, 7])


def test_shuffle_labels_permutes_the_training_labels_only(shared_dir, tmp_path, monkeypatch):
    """Adebayo's data-randomisation test trains on permuted labels; validation keeps the true ones."""
    from cms_jax.train import job
    from cms_jax.train.job import FinetuneConfig, finetune

    seen = {}

    class Stop(Exception):
        pass

    def capture(params, graphdef, tx, train_set, val_set, *a, **k):
        seen.setdefault("runs", []).append((train_set, val_set))
        raise Stop

    monkeypatch.setattr(job.trainer, "train", capture)
    cfg = FinetuneConfig(images=os.path.join(shared_dir, "faces", "utkface"), labels="utkface:gender",
                         backbone="tiny", crop="resize", max_images=64, steps=2, batch_size=8)
    for shuffle in (False, True):
        with pytest.raises(Stop):
            finetune(dataclasses.replace(cfg, shuffle_labels=shuffle), str(tmp_path / str(shuffle)), workers=0)
    (t0, v0), (t1, v1) = seen["runs"]
    assert t0.files == t1.files and np.array_equal(v0.labels, v1.labels)  # the same faces; validation true
    assert np.array_equal(np.sort(t0.labels), np.sort(t1.labels))  # a permutation: the class counts kept
    assert (t0.labels != t1.labels).mean() > 0.2  # ... that reassigns the labels
    assert cfg.fingerprint() != dataclasses.replace(cfg, shuffle_labels=True).fingerprint()
