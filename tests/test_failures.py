"""A run fails loudly for systematic reasons, and never for one bad image or one missing label."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from cms_jax import models
from cms_jax.pipeline import RunConfig, run_job
from cms_jax.data.failures import FailurePolicy, RunFailed, reason_counts, signature
from cms_jax.scoring.labels import LabelRule
from cms_jax.pipeline.run import run_cms
from cms_jax.scoring.scorer import Scorer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def utk(tmp_path_factory, shared_dir):
    """Three UTKFace faces (labelled by name) and one CelebA face (no UTKFace name)."""
    d = tmp_path_factory.mktemp("utk")
    src = os.path.join(shared_dir, "faces", "utkface")
    for name in sorted(os.listdir(src))[:3]:
        shutil.copy(os.path.join(src, name), d / name)
    celeba = os.path.join(shared_dir, "faces", "celeba_samples", "images")
    shutil.copy(os.path.join(celeba, sorted(os.listdir(celeba))[0]), d / "zz_celeba_face.jpg")
    return str(d)


def test_policy_stops_on_a_streak_of_the_same_exception_only():
    p = FailurePolicy(consecutive=3)
    a, b = ("ValueError: boom", "tb-a"), ("KeyError: 'x'", "tb-b")
    for errs in ([a], [b], [a], [b], [], [a], [a, b]):  # never three in a row
        p.chunk(errs, "counts")
    with pytest.raises(RunFailed, match=r"3 consecutive chunks.*ValueError: boom[\s\S]*counts[\s\S]*tb-a"):
        p.chunk([a], "counts")


def test_policy_final_rules():
    p = FailurePolicy(max_skip_fraction=0.5)
    p.final(total=10, done=5, skipped=5, reasons={"no face": 5})  # exactly half: allowed
    with pytest.raises(RunFailed, match=r"60.0% of the images were skipped.*6 x no face"):
        p.final(total=10, done=4, skipped=6, reasons={"no face": 6})
    with pytest.raises(RunFailed, match="no image was scored"):
        FailurePolicy(max_skip_fraction=1.0).final(total=3, done=0, skipped=3, reasons={"unreadable": 3})


def test_signature_ignores_the_file_name():
    e1 = OSError("cannot read /data/a/img_001.jpg")
    e2 = OSError("cannot read /data/a/img_002.jpg")
    assert signature(e1, "/data/a/img_001.jpg") == signature(e2, "/data/a/img_002.jpg") == "OSError: cannot read <file>"
    assert reason_counts([{"reason": "error: OSError: x"}, {"reason": "error: OSError: y"},
                          {"reason": "no face"}]) == {"error: OSError": 2, "no face": 1}


def test_label_rule_follows_the_models_class_order():
    gender = models.load("gender")  # classes (woman, man)
    rule = LabelRule("utkface:gender", gender)
    assert rule("/x/25_0_1_2017.jpg.chip.jpg") == (gender.class_names.index("man"), None)
    assert rule("/x/25_1_1_2017.jpg.chip.jpg") == (gender.class_names.index("woman"), None)
    flipped = LabelRule("utkface:gender", dataclasses.replace(gender, class_names=("Male", "Female")))
    assert flipped("/x/25_0_1_2017.jpg.chip.jpg") == (0, None)
    label, why = rule("/x/celeba_000123.jpg")
    assert label is None and why.startswith("no label")


def test_label_rule_from_a_csv_matches_class_names(tmp_path):
    expression = models.load("expression")
    (tmp_path / "l.csv").write_text("file,label\na.jpg,Happy\nb.jpg,sad\n")
    rule = LabelRule(f"csv:{tmp_path / 'l.csv'}", expression)
    assert rule("/d/a.jpg") == (expression.class_names.index("happy"), None)
    assert rule("/d/b.jpg") == (expression.class_names.index("sad"), None)
    assert rule("/d/c.jpg")[1] == f"no label: the file is not in {tmp_path / 'l.csv'}"
    (tmp_path / "bad.csv").write_text("a.jpg,smirk\n")
    with pytest.raises(ValueError, match="gives 'smirk', which matches 0 classes"):
        LabelRule(f"csv:{tmp_path / 'bad.csv'}", expression)


def test_label_rule_that_does_not_fit_the_model_fails_before_scoring(utk, tmp_path):
    cfg = RunConfig(model="expression", images=utk, label_from="utkface:gender")
    with pytest.raises(ValueError, match=r"label_from=utkface:gender gives 'female', which matches 0 classes of model 'expression'.*angry"):
        run_cms(cfg, str(tmp_path / "out"), workers=0, show_progress=False)
    assert not os.path.exists(tmp_path / "out" / "checkpoints")  # nothing was started


def test_unlabelled_image_is_skipped_not_fatal(utk, tmp_path):
    cfg = RunConfig(model="gender", images=utk, label_from="utkface:gender", incremental="auto")
    s = run_job(cfg, str(tmp_path / "out"), workers=0, show_progress=False)
    assert (s["images_total"], s["images_done"]) == (4, 3)
    assert [k["reason"][:8] for k in s["images_skipped"]] == ["no label"]
    d = np.load(tmp_path / "out" / "drops.npz")
    man = models.load("gender").class_names.index("man")
    genders = [int(os.path.basename(f).split("_")[1]) for f in d["files"]]
    assert list(d["targets"]) == [man if g == 0 else 1 - man for g in genders]


def test_every_chunk_raising_stops_the_run(utk, tmp_path):
    cfg = RunConfig(model="tiny", images=utk)
    scorer = Scorer(cfg)

    def broken(*a, **k):
        raise RuntimeError("device out of memory")
    scorer.backend.engine.run = broken
    with pytest.raises(RunFailed, match=r"2 consecutive chunks, stopping: RuntimeError: device out of memory"
                                        r"[\s\S]*0 scored[\s\S]*Traceback"):
        run_cms(cfg, str(tmp_path / "out"), scorer=scorer, workers=0, chunk_images=1, show_progress=False,
                policy=FailurePolicy(consecutive=2))
    assert not os.path.exists(tmp_path / "out" / "cms.npy")


def test_cli_exits_non_zero_when_no_image_is_scored(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        (bad / f"broken_{i}.jpg").write_bytes(b"not a jpeg")
    env = {**os.environ, "PYTHONPATH": ROOT}
    env.pop("XLA_FLAGS", None)
    r = subprocess.run([sys.executable, "-m", "experiments.cms", "--model=tiny", f"--images={bad}",
                        f"--out_dir={tmp_path / 'out'}", "--workers=0", "--max_skip_fraction=1.0"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "the run failed: no image was scored. 3 images: 0 scored, 3 skipped" in r.stderr
    s = json.load(open(tmp_path / "out" / "summary.json"))  # the counts are still written
    assert s["images_done"] == 0 and len(s["images_skipped"]) == 3
    assert not os.path.exists(tmp_path / "out" / "cms.npy")  # no all-zero map


def test_too_many_skipped_writes_outputs_then_fails(utk, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(utk, folder)
    for i in range(5):
        (folder / f"zz_broken_{i}.jpg").write_bytes(b"not a jpeg")
    cfg = RunConfig(model="tiny", images=str(folder))
    with pytest.raises(RunFailed, match=r"55.6% of the images were skipped"):
        run_job(cfg, str(tmp_path / "out"), workers=0, show_progress=False)
    s = json.load(open(tmp_path / "out" / "summary.json"))
    assert s["images_done"] == 4 and os.path.exists(tmp_path / "out" / "cms.npy")


def test_regression_model_needs_a_target_and_embeddings_take_none():
    pose = models.load("headpose")  # yaw, pitch, roll: regression
    with pytest.raises(ValueError, match=r"regression outputs \('yaw', 'pitch', 'roll'\).*--target=yaw"):
        LabelRule("", pose)
    assert LabelRule("", pose, target="pitch")("/x/a.jpg") == (1, None)
    assert LabelRule("", pose, target="2")("/x/a.jpg") == (2, None)
    with pytest.raises(ValueError, match=r"--target='tilt'.*outputs \('yaw', 'pitch', 'roll'\)"):
        LabelRule("", pose, target="tilt")
    emb = dataclasses.replace(models.load("tiny"), output="embedding")
    with pytest.raises(ValueError, match="outputs an embedding"):
        LabelRule("", emb, target="0")
    ref = np.ones(4, np.float32)
    rule = LabelRule("", emb, references={"/x/a.jpg": ref, "/x/b.jpg": "no reference: identity 'p' has no other"})
    assert rule("/x/a.jpg")[0] is ref
    assert rule("/x/b.jpg") == (None, "no reference: identity 'p' has no other")
