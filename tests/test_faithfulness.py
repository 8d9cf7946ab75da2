"""Deletion / Insertion AUC, ROAD and RISE against hand computations on toy models whose answer is known."""
import importlib

import jax.numpy as jnp
import numpy as np
import pytest

from cms_jax import faithfulness as fa
from cms_jax.baselines import explain

rise_mod = importlib.import_module("cms_jax.baselines.rise")  # the package re-exports the function as `rise`


def _block_reader(y0, y1, x0, x1):
    """A model that reads one pixel block: its confidence is the block's mean (channel 0)."""
    return lambda imgs: np.asarray(imgs)[:, y0:y1, x0:x1, 0].mean(axis=(1, 2))


def test_deletion_and_insertion_auc_equal_the_hand_computed_areas():
    x = np.ones((4, 4, 1), np.float32)
    score = _block_reader(0, 2, 0, 2)
    block = np.zeros((4, 4))
    block[:2, :2] = 1.0
    # the block first: 1, .75, .5, .25 then 0 for the other 12 of 16 steps -> (1.75+1.25+.75+.25)/32
    good = fa.deletion_curve(score, x, block, steps=16)
    np.testing.assert_allclose(good, [1, .75, .5, .25] + [0] * 13)
    assert fa.auc(good) == pytest.approx(4.0 / 32)
    assert fa.auc(fa.deletion_curve(score, x, -block, steps=16)) == pytest.approx(28.0 / 32)  # the block last
    ins = fa.insertion_curve(score, x, block, np.zeros_like(x), steps=16)
    np.testing.assert_allclose(ins, [0, .25, .5, .75] + [1] * 13)
    assert fa.auc(ins) == pytest.approx(1 - 4.0 / 32)
    # a flat map is a random order (ties broken by a fixed permutation), not the raster order
    flat = [fa.auc(fa.deletion_curve(score, x, np.zeros((4, 4)), steps=16, seed=s)) for s in range(200)]
    assert 0.35 < np.mean(flat) < 0.65
    with pytest.raises(ValueError, match=r"saliency map has shape \(3, 4\), the image \(4, 4\)"):
        fa.deletion_curve(score, x, np.zeros((3, 4)))


def test_linear_imputation_solves_the_neighbour_mean_system():
    rng = np.random.default_rng(0)
    h, w = 12, 10
    yy, xx = np.mgrid[:h, :w]
    ramp = np.stack([0.3 * yy - 0.2 * xx + 1, 0.1 * xx], -1).astype(np.float64)
    removed = np.zeros((h, w), bool)
    removed[3:8, 2:6] = True  # interior: a linear image is its own neighbour mean there
    np.testing.assert_allclose(fa.linear_impute(ramp, removed), ramp, atol=1e-5)
    # any image, removed pixels at the border and next to each other: each imputed pixel is the
    # weighted mean (1/6 direct, 1/12 diagonal, in-image neighbours only) of the result around it
    img = rng.normal(size=(h, w, 3))
    removed = rng.random((h, w)) < 0.4
    out = fa.linear_impute(img, removed).astype(np.float64)
    np.testing.assert_array_equal(out[~removed], img[~removed].astype(np.float32))
    for y, x in zip(*np.nonzero(removed)):
        num, den = np.zeros(3), 0.0
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if (dy, dx) != (0, 0) and 0 <= y + dy < h and 0 <= x + dx < w:
                    wt = 1 / 6 if dy == 0 or dx == 0 else 1 / 12
                    num, den = num + wt * out[y + dy, x + dx], den + wt
        np.testing.assert_allclose(out[y, x], num / den, atol=1e-4)
    noisy = fa.linear_impute(img, removed, noise=0.01, seed=1)
    assert 0.005 < np.std(noisy[removed] - out[removed]) < 0.02


def test_road_morf_falls_and_lerf_stays_for_the_true_map():
    x = np.zeros((16, 16, 1), np.float32)
    x[6:10, 6:10] = 1.0
    score = _block_reader(6, 10, 6, 10)
    truth = np.zeros((16, 16))
    truth[6:10, 6:10] = 1.0
    r = fa.road_curves(score, x, truth, noise=0.0)
    # MoRF: 10% = 26 px removes the whole block, imputed from its dark surround
    assert r["morf"].max() < 0.05
    # LeRF: up to 90% of the 256 px is background, the block is never touched
    np.testing.assert_allclose(r["lerf"], 1.0)
    scores = fa.evaluate(score, x[None], {"truth": truth[None], "inverse": -truth[None]}, steps=16,
                         road_noise=0.0)
    assert scores["truth"]["road_gap"][0] > 0.9 > -0.9 > scores["inverse"]["road_gap"][0]
    assert scores["truth"]["deletion"][0] < scores["inverse"]["deletion"][0]
    assert scores["truth"]["insertion"][0] > scores["inverse"]["insertion"][0]


def _toy(params, imgs):
    """Two outputs: the mean of the block [4:8, 10:14] and a constant; raw scores."""
    return jnp.stack([imgs[:, 4:8, 10:14, 0].mean(axis=(1, 2)) * params, jnp.zeros(imgs.shape[0])], -1)


