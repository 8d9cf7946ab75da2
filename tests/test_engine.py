"""Tests of the batched data-parallel engine (cms_jax/engine.py, cms_jax/sharding.py)."""
import json
import os
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cms_jax import occlusion as occ
from cms_jax import sharding as shd
from cms_jax.engine import OcclusionEngine, occlusion_drops

H = W = 24


def init_params(seed=0, channels=3, classes=4):
    rng = np.random.default_rng(seed)
    return {"conv": jnp.asarray(rng.normal(0, 0.5, (3, 3, channels, 6)), jnp.float32),
            "dense": jnp.asarray(rng.normal(0, 1.0, (6, classes)), jnp.float32)}


def apply_fn(params, x):
    y = jax.lax.conv_general_dilated(x, params["conv"], (2, 2), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return 4.0 * jnp.tanh(y).mean(axis=(1, 2)) @ params["dense"]


def face_model(params=None, **kw):
    """A FaceModel-like object (the fields the engine reads)."""
    fields = dict(apply_fn=apply_fn, params=params or init_params(), outputs_are_probs=False,
                  output="classes", jittable=True)
    fields.update(kw)
    return types.SimpleNamespace(**fields)


def _inputs(n=3, v=40, seed=1):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n, H, W, 3)).astype(np.float32)
    xy = rng.uniform(-2, W + 2, (n, v, 2)).astype(np.float32)
    return images, xy


def test_one_device_and_eight_devices_give_the_same_drops():
    assert len(jax.devices()) == 8, "conftest should expose 8 fake CPU devices"
    images, xy = _inputs()
    model = face_model()
    one = OcclusionEngine(model, batch_size=16, mesh=shd.data_mesh(jax.devices()[:1])).run(images, xy)
    eight = OcclusionEngine(model, batch_size=16).run(images, xy)
    assert np.abs(one.drops).max() > 1e-3
    np.testing.assert_allclose(eight.drops, one.drops, atol=1e-6)
    np.testing.assert_array_equal(eight.targets, one.targets)


def test_second_call_with_same_shapes_does_not_retrace():
    images, xy = _inputs()
    eng = OcclusionEngine(face_model(), batch_size=32)
    eng.run(images, xy)
    traces = eng.trace_count
    assert traces == 2  # one clean-pass shape, one work-batch shape
    images2, xy2 = _inputs(seed=7)
    eng.run(images2, xy2, patch_size=5, fill=-1.0, targets=np.array([0, 3, 1]),
            valid=np.arange(40) % 2 == 0)
    assert eng.trace_count == traces


def test_items_of_several_images_share_a_batch_and_match_single_image_runs():
    images, xy = _inputs(n=3, v=20)
    eng = OcclusionEngine(face_model(), batch_size=64, images_per_block=8)
    calls = []
    step = eng.strategy._step
    eng.strategy._step = lambda *a: calls.append(len(a[2])) or step(*a)
    res = eng.run(images, xy)
    assert calls == [8, 64], "60 work items of 3 images should fill one device batch"
    single = face_model()  # occlusion_drops caches one engine per model object
    for i in range(3):
        drops, target = occlusion_drops(single, images[i], xy[i])
        assert target == res.targets[i]
        np.testing.assert_allclose(res.drops[i], drops, atol=1e-6)


def test_targets_clean_confidence_and_probability_models():
    images, xy = _inputs()
    params = init_params()
    targets = np.array([2, 0, 3])
    res = OcclusionEngine(face_model(params)).run(images, xy, targets=targets)
    probs = np.asarray(jax.nn.softmax(apply_fn(params, images)))
    np.testing.assert_array_equal(res.targets, targets)
    np.testing.assert_allclose(res.clean, probs[np.arange(3), targets], rtol=1e-5)
    # A model that already ends in softmax is not normalised twice.
    soft = face_model(params, apply_fn=lambda p, x: jax.nn.softmax(apply_fn(p, x)), outputs_are_probs=True)
    res_soft = OcclusionEngine(soft).run(images, xy, targets=targets)
    np.testing.assert_allclose(res_soft.drops, res.drops, atol=1e-6)
    with pytest.raises(ValueError, match=r"targets must be class indices in \[0, 4\)"):
        OcclusionEngine(face_model(params)).run(images, xy, targets=np.array([0, 4, 1]))


def test_invalid_vertices_are_skipped_and_drop_zero():
    images, xy = _inputs()
    eng = OcclusionEngine(face_model(), batch_size=16)
    full = eng.run(images, xy)
    valid = np.random.default_rng(3).random((3, 40)) > 0.5
    xy_nan = xy.copy()
    xy_nan[~valid] = np.nan  # invisible vertices may have no position at all
    part = eng.run(images, xy_nan, valid=valid)
    assert (part.drops[~valid] == 0).all()
    np.testing.assert_allclose(part.drops[valid], full.drops[valid], atol=1e-6)
    with pytest.raises(ValueError, match="non-finite valid vertices"):
        eng.run(images, xy_nan)
    with pytest.raises(ValueError, match=r"images must be \(N, H, W, C\)"):
        eng.run(images[0], xy)


