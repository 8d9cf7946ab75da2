"""Exact incremental inference (cms_jax.incremental) against the dense forward of the same model.

The reference is independent of the transformation: ``apply_fn`` run on the
occluded copies made by ``occlusion.occlude_batch``.  Squares sit in the
centre, on every edge and in every corner (and half outside the image).
"""
import os

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cms_jax import convs, models
from cms_jax import occlusion as occ
from cms_jax.incremental import Incremental
from cms_jax.incremental.program import trace


def _positions(h, w):
    """Square centres: centre, the four edges, the four corners, just outside, and random."""
    rng = np.random.default_rng(0)
    fixed = [(w / 2, h / 2), (0, h / 2), (w - 1, h / 2), (w / 2, 0), (w / 2, h - 1), (0, 0), (w - 1, 0),
             (0, h - 1), (w - 1, h - 1), (-1.5, 3), (w + 0.5, h + 0.5), (1.2, h - 2.7)]
    return np.concatenate([np.array(fixed), rng.uniform(-2, [w + 2, h + 2], (20, 2))])


def _check(apply_fn, params, shape, patch, *, images=2, tol=1e-4, switch_fraction=0.7, faces=None):
    h, w, c = shape
    rng = np.random.default_rng(1)
    imgs = jnp.asarray(rng.normal(size=(images, h, w, c)).astype(np.float32) if faces is None else faces)
    images = len(imgs)
    xy = _positions(h, w)
    boxes = jnp.asarray(np.concatenate([occ.square_bounds(xy, patch, (h, w))] * images))
    idx = jnp.asarray(np.repeat(np.arange(images), len(xy)).astype(np.int32))
    inc = Incremental(apply_fn, params, shape, patch, switch_fraction=switch_fraction)
    clean, stack = jax.jit(inc.clean)(params, imgs)
    got = np.asarray(jax.jit(inc.items)(params, stack, idx, boxes, jnp.float32(-0.5)))
    want = np.asarray(apply_fn(params, occ.occlude_batch(imgs[idx], boxes, -0.5)))
    scale = np.abs(want).max()
    assert scale > 0
    np.testing.assert_allclose(np.asarray(clean), np.asarray(apply_fn(params, imgs)), atol=tol * scale)
    np.testing.assert_allclose(got, want, atol=tol * scale)
    clean_rep = np.asarray(apply_fn(params, imgs))[np.asarray(idx)]
    assert np.abs(want - clean_rep).max() > 10 * tol * scale, "occlusion should change the outputs"
    return inc


def _faces(shared_dir, model):
    """Two CelebA sample faces, resized to the model's input and preprocessed."""
    folder = os.path.join(shared_dir, "faces", "celeba_samples", "images")
    rgb = [cv2.cvtColor(cv2.imread(os.path.join(folder, f)), cv2.COLOR_BGR2RGB) for f in sorted(os.listdir(folder))[:2]]
    h, w = model.input_size
    return model.preprocess(np.stack([cv2.resize(x[20:-20, :], (w, h), interpolation=cv2.INTER_AREA) for x in rgb]))


@pytest.mark.parametrize("name", ["gender", "expression", "age", "tiny"])
def test_equals_dense_for_every_builtin_device_model(name, shared_dir):
    m = models.load(name)
    h, w = m.input_size
    inc = _check(m.apply_fn, m.params, (h, w, m.channels), 2 * occ.default_patch_size(h), faces=_faces(shared_dir, m))
    kinds = [how for _, how in inc.plan]
    assert any(k.startswith("win") for k in kinds), "some layers must be computed on windows"
    assert kinds[-1] == "dense", "the head mixes the whole map"


def _conv(x, k, stride=1, pad="SAME", groups=1, dil=1, dn=("NHWC", "HWIO", "NHWC")):
    return jax.lax.conv_general_dilated(x, k, (stride, stride), pad, rhs_dilation=(dil, dil),
                                        dimension_numbers=dn, feature_group_count=groups)


def _bn(x, p):
    return (x - p["mean"]) * jax.lax.rsqrt(p["var"] + 1e-3) * p["scale"] + p["bias"]


def _bn_params(rng, c):
    return {"mean": rng.normal(0, 0.1, c).astype(np.float32), "var": rng.uniform(0.5, 2, c).astype(np.float32),
            "scale": rng.normal(1, 0.1, c).astype(np.float32), "bias": rng.normal(0, 0.1, c).astype(np.float32)}


def _k(rng, *shape):
    return (rng.normal(size=shape) * np.sqrt(2.0 / np.prod(shape[:-1]))).astype(np.float32)


