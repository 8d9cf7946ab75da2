"""Keras HDF5 mini-XCEPTION in Flax: an independent numpy forward, and real accuracy.

The numpy reference reads the HDF5 datasets itself (h5py, Keras names and
layouts) and runs the first layers with plain sliding-window sums, so it
shares no code with the converter. The accuracy test runs the real gender
model on UTKFace with a loose crop (the 200x200 chip padded by 80% of its
side with edge replication, as the model card's 'loose' policy asks).
"""
import glob
import os

import h5py
import jax
import numpy as np
import pytest
from flax import nnx

from cms_jax import models
from cms_jax.models import keras_h5
from converters import keras_h5 as keras_converter

GENDER = "models/gender_mini_XCEPTION.21-0.95.hdf5"


def _w(f, layer, name):
    return np.asarray(f["model_weights"][layer][layer][f"{name}:0"], np.float64)


def _pad(x, kh, kw, stride, mode, value=0.0):
    """TF padding: 'valid' none; 'same' total = max((ceil(n/s)-1)*s + k - n, 0), extra after."""
    if mode == "valid":
        return x
    pads = []
    for n, k in ((x.shape[1], kh), (x.shape[2], kw)):
        total = max((-(-n // stride) - 1) * stride + k - n, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=value)


def _windows(x, kh, kw, stride):
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))  # (B,H',W',C,kh,kw)
    return win[:, ::stride, ::stride]


def np_conv(x, kernel, stride=1, mode="valid"):
    kh, kw = kernel.shape[:2]
    return np.einsum("bhwcij,ijco->bhwo", _windows(_pad(x, kh, kw, stride, mode), kh, kw, stride), kernel)


def np_depthwise(x, dkernel, mode="same"):
    kh, kw = dkernel.shape[:2]
    return np.einsum("bhwcij,ijc->bhwc", _windows(_pad(x, kh, kw, 1, mode), kh, kw, 1), dkernel[..., 0])


def np_bn(f, layer, x):
    g, b = _w(f, layer, "gamma"), _w(f, layer, "beta")
    m, v = _w(f, layer, "moving_mean"), _w(f, layer, "moving_variance")
    return (x - m) / np.sqrt(v + 1e-3) * g + b


def np_maxpool_same(x, k=3, stride=2):
    return _windows(_pad(x, k, k, stride, "same", -np.inf), k, k, stride).max(axis=(-1, -2))


def test_first_layers_match_independent_numpy_forward(shared_dir):
    path = os.path.join(shared_dir, GENDER)
    m = models.load(path)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 1))
    with h5py.File(path, "r") as f:
        a1 = np.maximum(np_bn(f, "batch_normalization_1", np_conv(x, _w(f, "conv2d_1", "kernel"))), 0)
        a2 = np.maximum(np_bn(f, "batch_normalization_2", np_conv(a1, _w(f, "conv2d_2", "kernel"))), 0)
        s1 = np_conv(np_depthwise(a2, _w(f, "separable_conv2d_1", "depthwise_kernel")),
                     _w(f, "separable_conv2d_1", "pointwise_kernel"))
        bn4 = np_bn(f, "batch_normalization_4", s1)
        a3 = np.maximum(bn4, 0)
        s2 = np_conv(np_depthwise(a3, _w(f, "separable_conv2d_2", "depthwise_kernel")),
                     _w(f, "separable_conv2d_2", "pointwise_kernel"))
        pooled = np_maxpool_same(np_bn(f, "batch_normalization_5", s2))
        shortcut = np_bn(f, "batch_normalization_3", np_conv(a2, _w(f, "conv2d_3", "kernel"), stride=2, mode="same"))
        add1 = pooled + shortcut
    cfg, params = keras_h5.read_h5(path)
    graphdef, _ = keras_h5.abstract_graph(cfg)
    got = nnx.merge(graphdef, params).run({"input_1": x.astype(np.float32)},
                                           ["activation_2", "batch_normalization_4", "add_1"])
    assert add1.shape == (2, 30, 30, 16)
    for name, want in (("activation_2", a2), ("batch_normalization_4", bn4), ("add_1", add1)):
        np.testing.assert_allclose(np.asarray(got[name]), want, atol=2e-4, rtol=1e-4, err_msg=name)
    # Whole model: probabilities, and the CAM split reproduces the output.
    p = np.asarray(m(x.astype(np.float32)))
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    a = m.features_fn(m.params, x.astype(np.float32))
    assert a.shape == (2, 4, 4, 128)
    np.testing.assert_allclose(np.asarray(m.head_fn(m.params, a)), p, atol=1e-6)


def _utk_loose_crops(folder, pad_frac=0.8, size=64):
    import cv2

    files = sorted(glob.glob(os.path.join(folder, "*.jpg")))
    crops, labels = [], []
    for path in files:
        rgb = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
        p = int(round(pad_frac * rgb.shape[0] / 2))  # 80% of the side in total, half each way
        rgb = cv2.copyMakeBorder(rgb, p, p, p, p, cv2.BORDER_REPLICATE)
        crops.append(cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA))
        labels.append(int(os.path.basename(path).split("_")[1]))  # 0 male, 1 female
    return np.stack(crops), np.array(labels)


