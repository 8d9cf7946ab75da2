"""Tests of Eq. 6 (cms_jax/accumulate.py): streaming, mergeable CMS."""
import numpy as np
import orbax.checkpoint as ocp
import pytest

from cms_jax.accumulate import CMSAccumulator, cms_from_drops
from cms_jax.projection import canonical_map

HW = (48, 40)
F = 5.5


def _data(n=11, v=120, seed=0):
    rng = np.random.default_rng(seed)
    xy = np.stack([rng.uniform(0, HW[1], v), rng.uniform(0, HW[0], v)], 1)
    drops = rng.normal(size=(n, v)).astype(np.float32)
    valid = rng.random((n, v)) > 0.3  # visibility differs per image, so N differs too
    return xy, drops, valid


def _reference_mean(xy, drops, valid):
    return np.mean([canonical_map(d, xy, HW, F, valid=m) for d, m in zip(drops, valid)], axis=0)


def test_mean_of_cis_maps_streamed_in_pieces():
    xy, drops, valid = _data()
    acc = CMSAccumulator(HW, batch=4)  # 11 images: batches of 4, 4 and a padded 3
    state = acc.empty_state()
    for s in (slice(0, 5), slice(5, 6), slice(6, 11)):
        state = acc.add_drops(state, drops[s], valid[s], xy, F)
    assert int(state["count"]) == 11
    cms = acc.result(state)
    assert cms.dtype == np.float32 and cms.shape == HW
    np.testing.assert_allclose(cms, _reference_mean(xy, drops, valid), atol=1e-6)


def test_sum_reduce_is_the_official_code():
    xy, drops, valid = _data(n=3)
    acc = CMSAccumulator(HW, reduce="sum")
    cms = acc.result(acc.add_drops(acc.empty_state(), drops, valid, xy, F))
    np.testing.assert_allclose(cms, 3 * _reference_mean(xy, drops, valid), atol=1e-5)
    with pytest.raises(ValueError, match="reduce must be one of"):
        CMSAccumulator(HW, reduce="median")


def test_covered_mean_divides_by_the_images_that_reach_each_pixel():
    """reduce='covered': where half the images see a region, Eq. 6's mean halves it; this does not."""
    xy, drops, valid = _data(n=6)
    valid[:3, xy[:, 0] > HW[1] / 2] = False  # three images never see the right half of the face
    maps = np.stack([canonical_map(d, xy, HW, F, valid=m) for d, m in zip(drops, valid)])
    reach = np.stack([canonical_map(np.ones(len(xy), np.float32), xy, HW, F, valid=m) for m in valid]) > 0
    want = np.where(reach.sum(0) > 0, maps.sum(0) / np.maximum(reach.sum(0), 1), 0.0)
    acc = CMSAccumulator(HW, reduce="covered", batch=4, groups=("a", "b"))
    state = acc.add_drops(acc.empty_state(), drops, valid, xy, F, group_of=["a", "b"] * 3)
    np.testing.assert_allclose(acc.result(state), want, atol=1e-5)
    np.testing.assert_array_equal(state["covered"], reach.sum(0))
    right = (reach[3:].any(0)) & ~reach[:3].any(0)
    assert right.any()
    mean = CMSAccumulator(HW).result(state)  # Eq. 6 over the same state
    np.testing.assert_allclose(mean[right] * 6 / reach.sum(0)[right], acc.result(state)[right], atol=1e-5)
    ga = acc.group_results(state)["a"]  # images 0, 2, 4
    ra = reach[[0, 2, 4]].sum(0)
    np.testing.assert_allclose(ga, np.where(ra > 0, maps[[0, 2, 4]].sum(0) / np.maximum(ra, 1), 0), atol=1e-5)