def resnet_params(seed=0):
    rng = np.random.default_rng(seed)
    return {"stem": _k(rng, 7, 7, 3, 8), "bn0": _bn_params(rng, 8),
            "a1": _k(rng, 3, 3, 8, 8), "bn1": _bn_params(rng, 8), "a2": _k(rng, 3, 3, 8, 8),
            "b1": _k(rng, 3, 3, 8, 16), "bn2": _bn_params(rng, 16), "b2": _k(rng, 3, 3, 16, 16),
            "proj": _k(rng, 1, 1, 8, 16), "fc": _k(rng, 16, 5)}


def resnet(p, x):
    """A ResNet-18-style net: 7x7/2 stem, 3x3/2 max pool, identity and projection blocks, GAP, dense."""
    x = jax.nn.relu(_bn(_conv(x, p["stem"], 2, ((3, 3), (3, 3))), p["bn0"]))
    x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0)))
    y = _conv(jax.nn.relu(_bn(_conv(x, p["a1"]), p["bn1"])), p["a2"])
    x = jax.nn.relu(x + y)
    y = _conv(jax.nn.relu(_bn(_conv(x, p["b1"], 2), p["bn2"])), p["b2"])
    x = jax.nn.relu(_conv(x, p["proj"], 2) + y)
    return x.mean(axis=(1, 2)) @ p["fc"]


def test_equals_dense_for_a_random_resnet():
    _check(resnet, resnet_params(), (48, 40, 3), 5)


def depthwise_params(seed=0):
    rng = np.random.default_rng(seed)
    return {"dw1": _k(rng, 3, 3, 1, 6), "pw1": _k(rng, 4, 6, 1, 1), "dw2": _k(rng, 5, 5, 1, 4),
            "sep": _k(rng, 3, 3, 1, 8), "pw2": _k(rng, 8, 12), "fc": _k(rng, 12, 3)}


def depthwise(p, x):
    """Depthwise convs of every kind, NCHW layout, explicit pads, slices, average pooling and a matmul 1x1."""
    x = x.transpose(0, 3, 1, 2)  # NCHW, as ONNX-converted models are
    nchw = ("NCHW", "OIHW", "NCHW")
    x = _conv(x, p["dw1"].transpose(3, 2, 0, 1), 2, "SAME", groups=3, dn=nchw)  # multiplier 2, stride 2
    x = jax.nn.relu6(_conv(x, p["pw1"], 1, "VALID", dn=nchw))
    x = jnp.pad(x, ((0, 0), (0, 0), (4, 4), (4, 4)))
    x = _conv(x, p["dw2"].transpose(3, 2, 0, 1), 1, "VALID", groups=4, dil=2, dn=nchw)  # dilated
    x = x[:, :, 1:-1, :]
    x = x.transpose(0, 2, 3, 1)  # back to NHWC
    x = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 1, 1, 1), "SAME") / 4.0
    x = convs.depthwise_conv(jnp.repeat(x, 2, axis=-1), p["sep"], padding="SAME")  # the models' separable conv
    x = jnp.tanh(jnp.einsum("bhwc,cd->bhwd", x, p["pw2"]))
    return jnp.max(x, axis=(1, 2)) @ p["fc"]


def test_equals_dense_for_a_random_depthwise_model():
    _check(depthwise, depthwise_params(), (33, 29, 3), 4)


@pytest.mark.parametrize("patch", [1, 7])
def test_small_and_large_squares_and_every_switch_point(patch):
    _check(resnet, resnet_params(seed=3), (32, 32, 3), patch, switch_fraction=1.0)
    _check(resnet, resnet_params(seed=3), (32, 32, 3), patch, switch_fraction=0.05)


def test_windowed_pass_does_fewer_flops_than_the_dense_pass():
    m = models.load("gender")
    inc = Incremental(m.apply_fn, m.params, (64, 64, 1), 4)
    b, g = 256, 4
    imgs = jax.ShapeDtypeStruct((g, 64, 64, 1), jnp.float32)
    _, stack = jax.eval_shape(inc.clean, m.params, imgs)
    i32 = jax.ShapeDtypeStruct((b,), jnp.int32)
    boxes = jax.ShapeDtypeStruct((b, 4), jnp.int32)
    win = jax.jit(inc.items).lower(m.params, stack, i32, boxes, jnp.float32(0)).compile().cost_analysis()
    dense = jax.jit(lambda p, x, i, bx: m.apply_fn(p, occ.occlude_batch(x[i], bx, 0.0))).lower(
        m.params, imgs, i32, boxes).compile().cost_analysis()
    win, dense = (c[0] if isinstance(c, list) else c for c in (win, dense))
    assert win["flops"] < 0.6 * dense["flops"], (win["flops"], dense["flops"])