@pytest.fixture(scope="module")
def utk(shared_dir):
    """(crops, gender labels, ages) of the UTKFace chips, loose-cropped once for the module."""
    crops, labels = _utk_loose_crops(os.path.join(shared_dir, "faces/utkface"))
    files = sorted(glob.glob(os.path.join(shared_dir, "faces/utkface", "*.jpg")))
    return crops, labels, np.array([int(os.path.basename(p).split("_")[0]) for p in files])


def test_gender_accuracy_on_utkface_loose_crop(utk):
    m = models.load("gender")
    assert m.class_names == ("woman", "man") and m.crop_policy == "loose" and m.crop_margin == 0.8
    crops, labels, _ = utk
    assert len(labels) >= 500
    f = jax.jit(m.apply_fn)
    probs = np.concatenate([np.asarray(f(m.params, m.preprocess(crops[i:i + 196]))) for i in range(0, len(crops), 196)])
    man = probs.argmax(1) == 1  # model: 0 woman, 1 man; file name: 0 male, 1 female
    accuracy = float(np.mean(man == (labels == 0)))
    print(f"gender accuracy on {len(labels)} UTKFace loose crops: {accuracy:.4f}")
    assert accuracy >= 0.88


def test_ssrnet_age_on_utkface(utk):
    m = models.load("age")
    assert m.output == "regression" and m.class_names == ("age",)
    crops, _, ages = utk
    pred = np.asarray(jax.jit(m.apply_fn)(m.params, m.preprocess(crops)))[:, 0]
    mae, corr = float(np.abs(pred - ages).mean()), float(np.corrcoef(pred, ages)[0, 1])
    print(f"SSR-Net on {len(ages)} UTKFace loose crops: MAE {mae:.2f} years, correlation {corr:.3f}")
    # Measured 6.7 years and 0.66 (UTKFace is not SSR-Net's training set); a mis-wired graph gives ~0.
    assert mae < 8.0 and corr > 0.55
    binned = models.load("age_bins")
    probs = np.asarray(binned(m.preprocess(crops[:8])))
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert np.all(probs.argmax(1) == np.minimum(pred[:8] // 10, 9).astype(int))


def test_expression_model_and_converter_roundtrip(shared_dir, tmp_path):
    src = os.path.join(shared_dir, "models/fer2013_mini_XCEPTION.102-0.66.hdf5")
    m = models.load("expression")
    assert m.class_names[3] == "happy" and m.channels == 1 and m.outputs_are_probs
    keras_converter.main(["--src", src, "--out", str(tmp_path / "expr")])
    loaded = models.load(tmp_path / "expr")
    assert (loaded.name, loaded.class_names, loaded.crop_policy) == (m.name, m.class_names, m.crop_policy)
    x = m.preprocess(np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8))
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(m(x)), atol=1e-6)


def test_weights_only_file_is_refused(shared_dir):
    with pytest.raises(ValueError, match="no model_config"):
        keras_h5.read_h5(os.path.join(shared_dir, "models/ssr_age_imdb.h5"))


def _layer(kind, name, inbound, **config):
    return {"class_name": kind, "name": name, "config": {"name": name, **config},
            "inbound_nodes": [[[i, 0, 0, {}] for i in inbound]] if inbound else []}


def test_vgg_style_keras_graph_flatten_dense_matches_numpy():
    """Conv 'valid' -> MaxPool 'valid' -> Flatten -> Dense softmax (keras-vggface style)."""
    cfg = {"class_name": "Model", "config": {
        "input_layers": [["inp", 0, 0]], "output_layers": [["fc", 0, 0]], "layers": [
            _layer("InputLayer", "inp", [], batch_input_shape=[None, 9, 9, 2]),
            _layer("Conv2D", "conv1_1", ["inp"], filters=3, kernel_size=[3, 3], strides=[1, 1], padding="valid",
                   use_bias=True, activation="relu"),
            _layer("MaxPooling2D", "pool1", ["conv1_1"], pool_size=[2, 2], strides=[2, 2], padding="valid"),
            _layer("Flatten", "flatten", ["pool1"]),
            _layer("Dense", "fc", ["flatten"], units=4, use_bias=True, activation="softmax")]}}
    graphdef, abstract = keras_h5.abstract_graph(cfg)
    assert abstract["fc"]["kernel"].shape == (27, 4)  # 9 -> 7 (valid conv) -> 3 (pool): 3*3*3
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda a: rng.normal(0, 0.5, a.shape).astype(np.float32), abstract)
    x = rng.normal(0, 1, (2, 9, 9, 2))
    conv = np.maximum(np_conv(x, params["conv1_1"]["kernel"]) + params["conv1_1"]["bias"], 0)
    pooled = _windows(conv, 2, 2, 2).max(axis=(-1, -2))[:, :3, :3]
    logits = pooled.reshape(2, -1) @ params["fc"]["kernel"] + params["fc"]["bias"]
    want = np.exp(logits - logits.max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    got = np.asarray(nnx.merge(graphdef, params)(x.astype(np.float32)))
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_the_package_never_imports_the_converters():
    """converters/ depend on cms_jax, never the reverse: `check_tree` lives in `cms_jax.models.weights`."""
    import re

    import cms_jax

    root = os.path.dirname(cms_jax.__file__)
    offenders = []
    for folder, _, names in os.walk(root):
        for n in names:
            if n.endswith(".py"):
                with open(os.path.join(folder, n)) as fh:
                    if re.search(r"^\s*(from|import)\s+converters\b", fh.read(), re.M):
                        offenders.append(os.path.relpath(os.path.join(folder, n), root))
    assert offenders == []
