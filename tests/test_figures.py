"""The paper-figure scripts (Figs. 1, 4-7, 14-16) in --smoke mode, and the figure helpers.

Scripts run in this process (their absl flags are registered, parsed and removed one script
at a time), so jax is imported once; the figures that read a CMS run share one tiny run.
Outputs are checked for content: PNG size in panels, panels not blank, numbers in range.
"""
import json
import math
import shutil

import cv2
import jax
import numpy as np
import pytest

from cms_jax import models
from cms_jax.figures import common, stats
from cms_jax.figures.sanity import default_levels, layer_order, randomise
from cms_jax.pipeline import RunConfig
from script_runner import PANEL, run_script



def read_png(path, rows, cols, title=True):
    """The PNG as RGB; asserts it is rows x cols panels and that every panel holds an image."""
    im = cv2.imread(str(path))
    assert im is not None, f"{path} does not decode"
    assert im.shape[:2] == (PANEL * rows + (40 if title else 0), PANEL * cols), im.shape
    top = 40 if title else 0
    for r in range(rows):
        for c in range(cols):
            cell = im[top + r * PANEL + 30:top + (r + 1) * PANEL - 10, c * PANEL + 10:(c + 1) * PANEL - 10]
            assert cell.std() > 8, f"{path}: panel ({r}, {c}) is blank"
    return im[..., ::-1]


def colourful(rgb):
    """Fraction of strongly coloured pixels (a jet heatmap has many; a gray face none)."""
    rgb = rgb.astype(int)
    return float(((rgb.max(-1) - rgb.min(-1)) > 100).mean())


def load(path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, shared_dir):
    """One tiny CMS run over 3 CelebA samples, shared by the figures that read a run."""
    out = tmp_path_factory.mktemp("fig_run")
    common.run_or_reuse(RunConfig(model="tiny", images=common.smoke_images(3), batch_size=256),
                        str(out / "tiny"), workers=0, show_progress=False)
    return out / "tiny"


