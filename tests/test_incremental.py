"""Exact incremental occlusion inference (cms_jax.incremental) against the dense path.

Tiny VGG-shaped nets with random weights; the 8 fake CPU devices of conftest
make every call run the sharded path.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cms_jax import incremental as inc
from cms_jax.incremental_plan import VGG16, VGGArch, init_params, make_plan, vgg_params

TINY = VGGArch(blocks=(1, 2, 2), input_hw=(32, 32))
ODD = VGGArch(blocks=(1, 1, 2, 1), input_hw=(36, 36))  # 36 -> 18 -> 9 -> 4: pools an odd map


def _net(arch, seed=0):
    params = init_params(arch, channels=(4, 8, 8, 8), fc=(16,), num_classes=3, seed=seed)
    image = np.random.default_rng(seed + 1).standard_normal((*arch.input_hw, 3)).astype(np.float32)
    return params, image


def _vertices(hw):
    h, w = hw
    return np.array([[w / 2, h / 2], [0, 0], [w - 1, h - 1], [w - 1, 0], [0, h - 1],  # centre, corners
                     [w / 2, 0.4], [w - 0.5, h / 2], [2.5, h - 2.3], [7.7, 5.2],  # borders, fractional
                     [w + 20, h + 20]], np.float32)  # wholly outside: occludes nothing


def _numpy_occluded_logits(params, arch, image, xy, sz):
    """Independent reference: occlude with numpy slicing (official rule), dense forward."""
    copies = []
    for x, y in xy:
        x1, y1 = max(0, int(np.floor(x - sz / 2))), max(0, int(np.floor(y - sz / 2)))
        c = image.copy()
        c[y1:y1 + sz, x1:x1 + sz] = 0.0
        copies.append(c)
    return np.asarray(jax.jit(lambda p, x: inc.vgg_logits(p, arch, x))(params, np.stack(copies)))


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_plan_vgg16_hand_computed():
    plan = make_plan(VGG16, 15, switch_fraction=1.0)
    # 15 -> conv +2 each; pool h//2+1; conv5 windows capped by the 14x14 map.
    assert [l.win_out[0] for l in plan] == [17, 19, 10, 12, 14, 8, 10, 12, 14, 8, 10, 12, 14, 8, 10, 12, 14, 7]
    assert [l.name for l in plan if not l.incremental] == ["conv5_3", "pool5"]
    assert [l.name for l in make_plan(VGG16, 15, 0.5) if l.incremental][-1] == "pool4"
    assert plan[0].in_hw == (224, 224) and plan[-1].out_hw == (7, 7)


def test_plan_odd_maps_and_large_patches():
    plan = make_plan(ODD, 4, switch_fraction=1.0)
    assert [l.out_hw[0] for l in plan] == [36, 18, 18, 9, 9, 9, 4, 4, 2]
    assert [l.win_out[0] for l in plan] == [6, 4, 6, 4, 6, 8, 4, 4, 2]
    assert make_plan(TINY, 100)[0].win_in == (32, 32)  # a patch larger than the image is capped
    with pytest.raises(ValueError, match="patch_size"):
        make_plan(TINY, 0)
    with pytest.raises(ValueError, match="too small"):
        make_plan(VGGArch((1,) * 6, (32, 32)), 5)


@pytest.mark.parametrize("arch,sz,frac", [(TINY, 3, 0.9), (TINY, 8, 0.9), (TINY, 15, 0.9),
                                          (TINY, 5, 1.0), (TINY, 5, 0.2), (ODD, 7, 1.0)])
def test_incremental_equals_dense(arch, sz, frac):
    params, image = _net(arch)
    xy = _vertices(arch.input_hw)
    clean, inc_logits = inc.occluded_logits(params, arch, image, xy, sz, switch_fraction=frac, chunk=4)
    clean_d, dense_logits = inc.occluded_logits(params, arch, image, xy, sz, method="dense", chunk=4)
    ref = _numpy_occluded_logits(params, arch, image, xy, sz)
    assert inc_logits.shape == (len(xy), 3) and inc_logits.dtype == np.float32
    assert _rel(dense_logits, ref) < 1e-5
    assert _rel(inc_logits, ref) < 1e-4
    assert _rel(clean, clean_d) < 1e-5
    np.testing.assert_allclose(inc_logits[-1], clean, rtol=1e-5, atol=1e-6)  # outside: no change
    assert np.abs(ref[:-1] - clean).max() > 1e-3  # the squares really change the logits


def test_drops_match_and_target():
    params, image = _net(TINY, seed=3)
    xy = _vertices(TINY.input_hw)
    d_inc, t = inc.incremental_drops(params, TINY, image, xy, 5)
    d_den, t2 = inc.dense_drops(params, TINY, image, xy, 5)
    logits = np.asarray(inc.vgg_logits(params, TINY, image[None]))[0]
    assert t == t2 == int(np.argmax(logits))
    np.testing.assert_allclose(d_inc, d_den, atol=1e-6)
    d_logit, _ = inc.incremental_drops(params, TINY, image, xy, 5, target=1, score="logit")
    ref = logits[1] - _numpy_occluded_logits(params, TINY, image, xy, 5)[:, 1]
    np.testing.assert_allclose(d_logit, ref, rtol=1e-4, atol=1e-5)


def test_bf16_runs_and_correlates():
    params, image = _net(TINY, seed=5)
    xy = np.random.default_rng(0).uniform(0, 32, (48, 2)).astype(np.float32)
    d16, _ = inc.incremental_drops(params, TINY, image, xy, 8, target=0, compute_dtype=jnp.bfloat16)
    d32, _ = inc.incremental_drops(params, TINY, image, xy, 8, target=0)
    assert d16.dtype == np.float32 and np.isfinite(d16).all() and not np.array_equal(d16, d32)
    corr = inc.bf16_fidelity(params, TINY, [image], [xy], 8)
    assert corr.shape == (1,) and corr[0] > 0.99
    assert abs(corr[0] - inc.pearson(d16, d32)) < 1e-3
    d16_dense, _ = inc.dense_drops(params, TINY, image, xy, 8, target=0, compute_dtype=jnp.bfloat16)
    assert inc.pearson(d16, d16_dense) > 0.99  # the incremental bf16 path adds no error of its own


def test_no_retrace_on_second_call():
    params, image = _net(TINY)
    xy = _vertices(TINY.input_hw)
    inc.occluded_logits(params, TINY, image, xy, 6, chunk=8)
    _, chunk_fn, _ = inc._compiled(TINY, 6, "incremental", "float32", 0.0, 0.9, jax.device_count())
    inc.occluded_logits(params, TINY, image + 1.0, xy[::-1], 6, chunk=8)
    assert chunk_fn._cache_size() == 1


def test_errors_name_the_input():
    params, image = _net(TINY)
    xy = _vertices(TINY.input_hw)
    with pytest.raises(ValueError, match="arch.input_hw"):
        inc.occluded_logits(params, TINY, image[:16], xy, 5)
    with pytest.raises(ValueError, match="patch_xy"):
        inc.occluded_logits(params, TINY, image, xy[:, :1], 5)
    with pytest.raises(ValueError, match="score"):
        inc.incremental_drops(params, TINY, image, xy, 5, score="margin")
    with pytest.raises(ValueError, match="target"):
        inc.incremental_drops(params, TINY, image, xy, 5, target=7)


def test_vgg_params_converter_lists_every_problem():
    params, _ = _net(TINY)
    nested = {k: dict(v) for k, v in params.items()}
    out = vgg_params(nested, TINY)
    assert set(out) == set(params)
    del nested["conv2_1"]
    nested["conv3_2"]["bias"] = np.zeros(5, np.float32)
    nested["fc6"]["kernel"] = np.zeros((99, 16), np.float32)
    with pytest.raises(ValueError) as err:
        vgg_params(nested, TINY)
    msg = str(err.value)
    assert "conv2_1: missing" in msg and "conv3_2: bias shape (5,)" in msg and "fc6: kernel has 99 inputs" in msg


def test_face_model_adapter_matches_the_flax_vgg():
    models = pytest.importorskip("cms_jax.models")
    model = models.tiny_vgg(num_classes=3, input_size=32, seed=2)
    params, arch = inc.from_face_model(model)
    image = np.random.default_rng(4).standard_normal((32, 32, 3)).astype(np.float32)
    xy = _vertices(arch.input_hw)[:6]
    clean, logits = inc.occluded_logits(params, arch, image, xy, 7)
    copies = np.stack([image] * len(xy))
    for c, (x1, y1, x2, y2) in zip(copies, inc.patch_boxes(xy, 7, (32, 32))):
        c[y1:y2, x1:x2] = 0.0
    ref = np.asarray(jax.jit(model.apply_fn)(model.params, copies))
    assert _rel(logits, ref) < 1e-4
    assert _rel(clean, np.asarray(model(image[None]))[0]) < 1e-5
