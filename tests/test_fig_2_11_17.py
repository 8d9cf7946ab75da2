"""Figs. 2, 11 and 17 (`cms_jax.figures.methods`, `task_models`, `nose_pose` + `nose_closeups`).

Each script runs in --smoke mode in this process (as tests/test_figures.py does: absl flags
registered, parsed and removed one script at a time) and its outputs are checked for content;
the numbers behind them (correlations, centre share, nose offsets, the nearest-centroid check)
are checked against cases with known answers.
"""
import json

import cv2
import numpy as np
import pytest

from cms_jax.figures import methods, nose_closeups, nose_pose, task_models
from script_runner import PANEL, run_script



def panels(path, rows, cols, side=PANEL):
    """The PNG as BGR; asserts it is rows x cols panels under a title strip."""
    im = cv2.imread(str(path))
    assert im is not None, f"{path} does not decode"
    assert im.shape[:2] == (side * rows + 40, side * cols), im.shape
    return im


def test_centre_share_of_known_maps():
    assert methods.centre_share(np.ones((8, 8))) == 0.0  # constant: normalises to zeros
    ramp = np.zeros((8, 8))
    ramp[2:6, 2:6] = 1.0
    assert methods.centre_share(ramp) == pytest.approx(1.0)
    noise = np.random.default_rng(0).random((64, 64))
    assert 0.2 < methods.centre_share(noise) < 0.3  # about the central quarter's area


def test_fig02_methods_smoke(tmp_path, shared_dir):
    run_script("fig02_methods", "--smoke", f"--out_dir={tmp_path}")
    r = json.loads((tmp_path / "fig02.json").read_text())
    cols = [k for k, _ in methods.COLUMNS]
    assert r["columns"] == cols and len(cols) == 9 and len(r["faces"]) == 2
    im = panels(tmp_path / "fig02.png", 2, 1 + len(cols))
    for row in range(2):
        for c in range(1 + len(cols)):
            tile = im[40 + row * PANEL + 30:40 + (row + 1) * PANEL - 10, c * PANEL + 10:(c + 1) * PANEL - 10]
            assert tile.std() > 8, f"panel ({row}, {c}) is blank"
    maps = np.load(tmp_path / "fig02_maps.npz")
    for key in cols:
        m = maps[key.replace("+", "p")]
        assert m.shape == (2, 32, 32) and np.isfinite(m).all()
        assert all(m[i].std() > 0 for i in range(2)), f"{key}: a constant map"
        rec = r["methods"][key]
        assert rec["seconds_per_image"] > 0 and rec["first_call_seconds"] > 0
        for p in rec["per_image"]:
            assert p["finite"] and p["std"] > 0 and 0 <= p["centre_share"] <= 1
            assert all(-1 <= p[s] <= 1 for s in ("pearson_vs_cis", "spearman_vs_cis", "pearson_vs_occlusion"))
    assert r["methods"]["cis"]["mean_pearson_vs_cis"] == pytest.approx(1.0)
    assert r["methods"]["cis"]["ci_pearson_vs_cis"] == [pytest.approx(1.0), pytest.approx(1.0)]
    for rec in r["methods"].values():  # each mean with its bootstrap CI over the faces, from the per-face values
        lo, hi = rec["ci_centre_share"]
        vals = [p["centre_share"] for p in rec["per_image"]]
        assert min(vals) - 1e-9 <= lo <= rec["mean_centre_share"] <= hi <= max(vals) + 1e-9
    assert r["methods"]["occlusion"]["mean_pearson_vs_occlusion"] == pytest.approx(1.0)


def test_pairwise_correlation_and_titles():
    rng = np.random.default_rng(0)
    a = rng.random((16, 16))
    cover = np.zeros((16, 16), bool)
    cover[2:14, 2:14] = True
    half = cover.copy()
    half[:, 8:] = False
    p = task_models.pairwise({"a": a, "same": a.copy(), "neg": -a},
                             {"a": cover, "same": cover, "neg": half})
    assert p["names"] == ["a", "same", "neg"]
    assert p["pearson"][0][1] == pytest.approx(1.0) and p["spearman"][0][1] == pytest.approx(1.0)
    assert p["pearson"][0][2] == pytest.approx(-1.0) and p["pearson"][2][0] == p["pearson"][0][2]
    assert p["pixels"][0][1] == 144 and p["pixels"][0][2] == 72  # correlated over common coverage only
    assert [t for t, _ in task_models.titles_for(["gender", "/x/model.h5", "/y/model.h5", "/z/dir/"])] == [
        "gender", "model", "model_2", "dir"]


def test_fig11_gender_models_smoke(tmp_path, shared_dir):
    run_script("fig11_gender_models", "--smoke", f"--out_dir={tmp_path}")
    r = json.loads((tmp_path / "fig11.json").read_text())
    assert list(r["models"]) == ["tiny", "tiny_2"] and r["panels"] == 2 and not r["skipped"]
    for m in r["models"].values():
        assert m["images_done"] == 3
        assert sum(m["region_shares"].values()) == pytest.approx(100.0)
    p = r["pairwise"]
    assert p["names"] == ["tiny", "tiny_2"] and p["pearson"][0][1] == pytest.approx(1.0)  # the same model twice
    assert p["pixels"][0][1] > 1000
    assert "| tiny | 1.000 | 1.000 |" in (tmp_path / "fig11.md").read_text()
    im = panels(tmp_path / "fig11.png", 1, 2)
    assert im[40:, :].std() > 10