def test_ssim_and_correlations_against_known_values():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 50))
    assert stats.ssim(a, a) == pytest.approx(1.0)
    assert stats.ssim(a, 3 * a + 7) == pytest.approx(1.0)  # maps are min-max scaled first
    assert stats.ssim(a, -a) < 0
    noisy = [stats.ssim(a, a + s * rng.normal(size=a.shape)) for s in (0.1, 0.5, 2.0)]
    assert noisy[0] > noisy[1] > noisy[2]
    b = np.exp(a)  # monotone: rank correlation 1, linear correlation below 1
    assert stats.spearman(a, b) == pytest.approx(1.0)
    assert stats.pearson(a, b) < 0.9
    assert stats.pearson(a, b) == pytest.approx(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    mask = np.zeros(a.shape, bool)
    mask[:10] = True
    c = np.where(mask, a, rng.normal(size=a.shape))
    assert stats.spearman(a, c, mask) == pytest.approx(1.0) and stats.spearman(a, c) < 0.6
    with pytest.raises(ValueError, match="same shape"):
        stats.pearson(a, a[:5])


def test_randomise_redraws_only_the_named_layers_with_their_statistics():
    params = {"conv1": {"kernel": np.full((3, 3, 1, 400), 0.5, np.float32) + np.linspace(0, 1, 400, dtype=np.float32)},
              "bn1": {"scale": np.ones(4, np.float32)},
              "dense": {"kernel": np.random.default_rng(1).normal(2.0, 3.0, (100, 50)).astype(np.float32),
                        "bias": np.zeros(50, np.float32)}}
    assert layer_order(params) == ["conv1", "dense"]
    out = randomise(params, ["dense"], seed=3)
    assert out["conv1"] is params["conv1"] and out["bn1"] is params["bn1"]
    k = out["dense"]["kernel"]
    assert k.shape == (100, 50) and k.dtype == np.float32
    assert not np.allclose(k, params["dense"]["kernel"])
    assert abs(k.mean() - 2.0) < 0.1 and abs(k.std() - 3.0) < 0.1
    assert (out["dense"]["bias"] == 0).all()  # std 0: nothing to draw
    with pytest.raises(ValueError, match="no layers"):
        randomise(params, ["fc9"])
    assert default_levels(15) == [1, 2, 3, 4, 8, 15] and default_levels(1) == [1]


def test_layer_order_follows_the_forward_pass_not_the_key_order():
    """Fig. 7's cascade starts at the output even after an Orbax round trip sorts the keys."""
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    params = {"a_head": {"kernel": rng.normal(size=(8, 3)).astype(np.float32)},      # used last
              "m_mid": {"kernel": rng.normal(size=(3, 3, 4, 8)).astype(np.float32)},
              "z_stem": {"kernel": rng.normal(size=(3, 3, 3, 4)).astype(np.float32)}}  # used first

    def apply_fn(p, x):
        import jax
        conv = lambda y, k: jax.lax.conv_general_dilated(y, k, (1, 1), "SAME",  # noqa: E731
                                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        y = jnp.tanh(conv(jnp.tanh(conv(x, p["z_stem"]["kernel"])), p["m_mid"]["kernel"]))
        return y.mean(axis=(1, 2)) @ p["a_head"]["kernel"]

    assert layer_order(params) == ["a_head", "m_mid", "z_stem"]  # the dict's (alphabetical) order
    assert layer_order(params, apply_fn, (8, 8, 3)) == ["z_stem", "m_mid", "a_head"]
    gender = models.load("gender")  # the file's layer order is the forward order
    assert (layer_order(dict(sorted(gender.params.items())), gender.apply_fn, (64, 64, 1))
            == layer_order(gender.params))


def test_fig01_smoke_and_models_side_by_side(tmp_path, run_dir):
    for name in ("tiny", "again"):  # finished runs with the smoke config are reused, not recomputed
        (tmp_path / name).mkdir()
        for f in ("cms.npy", "drops.npz", "summary.json"):
            shutil.copy(run_dir / f, tmp_path / name / f)
    run_script("fig01_tasks", "--smoke", f"--out_dir={tmp_path}")
    r = load(tmp_path / "fig01.json")
    assert r["panels"] == 1 and r["models"]["tiny"]["images_done"] == 3
    assert sum(r["models"]["tiny"]["region_shares"].values()) == pytest.approx(100.0)
    read_png(tmp_path / "fig01.png", 1, 1)
    from cms_jax.figures import tasks
    r = tasks.figure(RunConfig(images=common.smoke_images(3)), str(tmp_path), model_names=["tiny", "nope"],
                     extra={"again": "tiny"}, workers=0)
    assert list(r["models"]) == ["tiny", "again"] and "not a built-in model name" in r["skipped"]["nope"]
    assert colourful(read_png(tmp_path / "fig01.png", 1, 2)) > 0.05
    top = r["models"]["tiny"]["top2pct_pixels_by_region"]
    assert sum(top.values()) == pytest.approx(100.0)


def test_fig04_density_normalisation(tmp_path, run_dir):
    run_script("fig04_density", "--smoke", f"--cms_dir={run_dir}", f"--out_dir={tmp_path}")
    r = load(tmp_path / "fig04.json")
    assert len(r["faces"]) == 2 and r["images"] == 3
    for shares in [r["mean"]["shares_normalised"], r["mean"]["shares_unnormalised"]] + [
            f["shares_normalised"] for f in r["faces"]]:
        assert sum(shares.values()) == pytest.approx(100.0, abs=1e-6)
    lo, hi = r["density_range"]
    assert lo >= 1 and hi > 3 * lo  # the mesh is far from uniform: that is why Eq. 5 exists
    assert -1 <= r["mean"]["spearman_raw_vs_normalised"] < 0.999
    read_png(tmp_path / "fig04.png", 3, 3)


def test_fig05_correlation_reaches_one_at_the_whole_set(tmp_path, run_dir):
    run_script("fig05_num_images", "--smoke", f"--cms_dir={run_dir}", f"--out_dir={tmp_path}")
    r = load(tmp_path / "fig05.json")
    assert [c["n"] for c in r["curve"]] == [1, 2, 3] and r["orders"] == 5
    last = r["curve"][-1]
    assert last["pearson_mean"] == pytest.approx(1.0, abs=1e-5) and last["spearman_sd"] < 1e-6
    p = np.asarray(r["pearson"])
    assert p.shape == (5, 3) and (np.abs(p) <= 1 + 1e-9).all() and p[:, 0].mean() < 0.999
    split = r["split_half_curve"]  # disjoint halves of 3 images: one image against another
    assert [c["n"] for c in split] == [1] and -1 <= split[0]["pearson_mean"] < 0.999
    im = cv2.imread(str(tmp_path / "fig05.png"))
    assert im is not None and im.shape == (380, 550, 3) and im.std() > 10
    read_png(tmp_path / "fig05_maps.png", 1, 3)


def test_split_half_threshold_is_interpolated_in_log_n():
    from cms_jax.figures.reliability import n_reaching
    ns, values = [10, 100, 1000], [0.5, 0.8, 0.95]
    assert n_reaching(ns, values, 0.9) == pytest.approx(100 * 10 ** (2 / 3))  # 2/3 of the way in log n
    assert n_reaching(ns, values, 0.95) == pytest.approx(1000)
    assert n_reaching(ns, values, 0.4) == 10 and n_reaching(ns, values, 0.99) is None


def test_split_half_ranges_are_percentiles_over_the_orders():
    """The spread over orders: per n the 2.5th-97.5th percentile of the orders' values, and of the n
    each order's own curve reaches a level at (None when one order never reaches it)."""
    from cms_jax.figures.reliability import _n_range, _range

    curves = np.array([[0.5, 0.9, 0.99], [0.6, 0.95, 0.97], [0.4, 0.85, 0.96]])
    r = np.asarray(_range(curves))
    np.testing.assert_allclose(r[:, 0], np.percentile(curves, 2.5, axis=0))
    np.testing.assert_allclose(r[:, 1], np.percentile(curves, 97.5, axis=0))
    ns = [10, 100, 1000]
    lo, hi = _n_range(ns, curves, 0.95)
    hits = [100 * 10 ** (0.05 / 0.09), 100, 100 * 10 ** (0.10 / 0.11)]  # interpolated in log n, by hand
    assert (lo, hi) == (pytest.approx(np.percentile(hits, 2.5)), pytest.approx(np.percentile(hits, 97.5)))
    assert _n_range(ns, curves, 0.98) is None


def test_fig05_reliability_per_group(tmp_path, run_dir):
    """Identical halves give Pearson 1: every image of group 'same' has the same drops."""
    from cms_jax.figures import common, reliability

    run = common.load_run(str(run_dir))
    run.drops[:] = run.drops[:1]
    run.valid[:] = run.valid[:1]
    res = reliability.table(run, {"same": np.arange(len(run.files)), "tiny": np.arange(1)}, ns=(1,), orders=2,
                            min_images=2)
    assert res["same"]["ns"] == [1] and res["same"]["pearson_mean"][0] == pytest.approx(1.0, abs=1e-6)
    assert res["same"]["n_pearson_0.95"] == 1 and res["tiny"] == {"images": 1, "note": "fewer than 2 images"}
    assert "| same | 3 | 1 | 1.000 [1.000, 1.000] | 1 [1, 1] | 1 [1, 1] |" in reliability.markdown(res)
    assert "over 2 random splits" in reliability.markdown(res)
    run_script("fig05_num_images", "--smoke", f"--cms_dir={run_dir}", f"--out_dir={tmp_path}", "--reliability")
    r = load(tmp_path / "fig05_reliability.json")
    assert r["groups"]["all"]["ns"] == [1] and -1 <= r["groups"]["all"]["pearson_mean"][0] <= 1
    assert (tmp_path / "fig05_reliability.md").read_text().startswith("| group | images |")


def test_fig06_and_fig14_per_image_maps(tmp_path, run_dir):
    run_script("fig06_maps", "--smoke", f"--cms_dir={run_dir}", f"--out_dir={tmp_path / 'f6'}")
    r = load(tmp_path / "f6" / "fig06.json")
    assert len(r["faces"]) == 2 and r["panels_per_row"] == 5
    for face in r["faces"]:
        assert 0 < face["clean"] <= 1 and all(math.isfinite(v) for v in face["occlusion_range"])
        assert face["reprojected_range"][1] > face["reprojected_range"][0]
    rgb = read_png(tmp_path / "f6" / "fig06.png", 2, 5)
    assert colourful(rgb[40:40 + PANEL, PANEL:2 * PANEL]) > 0.2  # the occlusion map is a heatmap
    run_script("fig14_individual", "--smoke", f"--cms_dir={run_dir}", f"--out_dir={tmp_path / 'f14'}")
    r = load(tmp_path / "f14" / "fig14.json")
    assert len(r["faces"]) == 3 and r["panels"] == {"rows": 2, "cols": 4}
    for face in r["faces"]:
        assert all(-1 <= v <= 1 for v in face["cis_vs_cms"].values())
    im = cv2.imread(str(tmp_path / "f14" / "fig14.png"))
    assert im.shape[:2] == (40 + 2 * PANEL, 4 * PANEL) and im.std() > 10


def test_fig07_sanity_smoke(tmp_path, shared_dir):
    run_script("fig07_sanity", "--smoke", f"--out_dir={tmp_path}")
    r = load(tmp_path / "fig07.json")
    assert r["faces"] == 3 and r["layer_order"][-1] == "fc8" and r["layer_order"][0] == "conv1_1"
    n = len(r["layer_order"])
    assert [l["layers_randomised"] for l in r["levels"]] == [1, 4, 10, n]  # the fully random model added
    assert r["levels"][0]["layers"] == ["fc8"] and r["levels"][1]["layers"][-1] == "conv5_3"
    assert r["draws"] == 2 and r["fully_random"]["spearman"] == r["levels"][-1]["spearman"]
    for lvl in r["levels"]:
        assert len(lvl["draws"]) == 2 and 0 <= lvl["negative_spearman_draws"] <= 2
        for key in ("spearman", "spearman_abs", "ssim", "pearson", "hog"):
            assert -1 <= lvl[f"{key}_min"] <= lvl[key] + 1e-12 and lvl[key] <= lvl[f"{key}_max"] + 1e-12 <= 1 + 2e-9
            assert lvl[key] == pytest.approx(np.mean([d[key] for d in lvl["draws"]]))
    # the tiny model's own weights are random, so one random fc8 may read its features the same way
    # (occlusion moves them along one direction); a fully random model never does
    assert r["fully_random"]["spearman_max"] < 0.99 and r["fully_random"]["ssim_max"] < 0.99
    assert all(-1 <= v <= 1 for v in r["trained_split_half"].values())
    maps = np.load(tmp_path / "fig07_maps.npz")
    assert maps["randomised"].shape == (4, RunConfig.canvas, RunConfig.canvas) and np.abs(maps["trained"]).max() > 0
    read_png(tmp_path / "fig07_maps.png", 1, 5, title=False)
    im = cv2.imread(str(tmp_path / "fig07.png"))
    assert im is not None and im.std() > 10


def test_the_cascade_is_cumulative_one_draw_per_cascade():
    from cms_jax.figures.sanity import cascade
    from cms_jax.models.vgg import tiny_vgg
    m = tiny_vgg()
    order = layer_order(m.params, m.apply_fn, (*m.input_size, m.channels))
    full = randomise(m.params, order, seed=7)
    one, four = cascade(m.params, order, 1, full), cascade(m.params, order, 4, full)
    for k in order:
        want_one = full[k] if k == order[-1] else m.params[k]
        want_four = full[k] if k in order[-4:] else m.params[k]
        for got, want in ((one[k], want_one), (four[k], want_four)):
            for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # level 4 holds level 1's random fc8 (the same draw), not a fresh one
    for a, b in zip(jax.tree_util.tree_leaves(one[order[-1]]), jax.tree_util.tree_leaves(four[order[-1]])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_hog_similarity_is_one_for_a_map_and_low_for_unrelated_ones():
    from cms_jax.figures import stats
    yy, xx = np.mgrid[:64, :64]
    blob = np.exp(-((yy - 20) ** 2 + (xx - 40) ** 2) / 60.0)
    assert stats.hog_similarity(blob, blob) == pytest.approx(1.0)
    assert stats.hog_similarity(blob, 3 * blob + 1) == pytest.approx(1.0)  # min-max scaled first
    other = np.exp(-((yy - 44) ** 2 + (xx - 16) ** 2) / 60.0)
    noise = np.random.default_rng(0).random((64, 64))
    assert stats.hog_similarity(blob, other) < 0.5 and abs(stats.hog_similarity(blob, noise)) < 0.3
    assert stats.hog(blob).shape == (7 * 7 * 36,)


def _tiny_faces(paths):
    """The tiny model and the pipeline's crops of ``paths`` (the inputs the figures are checked on)."""
    from cms_jax.data.prepare import FacePreparer

    model = models.load("tiny")
    prep = FacePreparer(model, workers=0)
    try:
        faces = list(prep.imap(paths))
    finally:
        prep.close()
    assert all(f.reason is None for f in faces), [f.reason for f in faces]
    return model, faces


def _softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_fig15_pairs_table(tmp_path, shared_dir):
    """Every confidence in the table is the softmax of the model's logits on the face's crop."""
    run_script("fig15_pairs", "--smoke", f"--out_dir={tmp_path}")
    r = load(tmp_path / "fig15.json")
    assert r["classes"] == ["class_0", "class_1"] and len(r["pairs"]) == 2
    files = common.smoke_images(4).split(",")
    model, faces = _tiny_faces(files)
    probs = _softmax(np.asarray(model.apply_fn(model.params, model.preprocess(np.stack([f.crop for f in faces]))),
                                np.float64))
    for k, row in enumerate(r["pairs"]):
        assert (row["file_a"], row["file_b"]) == (files[2 * k], files[2 * k + 1])
        for side, i in (("conf_a", 2 * k), ("conf_b", 2 * k + 1)):
            np.testing.assert_allclose([row[side]["class_0"], row[side]["class_1"]], probs[i], atol=1e-6)
        assert row["pred_a"] == f"class_{probs[2 * k].argmax()}"
    assert r["pairs"][0]["label_conf_change"] == pytest.approx(probs[1, 0] - probs[0, 0], abs=1e-6)
    assert "label_conf_change" not in r["pairs"][1]
    md = (tmp_path / "fig15.md").read_text().strip().splitlines()
    assert len(md) == 4 and md[2].startswith("| 000686.jpg |")
    read_png(tmp_path / "fig15.png", 1, 4)


def test_fig15_rejects_a_bad_csv(tmp_path):
    from cms_jax.figures.pairs import read_pairs
    bad = tmp_path / "bad.csv"
    bad.write_text("a.jpg\n")
    with pytest.raises(ValueError, match="line 1: expected file_a,file_b"):
        read_pairs(str(bad))
    ok = tmp_path / "ok.csv"
    ok.write_text("file_a,file_b,label\nx/a.jpg,/abs/b.jpg,woman\n")
    assert read_pairs(str(ok)) == [(str(tmp_path / "x" / "a.jpg"), "/abs/b.jpg", "woman")]


def _algorithm1_cis(model, face, canon, sz, f, target):
    """One face's CIS as Algorithm 1 writes it, in numpy loops (only the model's forward is JAX)."""
    from cms_jax.align.visibility import visible_vertices

    h, w = model.input_size
    x = model.preprocess(face.crop[None])[0]
    xy = np.asarray(face.xy, np.float64)  # subdivision 0: the 468 landmarks are the vertices
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
    keep = np.nonzero(visible_vertices(xy, canon.triangles, face.z) & inside)[0]
    copies = []
    for px, py in xy[keep]:  # lines 5-7: the official square, zero fill
        x1, y1 = max(0, math.floor(px - sz / 2)), max(0, math.floor(py - sz / 2))
        c = x.copy()
        c[y1:min(y1 + sz, h), x1:min(x1 + sz, w)] = 0.0
        copies.append(c)
    probs = _softmax(np.asarray(model.apply_fn(model.params, np.stack([x] + copies)), np.float64))
    drops = probs[0, target] - probs[1:, target]
    (hf, wf), p, n = canon.canvas_hw, np.zeros(canon.canvas_hw), np.zeros(canon.canvas_hw)
    for (cx, cy), s in zip(canon.vertices[keep], drops):  # lines 8-11
        x1, y1 = max(0, math.floor(cx - f / 2)), max(0, math.floor(cy - f / 2))
        x2, y2 = min(math.floor(x1 + f), wf), min(math.floor(y1 + f), hf)
        p[y1:y2, x1:x2] += s
        n[y1:y2, x1:x2] += 1
    return p[n > 0] / n[n > 0]  # lines 12-14, on the pixels some square reaches


def test_fig16_patch_sizes(tmp_path, shared_dir):
    """Each size's CIS (its range) against Algorithm 1 in numpy loops on the same crop."""
    from cms_jax.align.canonical import CanonicalFace

    run_script("fig16_patch_size", "--smoke", f"--out_dir={tmp_path}")
    r = load(tmp_path / "fig16.json")
    assert r["reference_patch"] == 2 and [s["patch_size"] for s in r["sizes"]] == [1, 2, 6]
    assert all(-1 <= s["spearman_vs_2"] <= 1 for s in r["sizes"])
    model, (face,) = _tiny_faces([common.smoke_images(1)])
    assert r["file"] == face.path
    canon = CanonicalFace.mediapipe(canvas=RunConfig.canvas)
    # The canonical side: f = sz * (face height on the canvas) / (face height in the input); the tiny
    # model's 'tight' crop adds a margin of crop_margin around the face (WORKSPACE, Conventions).
    face_input = model.input_size[0] / (1 + model.crop_margin)
    for row in r["sizes"]:
        f = row["patch_size"] * np.ptp(canon.vertices[:, 1]) / face_input
        assert row["canonical_side"] == pytest.approx(f, rel=1e-6)
        ref = _algorithm1_cis(model, face, canon, row["patch_size"], f, r["class"])
        assert ref.max() - ref.min() > 1e-4, "degenerate: the map is flat"
        np.testing.assert_allclose(row["range"], [ref.min(), ref.max()], rtol=1e-4, atol=1e-6)
    read_png(tmp_path / "fig16.png", 1, 4)


def test_sensitivity_smoke_runs_every_variant_over_the_same_faces(tmp_path, shared_dir):
    run_script("sensitivity", "--smoke", f"--out_dir={tmp_path}")
    r = load(tmp_path / "sensitivity.json")
    rows = r["rows"]
    base = next(iter(rows))
    assert base == "baseline (patch 2 px)" and rows[base]["pearson"] == pytest.approx(1.0)
    assert {"patch 4 px", "patch 8 px", "subdivision 1", "logit", "Eq. 6 covered"} <= set(rows)
    assert all(row["faces"] == row["faces_in_common"] == r["faces"] == 4 for row in rows.values())
    for name, row in rows.items():
        assert sum(row["shares"].values()) == pytest.approx(100.0, abs=0.01)
        assert -1 <= row["spearman"] <= 1 and row["common_pixels"] > 0
        if name != base:
            assert row["spearman"] < 1 - 1e-6, name  # every variant changes the map
    assert load(tmp_path / "patch_8_px" / "summary.json")["patch_size"] == 8
    assert load(tmp_path / "subdivision_1" / "summary.json")["vertices"] > 1800
    black = [k for k in rows if k.startswith("fill black")]
    assert len(black) == 1 and load(tmp_path / "fill_black" / "summary.json")["config"]["fill"] == pytest.approx(
        float(black[0].split("(")[1].rstrip(")")), abs=1e-3)
    blur = load(tmp_path / "fill_blur" / "summary.json")  # 10 px at 224 scaled to the tiny model's 32 px input
    assert blur["config"]["fill_blur"] == pytest.approx(10 * 32 / 224) and blur["forward"] == "dense"
    assert any(k.startswith("fill blur (sigma 1.43 px)") for k in rows)
