"""Black-box models (host callbacks, ONNX) and the confidences of non-class outputs."""
import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from cms_jax import models
from cms_jax.models import outputs


def _host_fn(calls):
    def fn(x):
        calls.append(x.shape)
        return np.stack([x.mean(axis=(1, 2, 3)), x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3))], axis=1)
    return fn


def test_python_callable_through_jit_and_sharding_equals_direct_call():
    calls = []
    fn = _host_fn(calls)
    m = models.callable_model(fn, name="stats", input_size=(8, 8), channels=3, class_names=("mean", "range"),
                              preprocess=models.make_preprocess("RGB", 1 / 255, 0.0, 1.0))
    x = m.preprocess(np.random.default_rng(0).integers(0, 256, (8, 8, 8, 3), dtype=np.uint8))
    direct = fn(x)
    jitted = jax.jit(m.apply_fn)
    np.testing.assert_allclose(np.asarray(jitted(m.params, x)), direct, rtol=1e-6)
    assert calls[-1] == (8, 8, 8, 3)  # one host call for the whole batch, not one per image
    mesh = jax.make_mesh((len(jax.devices()),), ("data",))
    xs = jax.device_put(x, NamedSharding(mesh, P("data")))
    np.testing.assert_allclose(np.asarray(jitted(m.params, xs)), direct, rtol=1e-6)
    # Under vmap each mapped element is a batch of its own.
    stacked = np.stack([x[:4], x[4:]])
    np.testing.assert_allclose(np.asarray(jax.vmap(m.apply_fn, (None, 0))(m.params, stacked)).reshape(8, 2),
                               direct, rtol=1e-6)


def test_wrong_output_shape_is_reported():
    m = models.callable_model(lambda x: np.zeros((len(x), 3)), name="bad", input_size=(4, 4), channels=1,
                              class_names=("a", "b"), preprocess=lambda r: r)
    with pytest.raises(Exception, match=r"returned shape \(2, 3\), expected \(2, 2\)"):
        jax.block_until_ready(m(np.zeros((2, 4, 4, 1), np.float32)))


def _loose_chips(folder, n):
    import cv2

    crops = []
    for path in sorted(glob.glob(os.path.join(folder, "*.jpg")))[:n]:
        rgb = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
        p = int(0.3 * rgb.shape[0])  # FSA-Net's loose crop: context around the face box
        rgb = cv2.copyMakeBorder(rgb, p, p, p, p, cv2.BORDER_REPLICATE)
        crops.append(cv2.resize(rgb, (64, 64), interpolation=cv2.INTER_AREA))
    return np.stack(crops)


def test_headpose_yaw_changes_sign_under_mirroring(shared_dir):
    m = models.load("headpose")
    assert m.class_names == ("yaw", "pitch", "roll") and m.output == "regression" and m.input_size == (64, 64)
    crops = _loose_chips(os.path.join(shared_dir, "faces/utkface"), 12)
    f = jax.jit(m.apply_fn)
    pose = np.asarray(f(m.params, m.preprocess(crops)))
    mirrored = np.asarray(f(m.params, m.preprocess(crops[:, :, ::-1])))
    turned = np.abs(pose[:, 0]) >= 8.0  # clearly turned faces; near-frontal ones may not flip
    assert turned.sum() >= 4, pose[:, 0]
    assert np.all(np.sign(pose[turned, 0]) == -np.sign(mirrored[turned, 0])), (pose[:, 0], mirrored[:, 0])
    np.testing.assert_allclose(mirrored[turned, 0], -pose[turned, 0], atol=12.0)
    # Pitch does not depend on left/right.
    np.testing.assert_allclose(mirrored[turned, 1], pose[turned, 1], atol=8.0)
    assert models.flops(m) > 1e7  # both FSA-Net models counted from an onnxruntime profile


def test_pose_bins_are_probabilities_and_track_the_pose():
    raw = models.callable_model(lambda x: x[:, 0, 0, :3], name="pose", input_size=(1, 1), channels=3,
                                class_names=("yaw", "pitch", "roll"), preprocess=lambda r: r,
                                output="regression")
    m = outputs.pose_bins(raw, yaw_edges=(-15, 15), pitch_edges=(-10, 10), sigma=2.0)
    assert len(m.class_names) == 9 and m.outputs_are_probs and m.output == "classes"
    poses = np.array([[-40, -30, 0], [0, 0, 0], [40, 30, 0], [30, -30, 5]], np.float32)
    p = np.asarray(jax.jit(m.apply_fn)(m.params, poses[:, None, None, :]))
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)
    assert p.argmax(1).tolist() == [0, 4, 8, 2]  # row-major by pitch then yaw, top-left to bottom-right
    ages = outputs.age_bins(models.callable_model(lambda x: x[:, 0, 0, :1], name="age", input_size=(1, 1),
                                                  channels=1, class_names=("age",), preprocess=lambda r: r,
                                                  output="regression"))
    q = np.asarray(ages(np.array([5, 37, 99], np.float32).reshape(3, 1, 1, 1)))
    assert q.shape == (3, 10) and q.argmax(1).tolist() == [0, 3, 9]


def test_reference_confidences():
    raw = models.callable_model(lambda x: x[:, 0, 0, :], name="emb", input_size=(1, 1), channels=3,
                                class_names=("a", "b", "c"), preprocess=lambda r: r, output="embedding")
    x0 = np.array([[[[1.0, 2.0, 3.0]]]], np.float32)
    x1 = np.array([[[[1.0, 2.0, 5.0]]]], np.float32)
    change = outputs.set_reference(outputs.change_from_reference(raw), raw(x0)[0])
    f = jax.jit(change.apply_fn)
    assert float(f(change.params, x0)[0, 0]) == 0.0
    np.testing.assert_allclose(float(f(change.params, x1)[0, 0]), -2.0, rtol=1e-6)
    cos = outputs.set_reference(outputs.cosine_to_reference(raw), raw(x0)[0])
    np.testing.assert_allclose(float(cos(x0)[0, 0]), 1.0, rtol=1e-6)
    np.testing.assert_allclose(float(cos(2 * x0)[0, 0]), 1.0, rtol=1e-6)  # scale-free
    assert float(cos(x1)[0, 0]) < 1.0
    with pytest.raises(ValueError, match="must have shape"):
        outputs.set_reference(cos, jnp.zeros(4))
