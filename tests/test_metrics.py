"""Metrics of Eqs. 7-11 (cms_jax.metrics) on hand-made cases with known answers."""
import numpy as np
import pytest

from cms_jax import metrics

N, H, W = 6, 8, 8
REGION = (slice(2, 5), slice(3, 6))  # the only pixels the toy model looks at


def _region_mask():
    m = np.zeros((H, W), np.float32)
    m[REGION] = 1.0
    return m


def confidence(images):
    """Toy model: P(class 0) rises with the mean brightness of REGION (0-255 pixels)."""
    z = images[:, REGION[0], REGION[1], :].mean(axis=(1, 2, 3)) / 255.0 * 8.0 - 2.0
    p0 = 1.0 / (1.0 + np.exp(-z))
    return np.stack([p0, 1.0 - p0], axis=-1)


def _bright_images():
    rng = np.random.default_rng(0)
    return rng.uniform(180, 255, size=(N, H, W, 3)).astype(np.float32)


def test_minmax_normalize_and_degenerate_maps():
    h = np.stack([np.arange(H * W, dtype=float).reshape(H, W), np.full((H, W), 3.0)])
    out, degenerate = metrics.minmax_normalize(h)
    assert out[0].min() == 0.0 and out[0].max() == 1.0
    assert np.all(out[1] == 1.0) and degenerate.tolist() == [False, True]
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        metrics.minmax_normalize(h[0])


def test_normalized_maps_share_sum_s():
    rng = np.random.default_rng(1)
    maps = {"a": rng.random((N, H, W)) * 5, "b": rng.random((N, H, W)) ** 4 - 0.2}
    scaled, s, _ = metrics.normalize_heatmaps(maps)
    normed_sums = [metrics.minmax_normalize(np.maximum(m, 0))[0].sum(axis=(1, 2)) for m in maps.values()]
    np.testing.assert_allclose(s, np.mean(normed_sums, axis=0))
    for m in scaled.values():
        np.testing.assert_allclose(m.sum(axis=(1, 2)), s)
    scaled, s, _ = metrics.normalize_heatmaps(maps, s_frac=0.25)
    np.testing.assert_allclose(s, 0.25 * H * W)
    np.testing.assert_allclose(scaled["b"].sum(axis=(1, 2)), 0.25 * H * W)
    with pytest.raises(ValueError, match="same"):
        metrics.normalize_heatmaps({"a": maps["a"], "c": maps["a"][:, :4]})


def test_negative_saliency_is_clipped_before_min_max():
    """A CMS with a zero background and negative drops: neither may receive saliency (Figs. 9/10)."""
    cms = np.zeros((1, H, W))
    cms[0, 2:4, 2:4] = 0.3   # salient
    cms[0, 5:7, 5:7] = -0.6  # occluding here raised the confidence
    scaled, _, degenerate = metrics.normalize_heatmaps({"cms": cms}, s_frac=0.1)
    m = scaled["cms"][0]
    assert not degenerate["cms"][0]
    assert m[2:4, 2:4].min() > 0 and m.sum() == pytest.approx(0.1 * H * W)
    background = np.ones((H, W), bool)
    background[2:4, 2:4] = False
    assert np.all(m[background] == 0.0)  # min-max without the clip gives the background 0.6/0.9


def test_explanation_images_clip_and_count():
    images = np.full((1, 2, 2, 3), 100.0, np.float32)
    h = np.array([[[0.0, 0.5], [1.5, 3.0]]])  # two of four pixels have 1 - H < 0
    e, clip_rate = metrics.explanation_images(images, h)
    assert clip_rate == 0.5
    np.testing.assert_allclose(e[0, ..., 0], [[100.0, 50.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="do not match"):
        metrics.explanation_images(images, h[:, :1])


def test_average_drop_and_increase_hand_values():
    y, o = np.array([0.8, 0.5, 0.4, 0.2]), np.array([0.4, 0.6, 0.4, 0.0])
    # drops: 0.5, 0 (increase), 0, 1.0  -> mean 0.375
    assert metrics.average_drop(y, o) == pytest.approx(37.5)
    assert metrics.increase_in_confidence(y, o) == pytest.approx(25.0)
    with pytest.raises(ValueError, match="positive"):
        metrics.average_drop(np.array([0.0]), np.array([0.0]))


def test_win_percent_ties_split_and_sum_to_100():
    o = {"a": np.array([0.1, 0.2, 0.3]), "b": np.array([0.1, 0.5, 0.1]),
         "c": np.array([0.9, 0.2, 0.4])}
    wins = metrics.win_percent(o)
    assert wins["a"] == pytest.approx(100 / 3)  # half of image 0, half of image 1
    assert wins["b"] == pytest.approx(50.0)  # half of image 0, all of image 2
    assert wins["c"] == pytest.approx(100 / 6)
    assert sum(wins.values()) == pytest.approx(100.0)
    loose = metrics.win_percent({"a": np.array([0.10]), "b": np.array([0.11])}, tie_tol=0.02)
    assert loose == {"a": 50.0, "b": 50.0}


def test_map_on_the_used_pixels_gives_largest_drop():
    images = _bright_images()
    elsewhere = np.zeros((H, W), np.float32)
    elsewhere[5:8, 0:3] = 1.0  # same area, pixels the model ignores
    rng = np.random.default_rng(2)
    maps = {"exact": np.broadcast_to(_region_mask(), (N, H, W)) + 0.0,
            "elsewhere": np.broadcast_to(elsewhere, (N, H, W)) + 0.0,
            "noise": rng.random((N, H, W))}
    table = metrics.faithfulness(confidence, images, maps, targets=np.zeros(N, int))
    drops = {k: v["average_drop"] for k, v in table["methods"].items()}
    assert drops["exact"] == max(drops.values()) and drops["exact"] > 50.0
    assert drops["elsewhere"] == pytest.approx(0.0)
    assert table["methods"]["exact"]["win"] == 100.0
    assert sum(v["win"] for v in table["methods"].values()) == pytest.approx(100.0)
    # s is the mean normalised sum, larger than the 9-pixel masks: they exceed 1 and clip.
    assert table["methods"]["exact"]["clip_rate"] == pytest.approx(9 / (H * W))
    assert table["methods"]["noise"]["clip_rate"] == 0.0
    assert table["n"] == N


def test_increase_counted_when_darkening_helps():
    images = _bright_images()
    # Target class 1 gains confidence when REGION darkens.
    maps = {"exact": np.broadcast_to(_region_mask(), (N, H, W)) + 0.0}
    table = metrics.faithfulness(confidence, images, maps, targets=np.ones(N, int), s_frac=0.1)
    assert table["methods"]["exact"]["increase_in_confidence"] == 100.0
    assert table["methods"]["exact"]["average_drop"] == 0.0