def test_nose_offset_closeup_and_nearest_centroid():
    xy = np.zeros((468, 2), np.float32)
    xy[0], xy[2] = (0, 0), (100, 200)  # landmark box 100 x 200, centre (50, 100)
    xy[3:] = (50, 100)
    xy[nose_pose.NOSE_TIP] = (75, 50)
    np.testing.assert_allclose(nose_pose.nose_offset(xy), [0.5, -0.5])
    rgb = np.zeros((300, 300, 3), np.uint8)
    rgb[40:60, 65:85] = 255  # a white square around the nose tip
    up = nose_pose.closeup(rgb, xy, scale=0.2, out=48)  # 40-pixel side around (75, 50)
    assert up.shape == (48, 48, 3) and up[24, 24].min() == 255 and up[0, 0].max() == 0
    # Nine bins with known, separated offset centres: the classifier finds every held-out face.
    rng = np.random.default_rng(0)
    centres = np.array([(x, y) for y in (-0.5, 0.0, 0.5) for x in (-0.5, 0.0, 0.5)])
    bins = np.repeat(np.arange(9), 20)
    offsets = centres[bins] + rng.normal(0, 0.05, (len(bins), 2))
    test = np.tile(np.arange(20) < 6, 9)
    r = nose_pose.nearest_centroid(offsets, bins, test)
    assert r["accuracy"] == 1.0 and r["n_test"] == 54 and r["majority_rate"] == pytest.approx(1 / 9)
    np.testing.assert_allclose(r["centroids"], centres, atol=0.05)
    assert np.trace(np.asarray(r["confusion"])) == 54 and r["accuracy_yaw_bin"] == r["accuracy_pitch_bin"] == 1.0
    shuffled = nose_pose.nearest_centroid(offsets, rng.permutation(bins), test)
    assert shuffled["accuracy"] < 0.5  # labels unrelated to the offsets: near chance
    assert nose_pose.nearest_centroid(offsets, bins, np.zeros(len(bins), bool))["accuracy"] is None


def test_fig17_nose_smoke(tmp_path, shared_dir):
    run_script("fig17_nose", "--smoke", f"--out_dir={tmp_path}")
    r = json.loads((tmp_path / "fig17.json").read_text())
    assert r["files"] == 8 and r["faces"] + sum(r["skipped"].values()) == 8 and r["faces"] >= 6
    assert len(r["bins"]) == 9 and sum(b["count"] for b in r["bins"]) == r["faces"]
    for b in r["bins"]:
        assert len(b["shown"]) == min(1, b["count"])
        if b["count"]:
            assert all(abs(v) < 1 for v in b["mean_offset"])
            # a bin is an interval per axis, so its faces' mean lies in it
            assert np.searchsorted(r["yaw_edges"], b["mean_yaw"], side="right") == b["bin"] % 3
            assert np.searchsorted(r["pitch_edges"], b["mean_pitch"], side="right") == b["bin"] // 3
    c = r["nearest_centroid"]
    assert c["n_train"] + c["n_test"] == r["faces"]
    z = np.load(tmp_path / "fig17_faces.npz")
    assert z["pose"].shape == (r["faces"], 3) and np.isfinite(z["pose"]).all()
    assert (np.bincount(z["bins"], minlength=9) == [b["count"] for b in r["bins"]]).all()
    im = panels(tmp_path / "fig17.png", 3, 3, side=320)
    assert im.std() > 10 and cv2.imread(str(tmp_path / "fig17_offsets.png")) is not None
    assert nose_closeups.YAW_EDGES == tuple(r["yaw_edges"])


def test_fig17_uncertainty_brackets_the_values_and_tests_against_the_majority():
    """Offsets that are the pose plus noise: the CIs bracket the full-sample Pearson and accuracy, the
    accuracy equals `nearest_centroid`'s, and a classifier far better than the majority rule is
    significant by McNemar (its discordant faces counted by hand)."""
    rng = np.random.default_rng(0)
    n = 600
    pose = np.stack([rng.uniform(-40, 40, n), rng.uniform(-25, 25, n), np.zeros(n)], 1)
    offsets = np.stack([-pose[:, 0] / 50, -pose[:, 1] / 40], 1) + 0.05 * rng.normal(size=(n, 2))
    bins = nose_closeups.pose_bin(pose[:, 0], pose[:, 1], nose_closeups.YAW_EDGES, nose_closeups.PITCH_EDGES)
    test = np.arange(n) % 3 == 0
    u = nose_pose.uncertainty(offsets, pose, bins, test, draws=300)
    for k in ("offset_x_vs_yaw", "offset_y_vs_pitch"):
        assert u[k]["ci"][0] <= u[k]["value"] <= u[k]["ci"][1] and u[k]["value"] < -0.9
    clf = nose_pose.nearest_centroid(offsets, bins, test)
    assert u["accuracy"]["mean"] == pytest.approx(clf["accuracy"]) and u["accuracy"]["n"] == test.sum()
    assert u["accuracy"]["ci"][0] <= clf["accuracy"] <= u["accuracy"]["ci"][1]
    pred_right = np.asarray(clf["confusion"]).trace()
    assert u["vs_majority"]["test"] == "mcnemar" and u["vs_majority"]["p"] < 1e-6
    up, down = u["vs_majority"]["discordant"]
    assert up - down == pred_right - round(clf["majority_rate"] * test.sum())
