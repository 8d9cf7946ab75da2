"""The blur fill (`occlusion.blurred`, `RunConfig.fill_blur`): each square takes its image's own blurred pixels."""
import cv2
import jax
import numpy as np
import pytest

from cms_jax import occlusion as occ
from cms_jax import sharding as shd
from cms_jax.engine import OcclusionEngine
from test_engine import H, W, _inputs, apply_fn, face_model, init_params


def test_blurred_is_opencv_gaussian_blur_with_reflected_borders():
    """An independent reference: OpenCV's GaussianBlur with the same kernel (±3 sigma) and
    BORDER_REFLECT_101 (numpy's 'reflect')."""
    x = np.random.default_rng(0).normal(size=(2, 20, 17, 3)).astype(np.float32)
    for sigma in (0.8, 2.0):
        r = int(np.ceil(3 * sigma))
        ref = np.stack([cv2.GaussianBlur(im, (2 * r + 1, 2 * r + 1), sigma, borderType=cv2.BORDER_REFLECT_101)
                        for im in x])
        np.testing.assert_allclose(occ.blurred(x, sigma), ref, atol=1e-5)
    const = np.full((1, 8, 8, 3), 0.3, np.float32)
    np.testing.assert_allclose(occ.blurred(const, 1.5), const, atol=1e-6)  # a flat image stays itself
    with pytest.raises(ValueError, match="sigma must be > 0"):
        occ.blurred(x, 0.0)


def _phi(params, x, target):
    z = np.asarray(apply_fn(params, x[None]))[0]
    p = np.exp(z - z.max())
    return (p / p.sum())[target]


def test_blur_fill_drops_equal_hand_occluded_copies_on_one_and_eight_devices():
    """Eq. 1 with the square set to the blurred image's pixels, by hand, against the engine (dense),
    on one device and on the 8 fake CPU devices; a constant fill gives other drops."""
    images, xy = _inputs(n=2, v=12)
    params = init_params()
    fills = occ.blurred(images, 2.0)
    sz = 5
    ref = np.zeros((2, 12), np.float32)
    for i in range(2):
        t = int(np.asarray(apply_fn(params, images[i:i + 1])).argmax())
        clean = _phi(params, images[i], t)
        for v, (x1, x2, y1, y2) in enumerate(occ.square_bounds(xy[i], sz, (H, W))):
            x = images[i].copy()
            x[y1:y2, x1:x2] = fills[i, y1:y2, x1:x2]
            ref[i, v] = clean - _phi(params, x, t)
    for mesh in (shd.data_mesh(jax.devices()[:1]), shd.data_mesh()):
        res = OcclusionEngine(face_model(params), batch_size=8, mesh=mesh, patch_size=sz).run(images, xy, fill=fills)
        np.testing.assert_allclose(res.drops, ref, atol=2e-6)
    const = OcclusionEngine(face_model(params), batch_size=8, patch_size=sz).run(images, xy, fill=0.0)
    assert np.abs(const.drops - ref).max() > 1e-3
    with pytest.raises(ValueError, match="fill must be one value or fill images"):
        OcclusionEngine(face_model(params), batch_size=8, patch_size=sz).run(images, xy, fill=fills[:1])


def test_blur_fill_needs_the_dense_forward_and_changes_the_fingerprint():
    from cms_jax.pipeline import RunConfig
    from cms_jax.scoring.backend import DropsBackend
    from cms_jax.models.vgg import tiny_vgg

    model = tiny_vgg()
    auto = DropsBackend(RunConfig(model="tiny", fill_blur=1.5, incremental="auto"), model)
    assert auto.forward == "dense" and "fill_blur" in auto.forward_note
    with pytest.raises(ValueError, match="drop --incremental"):
        DropsBackend(RunConfig(model="tiny", fill_blur=1.5, incremental=True), model)
    with pytest.raises(ValueError, match="fill_blur must be 0"):
        RunConfig(fill_blur=-1.0).validate()
    # A run made before the field existed keeps its fingerprint; a blur run has its own.
    base = RunConfig(model="tiny")
    assert "fill_blur" not in base.fingerprint_fields()
    assert RunConfig(model="tiny", fill_blur=1.5).fingerprint() != base.fingerprint()
    # The backend's drops are the engine's with the blurred images as fill.
    x = np.random.default_rng(0).uniform(-1, 1, (2,) + tuple(model.input_size) + (3,)).astype(np.float32)
    xy = np.random.default_rng(1).uniform(2, model.input_size[0] - 2, (2, 9, 2))
    got = auto.drops(x, xy, np.ones((2, 9), bool))
    want = auto.engine.run(x, xy, valid=np.ones((2, 9), bool), patch_size=auto.patch, fill=occ.blurred(x, 1.5))
    np.testing.assert_array_equal(got.drops, want.drops)
    assert np.abs(got.drops).max() > 0
