"""Maps for people (cms_jax.render): colour scales, colour bars, the smooth rendering, region outlines."""
import numpy as np
import pytest

from cms_jax.render import colours, panel, smooth


def test_a_map_with_negative_values_gets_a_diverging_scale_white_at_zero():
    m = np.array([[-0.02, 0.0], [0.05, 0.01]])
    s = colours.fit(m, unit="drop in probability")
    assert (s.lo, s.hi, s.diverging) == (-0.02, 0.05, True)
    assert tuple(s.rgb(0.0)) == colours.ZERO_RGB == (247, 247, 247)
    # Symmetric about zero: +-max|v| are the table's ends, so equal colours mean equal magnitudes.
    assert tuple(s.rgb(0.05)) == tuple(colours.DIVERGING[-1]) and tuple(s.rgb(-0.05)) == tuple(colours.DIVERGING[0])
    assert tuple(s.rgb(-0.02)) == tuple(colours.DIVERGING[round((0.5 - 0.5 * 0.02 / 0.05) * 256)])
    assert s.ticks() == [-0.02, 0.0, 0.05]
    # Blue below zero, red above.
    lo, hi = s.rgb(-0.04).astype(int), s.rgb(0.04).astype(int)
    assert lo[2] > lo[0] and hi[0] > hi[2]


def test_a_map_without_negative_values_spans_the_sequential_table_over_its_range():
    m = np.array([[0.01, 0.02], [0.03, 99.0]])
    mask = m < 50  # the range is taken where the map is defined only
    s = colours.fit(m, mask)
    assert (s.lo, s.hi, s.diverging) == (0.01, 0.03, False)
    assert tuple(s.rgb(0.01)) == tuple(colours.SEQUENTIAL[0]) and tuple(s.rgb(0.03)) == tuple(colours.SEQUENTIAL[-1])
    assert s.ticks() == [0.01, 0.03]
    assert colours.fit(np.zeros((2, 2))).rgb(0.0).shape == (3,)  # a constant map does not divide by zero


def test_zero_is_marked_on_any_bar_that_spans_it():
    from cms_jax.render.colours import Scale
    from cms_jax.render.panel import colour_bar
    s = Scale(-0.01, 0.05, diverging=False)
    assert s.ticks() == [-0.01, 0.0, 0.05] and Scale(0.01, 0.05).ticks() == [0.01, 0.05]
    bar, (x0, y0, x1, y1) = colour_bar(s, 121)
    x = x0 + int(round(0.01 / 0.06 * 120))
    assert (bar[y1:y1 + 4, x] == 0).all()  # the tick mark at 0