def test_rise_equals_its_estimator_with_the_same_masks_and_finds_the_block():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(0.5, 1.0, size=(2, 16, 16, 1)), jnp.float32)
    m = np.asarray(rise_mod.masks(3, 500, (16, 16), cells=4, p=0.5))
    assert m.shape == (500, 16, 16) and m.min() >= 0 and m.max() <= 1 and abs(m.mean() - 0.5) < 0.05
    got = np.asarray(rise_mod.rise(_toy, 1.0, x, jnp.asarray([0, 0]), n_masks=500, cells=4, p=0.5, fill=0.2,
                               mode="raw", seed=3, batch_size=100))
    xs = np.asarray(x)
    for b in range(2):
        copies = xs[b][None] * m[..., None] + 0.2 * (1 - m[..., None])
        conf = copies[:, 4:8, 10:14, 0].mean(axis=(1, 2))
        np.testing.assert_allclose(got[b], np.einsum("n,nhw->hw", conf, m) / (500 * 0.5), rtol=1e-4, atol=1e-5)
    big = np.asarray(rise_mod.rise(_toy, 1.0, x[:1], None, n_masks=3000, cells=4, p=0.5, mode="raw"))[0]
    top = np.unravel_index(np.argsort(-big, axis=None)[:16], big.shape)
    inside = ((top[0] >= 4) & (top[0] < 8) & (top[1] >= 10) & (top[1] < 14)).sum()
    assert inside >= 10, f"{inside} of RISE's top 16 pixels lie in the block the model reads"
    with pytest.raises(ValueError, match="keep probability p must be in"):
        rise_mod.masks(0, 4, (8, 8), p=1.0)


def test_rise_through_explain_scores_the_models_own_confidence():
    from cms_jax import models
    model = models.load("tiny")
    x = jnp.asarray(np.random.default_rng(1).normal(size=(1, *model.input_size, 3)), jnp.float32)
    a = explain(model, x, "rise", n_masks=64, batch_size=32)
    assert a.shape == (1, *model.input_size) and np.isfinite(np.asarray(a)).all()


def test_paired_differences_and_their_tests_against_hand_values():
    from cms_jax.figures.paired import bootstrap_mean, paired
    a, b = np.array([1.0, 1.0, 1.0, 0.0]), np.zeros(4)
    r = paired(a, b, binary=True)
    # McNemar: 3 faces up, 0 down -> two-sided binomial p = 2 * 0.5**3
    assert (r["test"], r["discordant"], r["diff"]) == ("mcnemar", [3, 0], 0.75) and r["p"] == pytest.approx(0.25)
    x = np.random.default_rng(0).normal(size=200)
    r = paired(x + 0.5, x)  # a constant shift: the CI is that shift alone, the test rejects
    assert r["diff"] == pytest.approx(0.5) and r["ci"] == pytest.approx([0.5, 0.5]) and r["p"] < 1e-10
    assert paired(x, x)["p"] == 1.0
    m = bootstrap_mean(x, draws=2000)
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert m["ci"][0] == pytest.approx(x.mean() - 1.96 * se, abs=0.4 * se)
    assert m["ci"][1] == pytest.approx(x.mean() + 1.96 * se, abs=0.4 * se)


def test_faithfulness_smoke_compares_every_method_and_control_on_the_same_faces(tmp_path, shared_dir):
    import json
    import os
    import subprocess
    import sys
    from cms_jax.figures import faithfulness_table as ft
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-m", "experiments.faithfulness", "--smoke", "--workers=0",
                        f"--out_dir={tmp_path}"], capture_output=True, text=True, cwd=root, timeout=600,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((tmp_path / "faithfulness.json").read_text())
    t = s["table"]
    assert s["n"] == 4 and set(t["methods"]) == set(ft.METHODS + ft.CONTROLS)
    assert set(t["vs_CIS"]) == set(ft.METHODS + ft.CONTROLS) - {"CIS"}
    for m in t["methods"].values():
        for k in ft.METRICS:
            assert m[k]["n"] == 4 and m[k]["ci"][0] <= m[k]["mean"] + 1e-12 <= m[k]["ci"][1] + 2e-12
    z = np.load(tmp_path / "heatmaps.npz")
    # the smoke's control model is the explained one: its "other task's CMS" is the CMS, face for face
    np.testing.assert_array_equal(z["other_tasks_CMS"], z["CMS"])
    assert (z["face_oval"] > 0).sum() > 0.2 * z["face_oval"].size and set(np.unique(z["face_oval"])) == {0.0, 1.0}
    assert ((z["random_on_face"] > 0) <= (z["face_oval"] > 0)).all()
    w = sum(t["methods"][m]["win"]["mean"] for m in t["methods"])
    assert w == pytest.approx(100.0)  # Eq. 11's credit, ties shared, sums to 100 over the compared maps
    assert "| CIS |" in (tmp_path / "faithfulness.md").read_text()