def test_merge_equals_one_pass_and_keeps_extra_keys():
    xy, drops, valid = _data(n=9)
    acc = CMSAccumulator(HW)
    a = acc.add_drops(acc.empty_state(), drops[:4], valid[:4], xy, F)
    a["next_index"] = np.asarray(4, np.int64)
    b = acc.add_drops(acc.empty_state(), drops[4:], valid[4:], xy, F)
    merged = acc.merge(a, b)
    whole = acc.add_drops(acc.empty_state(), drops, valid, xy, F)
    assert int(merged["count"]) == 9 and int(merged["next_index"]) == 4
    np.testing.assert_allclose(acc.result(merged), acc.result(whole), atol=1e-7)
    assert int(a["count"]) == 4, "add_drops/merge must not modify their inputs"


def test_state_is_plain_numpy_of_constant_size_and_survives_orbax(tmp_path):
    xy, drops, valid = _data(n=6)
    acc = CMSAccumulator(HW)
    small = acc.add_drops(acc.empty_state(), drops[:1], valid[:1], xy, F)
    state = acc.add_drops(acc.empty_state(), drops, valid, xy, F)
    assert all(isinstance(x, np.ndarray) for x in state.values())
    assert {k: x.nbytes for k, x in state.items()} == {k: x.nbytes for k, x in small.items()}
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(tmp_path / "acc", state)
    ckpt.wait_until_finished()
    restored = ckpt.restore(tmp_path / "acc", acc.empty_state())
    resumed = acc.add_drops(restored, drops[:2], valid[:2], xy, F)
    expected = acc.add_drops(state, drops[:2], valid[:2], xy, F)
    np.testing.assert_allclose(acc.result(resumed), acc.result(expected), atol=1e-7)


def test_cms_from_drops_of_a_subset_without_rescoring():
    xy, drops, valid = _data(n=8)
    group = np.array([0, 3, 5])
    cms = cms_from_drops(drops[group], valid[group], xy, HW, F)
    np.testing.assert_allclose(cms, _reference_mean(xy, drops[group], valid[group]), atol=1e-6)
    everything = cms_from_drops(drops, None, xy, HW, F)
    np.testing.assert_allclose(everything, canonical_map(drops.mean(0), xy, HW, F), atol=1e-6)


def test_each_image_splatted_at_its_own_side():
    """An (N,) array of canonical sides (whole crops): image i's CIS uses side i, in the state and from drops."""
    xy, drops, valid = _data(n=7)
    sides = np.array([3.0, 5.5, 8.25, 5.5, 12.0, 4.0, 6.5])
    want = np.mean([canonical_map(d, xy, HW, f, valid=m) for d, m, f in zip(drops, valid, sides)], axis=0)
    acc = CMSAccumulator(HW, batch=4, groups=("a", "b"))
    state = acc.add_drops(acc.empty_state(), drops, valid, xy, sides, group_of=["a", "b", None, "a", "b", "a", "b"])
    np.testing.assert_allclose(acc.result(state), want, atol=1e-6)
    a = [0, 3, 5]
    np.testing.assert_allclose(acc.group_results(state)["a"], np.mean(
        [canonical_map(drops[i], xy, HW, sides[i], valid=valid[i]) for i in a], axis=0), atol=1e-6)
    np.testing.assert_allclose(cms_from_drops(drops, valid, xy, HW, sides), want, atol=1e-6)
    # One side for all, given once or per image: the same numbers, bit for bit.
    np.testing.assert_array_equal(cms_from_drops(drops, valid, xy, HW, np.full(7, F)),
                                  cms_from_drops(drops, valid, xy, HW, F))
    with pytest.raises(ValueError, match=r"one per image \(7,\)"):
        cms_from_drops(drops, valid, xy, HW, sides[:3])
    with pytest.raises(ValueError, match="finite and > 0"):
        cms_from_drops(drops, valid, xy, HW, np.where(np.arange(7) == 2, np.inf, sides))


def test_errors_name_the_bad_input():
    xy, drops, valid = _data(n=2)
    acc = CMSAccumulator(HW)
    with pytest.raises(ValueError, match="canon_xy must be"):
        acc.add_drops(acc.empty_state(), drops, valid, xy[:10], F)
    with pytest.raises(ValueError, match="state must hold 'sum' of shape"):
        acc.add_drops({"sum": np.zeros((3, 3)), "count": np.asarray(0)}, drops, valid, xy, F)