def test_params_are_jit_arguments_not_constants():
    images, xy = _inputs(n=1)
    eng = OcclusionEngine(face_model(), batch_size=8)
    fw = eng.strategy
    args = (fw._params, images, np.zeros(8, np.int32), np.zeros((8, 4), np.int32),
            np.full(8, -1, np.int32), np.float32(0))
    jaxpr = jax.make_jaxpr(fw._step_impl)(*args)
    n_param = sum(x.size for x in jax.tree.leaves(fw._params))
    assert sum(np.size(c) for c in jaxpr.consts) < n_param
    assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(fw._params))


def test_sharded_step_needs_no_cross_device_communication():
    # Work items are independent: each device gathers, occludes and scores its own share.
    images, _ = _inputs()
    eng = OcclusionEngine(face_model(), batch_size=64)
    slab = jax.device_put(images, shd.replicated(eng.mesh))
    hlo = eng.strategy._step.lower(eng.strategy._params, slab, np.zeros(64, np.int32), np.zeros((64, 4), np.int32),
                          np.zeros(64, np.int32), np.float32(0)).compile().as_text()
    for op in ("all-gather", "all-reduce", "all-to-all", "collective-permute"):
        assert op not in hlo


def test_black_box_model_scored_on_host_matches_jitted():
    images, xy = _inputs(n=2)
    params = init_params()
    host = face_model(params, apply_fn=lambda p, x: np.asarray(apply_fn(p, jnp.asarray(x))), jittable=False)
    got = OcclusionEngine(host, batch_size=16).run(images, xy)
    ref = OcclusionEngine(face_model(params), batch_size=16).run(images, xy)
    np.testing.assert_allclose(got.drops, ref.drops, atol=1e-6)


@pytest.mark.parametrize("ndev", [1, 8])
def test_dense_and_incremental_forwards_give_the_same_drops(ndev):
    images, xy = _inputs()
    model, mesh = face_model(), shd.data_mesh(jax.devices()[:ndev])
    dense = OcclusionEngine(model, score="logit", batch_size=32, mesh=mesh).run(images, xy, patch_size=5)
    inc = OcclusionEngine(model, score="logit", batch_size=32, mesh=mesh, forward="incremental")
    got = inc.run(images, xy, patch_size=5)
    scale = np.abs(apply_fn(model.params, images)).max()
    assert np.abs(dense.drops).max() > 1e-3 * scale
    np.testing.assert_allclose(got.drops, dense.drops, rtol=0, atol=1e-4 * scale)
    np.testing.assert_allclose(got.clean, dense.clean, rtol=0, atol=1e-4 * scale)
    np.testing.assert_array_equal(got.targets, dense.targets)


def test_incremental_engine_does_not_retrace_and_bounds_its_block():
    images, xy = _inputs()
    eng = OcclusionEngine(face_model(), batch_size=32, forward="incremental")
    eng.run(images, xy, patch_size=5)
    assert eng.trace_count == 2  # one clean pass, one work-batch shape
    images2, xy2 = _inputs(seed=7)
    eng.run(images2, xy2, patch_size=5, fill=-1.0, targets=np.array([0, 3, 1]), valid=np.arange(40) % 2 == 0)
    assert eng.trace_count == 2
    assert eng.strategy.block_size(16, (H, W, 3), 5) == 16
    per_image = eng.strategy.plan((H, W, 3), 5)[3]
    assert 0 < per_image < 1 << 20  # a few small maps: the 1 GiB budget does not bind here


def test_bfloat16_forwards_follow_float32():
    images, xy = _inputs()
    ref = OcclusionEngine(face_model(), score="logit", batch_size=32).run(images, xy).drops.ravel()
    for forward in ("dense", "incremental"):
        eng = OcclusionEngine(face_model(), score="logit", batch_size=32, forward=forward, dtype="bfloat16")
        got = eng.run(images, xy).drops.ravel()
        assert got.dtype == np.float32 and np.corrcoef(got, ref)[0, 1] > 0.95, forward


