"""One architecture, five tasks (Fig. 1's premise): teachers' pseudo-labels, the shared split, the run."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cms_jax.train import data, pseudo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_pose_teacher_outputs_become_the_papers_nine_bins():
    raw = np.asarray([[-20.0, -12.0, 3.0], [0.0, 0.0, 0.0], [20.0, 15.0, -5.0], [14.9, -10.0, 0.0]], np.float32)
    got = pseudo.to_labels("headpose", raw, ("yaw", "pitch", "roll"))
    assert got == ["pitch[-inf,-10)/yaw[-inf,-15)", "pitch[-10,10)/yaw[-15,15)", "pitch[10,inf)/yaw[15,inf)",
                   "pitch[-10,10)/yaw[-15,15)"]
    with pytest.raises(ValueError, match="yaw, pitch first"):
        pseudo.to_labels("headpose", raw, ("pitch", "yaw", "roll"))
    assert pseudo.to_labels("expression", np.eye(3, dtype=np.float32)[[2, 0]], ("a", "b", "c")) == ["c", "a"]


def test_five_tasks_smoke_trains_on_one_split_and_draws_fig1_on_held_out_faces(tmp_path):
    out = tmp_path / "five"
    res = subprocess.run([sys.executable, "-m", "experiments.fig01_five_tasks", "--smoke", f"--out_dir={out}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads((out / "five_tasks.json").read_text())
    assert list(r["tasks"]) == ["gender", "gender_seed1", "expression", "expression_seed1"]
    assert [r["tasks"][k]["seed"] for k in r["tasks"]] == [0, 1, 0, 1] and r["seeds"] == [0, 1]
    a = r["seed_agreement"]
    assert a["tested"] and a["models"] == 4 and set(a["within"]) == {"gender", "expression"}
    assert 0 < a["p"] <= 1 and a["difference"] == pytest.approx(a["within_mean"] - a["between_mean"])
    # The teacher's labels are FER-2013 class names, one per face it could align.
    with open(out / "labels" / "expression.csv") as f:
        rows = list(csv.reader(f))[1:]
    fer = {"angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}
    assert rows and {lab for _, lab in rows} <= fer
    assert r["teachers"]["expression"]["labelled"] == len(rows)
    assert sum(r["teachers"]["expression"]["class_counts"].values()) == len(rows)
    # Fig. 1's faces are held out of every task's training (one hash split for all tasks).
    held = (out / "heldout.txt").read_text().split()
    assert len(held) == 3 and data.is_validation(held, 0.5).all()
    for t, s in r["tasks"].items():
        assert 0.0 <= s["val_accuracy"] <= 1.0 and 0.0 < s["majority_baseline"] <= 1.0
        assert s["train_images"] + s["val_images"] <= 40
        m = r["fig01"]["models"][t]
        assert m["images_done"] == 3 and abs(sum(m["region_shares"].values()) - 100.0) < 1e-3
    assert (out / "fig01" / "fig01.png").is_file()
    pear = np.asarray(r["fig01"]["pairwise"]["pearson"])
    assert pear.shape == (4, 4) and np.allclose(np.diag(pear), 1.0) and (np.abs(pear) <= 1.0 + 1e-9).all()
    assert "| gender | utkface:gender | 2 |" in (out / "five_tasks.md").read_text()


def test_seed_agreement_against_a_planted_answer():
    from cms_jax.figures.five_tasks import seed_agreement
    names = [f"{t}{k}" for t in "abc" for k in range(3)]
    task_of = {n: n[0] for n in names}
    rng = np.random.default_rng(0)
    r = np.eye(9)
    for i in range(9):
        for j in range(i + 1, 9):
            r[i, j] = r[j, i] = (0.9 if names[i][0] == names[j][0] else 0.1) + rng.normal(0, 0.02)
    a = seed_agreement({"names": names, "pearson": r.tolist()}, task_of, permutations=2000)
    assert a["within_mean"] == pytest.approx(0.9, abs=0.02) and a["between_mean"] == pytest.approx(0.1, abs=0.02)
    assert a["p"] < 0.01  # 6 of the 1,680 label arrangements keep the three tasks apart
    # calibrated: with correlations unrelated to the tasks, p < 0.05 about 5% of the time
    hits = 0
    for _ in range(100):
        null = rng.uniform(-0.2, 0.6, (9, 9))
        null = (null + null.T) / 2
        np.fill_diagonal(null, 1.0)
        hits += seed_agreement({"names": names, "pearson": null.tolist()}, task_of, permutations=300)["p"] < 0.05
    assert hits <= 12, hits
    assert not seed_agreement({"names": names[:3], "pearson": r[:3, :3].tolist()},
                              {n: n for n in names[:3]})["tested"]