def test_colour_bar_runs_from_the_maps_minimum_to_its_maximum():
    m = np.linspace(-1.0, 3.0, 50).reshape(5, 10)
    s = colours.fit(m, unit="drop in logit")
    bar, (x0, y0, x1, y1) = panel.colour_bar(s, 200)
    row = bar[(y0 + y1) // 2, x0:x1]
    assert x1 - x0 == 200
    np.testing.assert_array_equal(row[0], s.rgb(m.min()))
    np.testing.assert_array_equal(row[-1], s.rgb(m.max()))
    zero = np.argmin(np.abs(np.linspace(-1.0, 3.0, 200)))  # the column of value 0
    assert np.abs(row[zero].astype(int) - colours.ZERO_RGB).max() <= 4
    assert (bar[:y0] < 128).any()  # the unit is written above the bar


def test_score_unit_names_what_the_drops_measure():
    assert colours.score_unit({"score": "prob"}) == "drop in probability"
    assert colours.score_unit({"score": "logit", "reduce": "sum"}) == "sum over images of the drop in logit"
    assert colours.score_unit({"model_output": "embedding"}) == "drop in cosine similarity"
    assert "yaw" in colours.score_unit({"model_output": "regression", "config": {"target": "yaw"}})


def test_panel_keeps_the_canvas_and_draws_the_map_outlines_and_bar():
    from cms_jax.align import CanonicalFace
    from cms_jax.pipeline import writers
    canon = CanonicalFace.mediapipe(canvas=256)
    yy, xx = np.mgrid[:256, :256]
    cms = ((xx - 128) / 128.0).astype(np.float32)  # negative on the left half
    mask = (xx > 20) & (xx < 236)
    im = writers.render_cms(cms, canon, mask, "drop in probability")
    assert im.shape == (256, 256, 3) and im.dtype == np.uint8
    s = colours.fit(cms, mask)
    base = panel.backdrop(canon.image)
    # Away from the outlines and the inset bar, a pixel is the blend of the face and its value's colour.
    edges = writers.region_edges(canon)
    assert edges.any() and edges[128, 128 - 40:128 + 40].sum() >= 2  # the nose's outline crosses mid-face
    r, c = 60, 40
    assert not edges[r, c]
    want = np.round(0.35 * base[r, c] + 0.65 * s.rgb(cms[r, c]))
    np.testing.assert_array_equal(im[r, c], want)
    # Outside the mask: the gray face alone; left is bluish, right reddish.
    np.testing.assert_array_equal(im[60, 5], np.round(base[60, 5]))
    assert im[100, 60, 2] > im[100, 60, 0] and im[100, 196, 0] > im[100, 196, 2]


def test_smooth_rendering_is_linear_over_triangles_and_equals_vertex_values_at_vertices():
    from cms_jax.align import CanonicalFace
    canon = CanonicalFace.mediapipe(canvas=128)
    v = canon.vertices.astype(np.float64)
    values = 0.3 * v[:, 0] - 0.7 * v[:, 1] + 5.0  # linear: interpolation must reproduce it exactly
    m, mask = smooth.smooth_map(values, canon.vertices, canon.triangles, canon.canvas_hw, canon.depth)
    rows, cols = np.nonzero(mask)
    assert mask.sum() > 0.4 * mask.size
    np.testing.assert_allclose(m[rows, cols], 0.3 * (cols + 0.5) - 0.7 * (rows + 0.5) + 5.0, atol=2e-4)
    # With every vertex moved to a pixel centre, the pixel holding a vertex shows exactly its value
    # (all but the few vertices hidden behind a nearer triangle, e.g. beside the nose).
    big = CanonicalFace.mediapipe(canvas=512)
    vals = np.random.default_rng(0).normal(size=len(v))
    at_centres = (np.floor(big.vertices) + 0.5).astype(np.float32)
    sm, smask = smooth.smooth_map(vals, at_centres, big.triangles, big.canvas_hw, big.depth)
    c, r = at_centres[:, 0].astype(int), at_centres[:, 1].astype(int)
    hit = np.isclose(sm[r, c], vals, atol=1e-5) & smask[r, c]
    assert hit.mean() > 0.95, hit.mean()
    # Undefined vertices drop their triangles.
    _, less = smooth.smooth_map(vals, canon.vertices, canon.triangles, canon.canvas_hw, canon.depth,
                                defined=v[:, 0] > 64)
    assert less.sum() < mask.sum() and not less[:, :50].any()


def test_vertex_values_follow_the_runs_reduction():
    drops = np.array([[1.0, 2.0, np.nan], [3.0, -4.0, 5.0], [5.0, 0.0, 1.0]])
    valid = np.array([[True, True, True], [True, False, True], [True, True, False]])
    mean, seen = smooth.vertex_values(drops, valid, "mean")
    np.testing.assert_allclose(mean, [9 / 3, 2 / 3, 5 / 3])
    covered, _ = smooth.vertex_values(drops, valid, "covered")
    np.testing.assert_allclose(covered, [3.0, 1.0, 5.0])
    np.testing.assert_allclose(smooth.vertex_values(drops, valid, "sum")[0], [9.0, 2.0, 5.0])
    assert seen.all()
    with pytest.raises(ValueError, match="reduce"):
        smooth.vertex_values(drops, valid, "median")