def test_incremental_refuses_black_boxes_naming_the_model():
    host = face_model(apply_fn=lambda p, x: np.asarray(apply_fn(p, jnp.asarray(x))), jittable=False, name="hostnet")
    with pytest.raises(ValueError, match=r"'hostnet'.*Drop --incremental"):
        OcclusionEngine(host, forward="incremental")
    from cms_jax.models.blackbox import host_apply_fn
    params = init_params()
    callback = face_model(apply_fn=host_apply_fn(lambda x: np.asarray(apply_fn(params, jnp.asarray(x))), 4),
                          params={}, name="onnxish", input_size=(H, W), channels=3)
    with pytest.raises(ValueError, match=r"'onnxish'.*black box.*Drop --incremental"):
        OcclusionEngine(callback, forward="incremental")
    with pytest.raises(ValueError, match="forward must be one of"):
        OcclusionEngine(face_model(), forward="sparse")
    with pytest.raises(ValueError, match="dtype must be one of"):
        OcclusionEngine(face_model(), dtype="float16")


def test_errors_and_sharding_helpers():
    with pytest.raises(TypeError, match="FaceModel-like"):
        OcclusionEngine(42)
    with pytest.raises(ValueError, match="score must be one of"):
        OcclusionEngine(face_model(), score="softmax")
    assert shd.round_up(5, 8) == 8 and shd.round_up(17, 8) == 24
    assert shd.pad_to(np.ones((3, 2)), 5, -1)[3:].tolist() == [[-1, -1], [-1, -1]]
    mesh = shd.data_mesh()
    assert mesh.axis_names == ("data",) and shd.num_shards(mesh) == 8
    eng = OcclusionEngine(face_model(), batch_size=20)
    assert eng.batch_size == 24 and eng.block == 16


def test_bench_engine_meets_its_target_in_flops(tmp_path):
    """The >= 0.9 target on what does not depend on the machine's load: XLA's FLOP counts.

    Timed rates are the benchmark's business (a shared CPU makes them noisy); here the engine's
    compiled work batch does at most 1/0.9 of a bare forward's arithmetic per item, and with its
    clean pass counted too (one device, as a user's machine), and it never retraces once warm.
    """
    root = os.path.join(os.path.dirname(__file__), "..")
    env = dict(os.environ, PYTHONPATH=os.path.abspath(root))
    env.pop("XLA_FLAGS", None)
    out = subprocess.run([sys.executable, "experiments/bench_engine.py", "--smoke", f"--out_dir={tmp_path}"],
                         capture_output=True, text=True, env=env, timeout=300, cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "bench_engine.json").read_text())
    assert report["devices"] == 1
    for name, items in (("vgg16", 16), ("tiny", 128)):
        r = report["models"][name]
        assert r["work_items"] == items and r["retraces_after_warmup"] == 0
        assert r["bare_flops_per_forward"] > 1e5  # the cost analysis counted the model, not just the mask
        assert r["flop_ratio"] >= 0.9 and r["flop_ratio_with_clean_pass"] >= 0.9, r
        assert r["engine_flops_per_item"] >= r["bare_flops_per_forward"]  # the mask is extra work, never less


@pytest.mark.parametrize("forward", ["dense", "incremental"])
def test_embedding_model_scores_cosine_to_its_clean_embedding(forward):
    """Eq. 1 with phi = cos(f(I_v), f(I)): checked against a direct loop over occluded copies."""
    images, xy = _inputs(n=2, v=12)
    params = init_params(classes=16)
    model = face_model(params, output="embedding")
    res = OcclusionEngine(model, batch_size=16, forward=forward).run(images, xy, patch_size=5)
    np.testing.assert_allclose(res.clean, 1.0, atol=1e-6)  # an image is its own reference
    for i in range(2):
        ref = np.asarray(apply_fn(params, images[i:i + 1]))[0]
        for v, (x0, x1, y0, y1) in enumerate(occ.square_bounds(xy[i], 5, (H, W))):
            img = images[i].copy()
            img[y0:y1, x0:x1] = 0.0
            e = np.asarray(apply_fn(params, img[None]))[0]
            cos = e @ ref / np.linalg.norm(e) / np.linalg.norm(ref)
            np.testing.assert_allclose(res.drops[i, v], 1.0 - cos, atol=2e-5)
    assert res.drops.max() > 1e-3
    # A given reference (another identity's mean embedding) replaces the image's own.
    other = np.asarray(apply_fn(params, images[::-1]))
    res2 = OcclusionEngine(model, batch_size=16, forward=forward).run(images, xy, targets=other, patch_size=5)
    own = np.asarray(apply_fn(params, images))
    cos = (own * other).sum(1) / np.linalg.norm(own, axis=1) / np.linalg.norm(other, axis=1)
    np.testing.assert_allclose(res2.clean, cos, atol=1e-5)


def test_regression_model_needs_an_explicit_target():
    images, xy = _inputs(n=1, v=4)
    eng = OcclusionEngine(face_model(output="regression"), batch_size=16)
    with pytest.raises(ValueError, match="regression model has no predicted class"):
        eng.run(images, xy)
    assert eng.run(images, xy, targets=np.asarray([2])).targets.tolist() == [2]