def test_depthwise_convs_are_traced_as_one_primitive():
    m = models.load("gender")
    eqns = trace(m.apply_fn, m.params, (64, 64, 1)).eqns
    prims = [e.prim.name for e in eqns]
    grouped = [e for e in eqns if e.prim.name == "conv_general_dilated" and e.params["feature_group_count"] > 1]
    assert len(grouped) == 8 and "slice" not in prims


def test_a_host_black_box_is_refused_with_the_reason():
    def host(x):
        return np.asarray(x).mean(axis=(1, 2))

    def apply_fn(params, x):
        return jax.pure_callback(host, jax.ShapeDtypeStruct((x.shape[0], 3), jnp.float32), x,
                                 vmap_method="broadcast_all")

    with pytest.raises(ValueError, match="runs on the device.*black box"):
        Incremental(apply_fn, {}, (16, 16, 3), 3)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="patch_size"):
        Incremental(resnet, resnet_params(), (32, 32, 3), 0)
    with pytest.raises(ValueError, match="switch_fraction"):
        Incremental(resnet, resnet_params(), (32, 32, 3), 3, switch_fraction=1.5)


def test_approx_tau_keeps_the_central_window_and_drops_changes_beyond_it():
    """Krypton's threshold on one conv: the occluded outputs inside the capped window, clean outside."""
    from cms_jax import occlusion as occ
    rng = np.random.default_rng(0)
    kernel = jnp.asarray(rng.normal(size=(3, 3, 2, 3)), jnp.float32)

    def apply(p, x):
        y = jax.lax.conv_general_dilated(x, p, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y.reshape(y.shape[0], -1)

    x = rng.normal(size=(2, 24, 24, 2)).astype(np.float32)
    idx = np.array([0, 1, 1], np.int32)
    boxes = np.array([[5, 9, 7, 11], [0, 4, 0, 4], [20, 24, 18, 22]], np.int32)
    dense = np.asarray(apply(kernel, occ.occlude_batch(jnp.asarray(x)[idx], boxes, 0.0))).reshape(3, 24, 24, 3)
    exact = Incremental(apply, kernel, (24, 24, 2), 4)
    _, stack = exact.clean(kernel, x)
    np.testing.assert_allclose(np.asarray(exact.items(kernel, stack, idx, boxes, 0.0)).reshape(dense.shape),
                               dense, atol=1e-5)
    approx = Incremental(apply, kernel, (24, 24, 2), 4, approx_tau=0.2)  # window 6 -> ceil(0.2 * 24) = 5
    out, stack = approx.clean(kernel, x)
    got = np.asarray(approx.items(kernel, stack, idx, boxes, 0.0)).reshape(dense.shape)
    want = np.asarray(out).reshape(2, 24, 24, 3)[idx].copy()
    for b, (x1, _, y1, _) in enumerate(boxes):  # the window starts at y1 - 1 (3x3, pad 1); 6 -> 5 keeps [0, 5)
        sl = (b, slice(max(y1 - 1, 0), y1 + 4), slice(max(x1 - 1, 0), x1 + 4))
        want[sl] = dense[sl]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(got - dense).max() > 0.1  # the dropped row and column really changed
    with pytest.raises(ValueError, match="approx_tau must be in"):
        Incremental(apply, kernel, (24, 24, 2), 4, approx_tau=0.0)


def test_host_offsets_equal_the_offsets_computed_in_the_program():
    """`Incremental.offsets` (numpy, on the host) gives the windowed pass the same per-copy offsets."""
    from cms_jax.incremental.offsets import host_offsets
    params, shape = depthwise_params(), (33, 29, 3)
    inc = Incremental(depthwise, params, shape, 4)
    assert len(inc.offset_tables) > 3  # strides, pads and slices each shift the windows
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2,) + shape).astype(np.float32)
    boxes = occ.square_bounds(rng.uniform(-3, 33, (16, 2)), 4, shape[:2])
    idx = rng.integers(0, 2, 16).astype(np.int32)
    _, stack = inc.clean(params, x)
    offs = inc.offsets(boxes)
    assert offs.shape == (16, len(inc.offset_tables)) and offs.dtype == np.int32
    for t, (src, table) in enumerate(inc.offset_tables):
        np.testing.assert_array_equal(offs[:, t], table[boxes[:, 2 if src == 0 else 0]])
    assert host_offsets([], boxes).shape == (16, 1)
    inside = np.asarray(jax.jit(inc.items)(params, stack, idx, boxes, 0.0))
    given = np.asarray(jax.jit(inc.items)(params, stack, idx, boxes, 0.0, offs))
    np.testing.assert_allclose(given, inside, rtol=0, atol=1e-6)
    dense = np.asarray(depthwise(params, occ.occlude_batch(jnp.asarray(x)[idx], boxes, 0.0)))
    np.testing.assert_allclose(given, dense, atol=1e-4)
