"""Bootstrap CIs of CMS statistics (`figures.map_ci`, `accumulate.weighted_cis_sums`) on synthetic runs."""
import numpy as np
import pytest

from cms_jax import regions
from cms_jax.accumulate import cms_from_drops, weighted_cis_sums
from cms_jax.figures import common, map_ci


def _run(drops, files, canon, side=9.0, name="r"):
    from cms_jax.projection import square_coverage

    n = len(drops)
    sides = np.full(n, side, np.float32)
    valid = np.ones(drops.shape, bool)
    cms = cms_from_drops(drops, valid, canon.vertices, canon.canvas_hw, sides)
    return common.Run(name, {"model": name, "reduce": "mean"}, cms, np.asarray(files), drops.astype(np.float32),
                      valid, np.zeros(n, int), np.ones(n), canon, sides,
                      square_coverage(canon.vertices, canon.canvas_hw, sides))


@pytest.fixture(scope="module")
def canon(shared_dir):
    from cms_jax.align.canonical import CanonicalFace

    return CanonicalFace.mediapipe(canvas=96)


def test_weighted_sums_are_the_cms_of_the_resampled_faces():
    """Row g of the weighted sums over N is the CMS of the faces drawn with those counts (an independent
    path: `cms_from_drops` of the repeated rows), with one side per image too; P* without normalising."""
    from cms_jax.projection import splat

    rng = np.random.default_rng(0)
    xy = rng.uniform(5, 55, (30, 2))
    d, valid = rng.normal(size=(7, 30)).astype(np.float32), rng.random((7, 30)) > 0.2
    w = map_ci.draw_weights(7, 3, seed=1)
    assert w.shape == (7, 4) and (w[:, 0] == 1).all() and (w[:, 1:].sum(0) == 7).all()
    for sides in (6.0, rng.uniform(4, 8, 7)):
        sums, _ = weighted_cis_sums(d, valid, xy, sides, (64, 64), w, batch=4)
        for g in range(4):
            idx = np.repeat(np.arange(7), w[:, g].astype(int))
            f = sides if np.ndim(sides) == 0 else sides[idx]
            np.testing.assert_allclose(sums[g] / 7, cms_from_drops(d[idx], valid[idx], xy, (64, 64), f), atol=1e-5)
    raw, _ = weighted_cis_sums(d, valid, xy, 6.0, (64, 64), w[:, :1], normalise=False)
    ref = sum(splat(d[i], xy, (64, 64), 6.0, valid[i])[0] for i in range(7))
    np.testing.assert_allclose(raw[0], ref, atol=1e-4)
    with pytest.raises(ValueError, match="weights must be"):
        weighted_cis_sums(d, valid, xy, 6.0, (64, 64), w[:3])


def test_region_cis_find_a_planted_nose_and_the_pearson_ci_is_paired(canon):
    """Drops planted on the nose vertices (plus face-to-face noise): the nose's density CI lies above 1
    and the mouth's below; a run compared with itself has Pearson 1 with a zero-width CI; a second
    model with the same plant and its own noise gets a CI that brackets its full-sample Pearson."""
    rng = np.random.default_rng(0)
    hw = canon.canvas_hw
    masks = regions.region_masks(canon.vertices[:468], hw)
    from cms_jax.regions import vertex_regions

    nose = vertex_regions(canon.vertices[:468], masks)[:, list(masks).index("nose")]
    n, v = 60, len(canon.vertices)
    base = np.where(nose, 1.0, 0.1)[None] + 0.3 * rng.normal(size=(n, v))
    files = [f"f{i}.jpg" for i in range(n)]
    a = _run(base, files, canon, name="a")
    b = _run(np.where(nose, 1.0, 0.1)[None] + 0.3 * rng.normal(size=(n, v)), files[::-1], canon, name="b")
    b = common.Run(b.out_dir, b.summary, b.cms, b.files, b.drops[::-1].copy(), b.valid, b.targets, b.clean,
                   b.canon, b.sides, b.coverage)  # the same faces in another order
    out = map_ci.report({"a": a, "a again": a, "b": b}, draws=100)
    assert out["faces"] == n
    dens = out["runs"]["a"]["cms"]["density"]
    assert dens["nose"]["ci"][0] > 1.5 and dens["mouth"]["ci"][1] < 1.0
    assert dens["nose"]["value"] == pytest.approx(regions.region_density(a.cms, masks, a.coverage)["nose"], rel=1e-5)
    same = out["pearson"]["a vs a again"]
    assert same["value"] == pytest.approx(1.0) and same["ci"][0] == pytest.approx(1.0)
    ab = out["pearson"]["a vs b"]
    assert ab["ci"][0] < ab["value"] < ab["ci"][1] and 0.5 < ab["value"] < 1.0
    # Why the interval is the normal one: every draw adds its own noise, so the draws of a correlation
    # between noisy means fall below the full-sample value, here by more than 1.96 sd / 2: a percentile
    # interval would lie almost wholly below the value it qualifies.
    assert ab["bias"] < -0.98 * ab["sd"]
    assert ab["ci"][1] - ab["ci"][0] == pytest.approx(2 * 1.96 * ab["sd"], rel=1e-6)
    md = map_ci.markdown(out)
    assert "| a vs b |" in md and f"over the {n} faces" in md


def test_common_rows_match_files_and_refuse_disjoint_runs(canon):
    d = np.zeros((3, len(canon.vertices)))
    a, b = _run(d, ["x", "y", "z"], canon), _run(d, ["z", "q", "x"], canon)
    rows = map_ci.common_rows({"a": a, "b": b})
    assert rows["a"].tolist() == [0, 2] and rows["b"].tolist() == [2, 0]
    with pytest.raises(ValueError, match="share no scored face"):
        map_ci.common_rows({"a": a, "c": _run(d, ["p", "q", "r"], canon)})


def test_single_cis_of_identical_faces_is_one(canon):
    """Every face with the same drops: each CIS is the CMS, so Spearman is 1 on every face."""
    rng = np.random.default_rng(1)
    d = np.repeat(rng.normal(size=(1, len(canon.vertices))), 5, 0)
    r = _run(d, [f"{i}" for i in range(5)], canon)
    s = map_ci.single_cis(r, np.arange(5), draws=50)
    assert s["n"] == 5 and s["mean"] == pytest.approx(1.0) and s["range_5_95"][0] == pytest.approx(1.0)
