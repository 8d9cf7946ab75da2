"""Model crops: box geometry, border replication, vertices carried into the crop."""
import numpy as np
import pytest

from cms_jax.align import crop_box, crop_face


def _ramp(h=100, w=80):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 3 % 256, y * 2 % 256, (x + y) % 256], -1).astype(np.uint8)


def test_tight_zero_margin_is_an_exact_cut():
    img = _ramp()
    xy = np.array([[20.0, 30.0], [40.0, 50.0], [25.0, 45.0]])
    crop, xy_c = crop_face(img, xy, "tight", 0.0, (20, 20))
    np.testing.assert_array_equal(crop, img[30:50, 20:40])
    np.testing.assert_allclose(xy_c, xy - [20, 30])


def test_vertices_follow_the_pixels():
    """A bright dot at a vertex lands where the mapped vertex says, after resize."""
    img = np.zeros((300, 240, 3), np.uint8)
    xy = np.array([[60.0, 80.0], [180.0, 220.0], [100.5, 150.5]])
    img[150, 100] = 255  # pixel (row 150, col 100) covers [100, 101) x [150, 151)
    for policy, margin, out in (("loose", 0.8, (64, 64)), ("tight", 0.1, (32, 32)),
                                ("whole", 0.0, (60, 48))):
        crop, xy_c = crop_face(img, xy, policy, margin, out)
        assert crop.shape == (*out, 3)
        r, c = np.unravel_index(crop[..., 0].argmax(), crop.shape[:2])
        assert abs(c + 0.5 - xy_c[2, 0]) <= 0.75 and abs(r + 0.5 - xy_c[2, 1]) <= 0.75, policy


def test_loose_is_square_and_larger_than_tight():
    xy = np.array([[50.0, 40.0], [150.0, 200.0]])  # 100 wide, 160 tall
    _, _, w, h = crop_box(xy, "tight", 0.1, (64, 64), (300, 300))
    assert w == h == 176
    x0, y0, w, h = crop_box(xy, "loose", 0.8, (64, 64), (300, 300))
    assert w == h == 288 and (x0 + w / 2, y0 + h / 2) == (100, 120)
    _, _, w, h = crop_box(xy, "tight", 0.0, (32, 64), (300, 300))  # output 2:1 wide
    assert (w, h) == (320, 160)


def test_border_is_replicated_outside_the_image():
    img = _ramp(60, 60)
    xy = np.array([[0.0, 0.0], [30.0, 30.0]])  # a face in the top-left corner
    crop, xy_c = crop_face(img, xy, "loose", 1.0, (60, 60))  # box 60 px from -15
    # Above the image: row 0 repeated; left of it: column 0 repeated.
    np.testing.assert_array_equal(crop[:15, 15:], np.broadcast_to(img[0, :45], (15, 45, 3)))
    np.testing.assert_array_equal(crop[15:, :15], np.broadcast_to(img[:45, :1], (45, 15, 3)))
    np.testing.assert_array_equal(crop[15:, 15:], img[:45, :45])
    np.testing.assert_allclose(xy_c, xy + 15)


def test_whole_policy_scales_the_image():
    img = _ramp(218, 178)
    xy = np.array([[89.0, 109.0], [0.0, 218.0]])
    crop, xy_c = crop_face(img, xy, "whole", 0.8, (224, 224))
    assert crop.shape == (224, 224, 3)
    np.testing.assert_allclose(xy_c, xy * [224 / 178, 224 / 218], rtol=1e-6)


def test_bad_arguments():
    img = _ramp()
    with pytest.raises(ValueError, match="policy 'wide'"):
        crop_face(img, np.zeros((3, 2)), "wide", 0.1, (32, 32))
    with pytest.raises(ValueError, match="finite"):
        crop_face(img, np.full((3, 2), np.nan), "tight", 0.1, (32, 32))
    with pytest.raises(ValueError, match="uint8"):
        crop_face(img.astype(np.float32), np.zeros((3, 2)), "tight", 0.1, (32, 32))
