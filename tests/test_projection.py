"""Tests of Eqs. 4-5 (cms_jax/projection.py): splat, density normalisation, reprojection."""
import math

import numpy as np
import pytest

from cms_jax import projection as proj


def reference_splat(values, xy, hw, f):
    """Algorithm 1 lines 8-11 as a plain float64 loop."""
    h, w = hw
    p, n = np.zeros(hw), np.zeros(hw)
    for (x, y), v in zip(xy, values):
        x1 = max(0, math.floor(x - f / 2)); x2 = min(math.floor(x1 + f), w)
        y1 = max(0, math.floor(y - f / 2)); y2 = min(math.floor(y1 + f), h)
        p[y1:y2, x1:x2] += v
        n[y1:y2, x1:x2] += 1
    return p, n


def _points(v, hw, seed=0, margin=10):
    rng = np.random.default_rng(seed)
    xy = np.stack([rng.uniform(-margin, hw[1] + margin, v), rng.uniform(-margin, hw[0] + margin, v)], 1)
    return xy, rng.normal(size=v)


@pytest.mark.parametrize("f", [1.0, 7.3, 41.4508928])
def test_splat_matches_algorithm1_loop(f):
    hw = (60, 75)
    xy, vals = _points(300, hw, seed=1)
    p_star, count = proj.splat(vals, xy, hw, f)
    ref_p, ref_n = reference_splat(vals, xy, hw, f)
    np.testing.assert_array_equal(count, ref_n)
    np.testing.assert_allclose(p_star, ref_p, rtol=1e-6, atol=1e-5)  # float32 sums
    cis = proj.canonical_map(vals, xy, hw, f)
    ref = np.where(ref_n > 0, ref_p / np.maximum(ref_n, 1), 0)
    np.testing.assert_allclose(cis, ref, atol=1e-6)
    assert cis.dtype == np.float32 and cis.shape == hw


def test_many_vertices_span_several_scan_chunks():
    hw = (50, 40)
    xy, vals = _points(5000, hw, seed=2)  # > 2 chunks of 2048, last one padded
    p_star, count = proj.splat(vals, xy, hw, 5.5)
    ref_p, ref_n = reference_splat(vals, xy, hw, 5.5)
    np.testing.assert_array_equal(count, ref_n)
    np.testing.assert_allclose(p_star, ref_p, atol=1e-4)


def test_square_coverage_is_the_union_of_the_count_maps_of_every_side():
    hw = (50, 45)
    xy, _ = _points(150, hw, seed=4)
    ones = np.ones(len(xy))
    for sides in ([6.0], [6.0, 6.0, 6.0], [2.5, 9.75, 4.0, 2.5], np.linspace(1.0, 3.0, 1100)):
        want = np.zeros(hw, bool)
        for f in np.unique(sides):
            want |= proj.splat(ones, xy, hw, f)[1] > 0
        np.testing.assert_array_equal(proj.square_coverage(xy, hw, sides), want)
    assert not proj.square_coverage(xy, hw, [2.5]).all() and proj.square_coverage(xy, hw, [2.5]).any()


def test_all_ones_splat_is_one_where_covered_and_zero_elsewhere():
    hw = (64, 64)
    xy, _ = _points(200, hw, seed=3, margin=-10)
    cis = proj.canonical_map(np.ones(200), xy, hw, 6.0)
    _, count = proj.splat(np.ones(200), xy, hw, 6.0)
    assert (count == 0).any() and (count > 1).any()
    np.testing.assert_allclose(cis[count > 0], 1.0, rtol=1e-6)
    assert (cis[count == 0] == 0).all()


def test_mass_is_value_times_in_bounds_area():
    hw = (40, 50)
    xy, vals = _points(150, hw, seed=4, margin=15)
    f = 9.6
    p_star, count = proj.splat(vals, xy, hw, f)
    area = []
    for x, y in xy:  # in-bounds area of each official-code square, computed independently
        x1 = max(0, math.floor(x - f / 2)); y1 = max(0, math.floor(y - f / 2))
        area.append(max(0, min(math.floor(x1 + f), hw[1]) - x1) * max(0, min(math.floor(y1 + f), hw[0]) - y1))
    area = np.array(area, float)
    assert (area < 81).any(), "test needs squares clipped by the canvas edge"
    np.testing.assert_allclose(p_star.sum(), (vals * area).sum(), rtol=1e-5)
    assert count.sum() == area.sum()


def test_valid_mask_equals_splat_of_the_subset():
    hw = (30, 30)
    xy, vals = _points(80, hw, seed=5)
    keep = np.arange(80) % 3 != 0
    masked = proj.canonical_map(vals, xy, hw, 4.0, valid=keep)
    np.testing.assert_allclose(masked, proj.canonical_map(vals[keep], xy[keep], hw, 4.0), atol=1e-6)
    assert not np.allclose(masked, proj.canonical_map(vals, xy, hw, 4.0), atol=1e-3)
    with pytest.raises(ValueError, match="valid must be"):
        proj.canonical_map(vals, xy, hw, 4.0, valid=keep[:10])
    with pytest.raises(ValueError, match="values must be"):
        proj.canonical_map(vals[:5], xy, hw, 4.0)


def test_reprojection_of_sampled_cms_onto_image_vertices():
    # Fig. 6d: a canonical map read at canonical vertices, drawn on the image's own vertices.
    yy, xx = np.mgrid[0:40, 0:40].astype(np.float32)
    ramp = 2.0 * xx + 0.5 * yy
    canon_xy = np.array([[3.0, 4.0], [10.5, 20.25], [39.0, 39.0], [-5.0, 12.0]])
    np.testing.assert_allclose(proj.sample_at(ramp, canon_xy),
                               [2 * 3 + 0.5 * 4, 2 * 10.5 + 0.5 * 20.25, 2 * 39 + 0.5 * 39, 0.5 * 12], rtol=1e-6)
    np.testing.assert_allclose(proj.sample_at(ramp, [[10.4, 20.6]], method="nearest"), [2 * 10 + 0.5 * 21])
    with pytest.raises(ValueError, match="method must be"):
        proj.sample_at(ramp, canon_xy, method="cubic")
    image_xy = np.array([[5.0, 5.0], [20.0, 22.0], [30.0, 8.0], [12.0, 30.0]])
    vals = proj.sample_at(ramp, canon_xy)
    on_image = proj.reproject(vals, image_xy, (36, 36), 4)
    for (x, y), v in zip(image_xy, vals):  # disjoint squares: each carries its vertex's value
        assert on_image[int(y), int(x)] == pytest.approx(v, rel=1e-6)
    assert (on_image[0, 30:] == 0).all()


def test_paper_canonical_side_is_line_4_of_algorithm1():
    assert proj.paper_canonical_side(15, 619, 224) == pytest.approx(15 * 619 / 224)


def test_second_call_with_same_shapes_does_not_recompile():
    hw = (32, 32)
    xy, vals = _points(100, hw, seed=6)
    proj.splat(vals, xy, hw, 3.0)
    before = proj.splat_rows._cache_size()
    proj.splat(vals * 2, xy + 1, hw, 5.0)  # new values, positions and f: same shapes
    assert proj.splat_rows._cache_size() == before
