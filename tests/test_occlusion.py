"""Tests of Eqs. 1-3 (cms_jax/occlusion.py, occlusion_drops) and parity with Algorithm 1."""
import math
import os
import subprocess
import sys
import textwrap

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cms_jax import occlusion as occ
from cms_jax.engine import occlusion_drops
from cms_jax.projection import canonical_map, paper_canonical_side


def tiny_cnn(seed=0, channels=3, classes=3, scale=3.0):
    """A random two-layer conv net (B, H, W, C) -> (B, K) logits, independent of cms_jax."""
    rng = np.random.default_rng(seed)
    w1 = jnp.asarray(rng.normal(0, 0.5, (3, 3, channels, 8)), jnp.float32)
    w2 = jnp.asarray(rng.normal(0, 0.5, (8, classes)), jnp.float32)

    @jax.jit
    def fn(x):
        y = jax.lax.conv_general_dilated(x, w1, (2, 2), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return scale * jnp.tanh(y).mean(axis=(1, 2)) @ w2
    return fn


def test_default_patch_size_scales_with_input():
    assert occ.default_patch_size(224) == 15
    assert occ.default_patch_size(64) == 4
    assert occ.default_patch_size(8) == 1
    with pytest.raises(ValueError, match="input_h must be positive"):
        occ.default_patch_size(0)


@pytest.mark.parametrize("size", [4, 15, 41.4508928])
def test_square_bounds_match_official_python(size):
    rng = np.random.default_rng(1)
    xy = np.concatenate([rng.uniform(-30, 130, (300, 2)), [[0, 0], [99.9, 79.9], [-500, 5], [500, 5]]])
    h, w = 80, 100
    got = occ.square_bounds(xy, size, (h, w))
    for (x, y), (x1, x2, y1, y2) in zip(xy, got):
        ex1 = max(0, math.floor(x - size / 2))
        ey1 = max(0, math.floor(y - size / 2))
        ex2, ey2 = min(math.floor(ex1 + size), w), min(math.floor(ey1 + size), h)
        # Same pixel sets as the official slices img[y1:y2, x1:x2] (empty when start >= stop).
        assert set(range(x1, x2)) == set(range(ex1, ex2))
        assert set(range(y1, y2)) == set(range(ey1, ey2))
    nan_box = occ.square_bounds(np.array([[np.nan, 3.0]]), size, (h, w))
    assert (nan_box[:, 1] <= nan_box[:, 0]).all()


def test_occlude_batch_matches_numpy_slicing():
    rng = np.random.default_rng(2)
    img = rng.normal(size=(4, 20, 24, 3)).astype(np.float32)
    xy = rng.uniform(-3, 26, (4, 2))
    boxes = occ.square_bounds(xy, 5, (20, 24))
    got = np.asarray(jax.jit(occ.occlude_batch)(img, boxes, -7.0))
    for i, (x1, x2, y1, y2) in enumerate(boxes):
        ref = img[i].copy()
        ref[y1:y2, x1:x2] = -7.0
        np.testing.assert_array_equal(got[i], ref)


def test_score_modes_and_target_selection():
    logits = jnp.array([[1.0, 3.0, 0.5], [2.0, -1.0, 0.0]])
    assert occ.score_mode("prob") == "softmax"
    assert occ.score_mode("logit") == "raw"
    assert occ.score_mode("prob", outputs_are_probs=True) == "raw"
    assert occ.score_mode("prob", output="regression") == "raw"
    with pytest.raises(ValueError, match="score must be one of"):
        occ.score_mode("probability")
    p = occ.confidences(logits, "softmax")
    np.testing.assert_allclose(p, jax.nn.softmax(logits), rtol=1e-6)
    np.testing.assert_allclose(occ.confidences(jnp.array([[0.3]]), "softmax"), [[jax.nn.sigmoid(0.3)]])
    phi, cls = occ.target_confidence(p, jnp.array([-1, 2]))
    assert cls.tolist() == [1, 2]
    np.testing.assert_allclose(phi, [p[0, 1], p[1, 2]])


def test_occlusion_drops_of_a_linear_model_are_the_occluded_evidence():
    # logits_k = sum(x * W_k): occluding with 0 removes exactly the square's evidence.
    rng = np.random.default_rng(3)
    wts = rng.normal(size=(2, 16, 16, 1)).astype(np.float32)
    img = rng.normal(size=(16, 16, 1)).astype(np.float32)
    fn = lambda x: jnp.einsum("bhwc,khwc->bk", x, wts, precision="highest")
    xy = rng.uniform(0, 16, (40, 2))
    drops, target = occlusion_drops(fn, img, xy, patch_size=3, score="logit", target=1)
    assert target == 1 and drops.shape == (40,) and drops.dtype == np.float32
    for (x1, x2, y1, y2), d in zip(occ.square_bounds(xy, 3, (16, 16)), drops):
        np.testing.assert_allclose(d, (img * wts[1])[y1:y2, x1:x2].sum(), atol=1e-4)  # float32 logits ~16
    with pytest.raises(ValueError, match="patch_size must be a positive integer"):
        occlusion_drops(fn, img, xy, patch_size=2.5)
    with pytest.raises(ValueError, match="image must be"):
        occlusion_drops(fn, img[None], xy)


def _algorithm1(model, img, mesh_i, frontal_hw, mesh_f, sz):
    """Algorithm 1 of the paper as a plain loop (numpy; only `model` is jax)."""
    h_i, w_i = img.shape[:2]
    h_f, w_f = frontal_hw
    clean = np.asarray(model(img[None]))[0]
    c = int(np.argmax(clean))
    occluded = []
    for x, y in mesh_i:  # lines 5-7
        x1 = max(0, math.floor(x - sz / 2)); x2 = min(x1 + sz, w_i)
        y1 = max(0, math.floor(y - sz / 2)); y2 = min(y1 + sz, h_i)
        im = img.copy()
        im[y1:y2, x1:x2] = 0
        occluded.append(im)
    scores = np.concatenate([np.asarray(model(np.stack(occluded[s:s + 256])))
                             for s in range(0, len(occluded), 256)])
    drops = clean[c] - scores[:, c].astype(np.float64)
    f = sz * h_f / h_i  # line 4
    p, n = np.zeros(frontal_hw), np.zeros(frontal_hw)
    for (x, y), s in zip(mesh_f, drops):  # lines 8-11
        x1 = max(0, math.floor(x - f / 2)); x2 = min(math.floor(x1 + f), w_f)
        y1 = max(0, math.floor(y - f / 2)); y2 = min(math.floor(y1 + f), h_f)
        p[y1:y2, x1:x2] += s
        n[y1:y2, x1:x2] += 1
    p[n == 0] = 0  # lines 12-14
    n[n == 0] = 1
    return p / n, drops, c


def test_parity_with_algorithm1_on_celeba_sample(shared_dir):
    from scipy.io import loadmat
    faces = os.path.join(shared_dir, "faces", "celeba_samples")
    h_in = w_in = 64
    bgr = cv2.imread(os.path.join(faces, "images", "000686.jpg"))
    img = cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (w_in, h_in)).astype(np.float32) / 127.5 - 1
    mesh_i = loadmat(os.path.join(faces, "prnet_meshes", "000686_mesh.mat"))["vertices"][:, :2]
    mesh_i = (mesh_i * [w_in / 178, h_in / 218]).astype(np.float32)
    frontal_hw = cv2.imread(os.path.join(faces, "frontal.jpg")).shape[:2]
    mesh_f = loadmat(os.path.join(faces, "frontal_mesh.mat"))["vertices"][::20, :2]
    assert mesh_i.shape == mesh_f.shape == (2194, 2)
    model = tiny_cnn(seed=4)
    sz = occ.default_patch_size(h_in)

    ref, ref_drops, ref_c = _algorithm1(model, img, mesh_i, frontal_hw, mesh_f, sz)
    drops, c = occlusion_drops(model, img, mesh_i, patch_size=sz, score="logit")
    cis = canonical_map(drops, mesh_f, frontal_hw, paper_canonical_side(sz, frontal_hw[0], h_in))

    assert c == ref_c
    span = ref.max() - ref.min()
    assert span > 1e-3, "degenerate test: the random model barely reacts to occlusion"
    # float32 rounding: the engine's batched convolutions accumulate in another order than the
    # reference's batch-1 ones (seen: 2.4e-7 = 1.7e-5 of the span in CI); a wrong square or
    # splat rule moves drops by a sizeable share of the span.
    np.testing.assert_allclose(drops, ref_drops, atol=1e-4 * np.ptp(ref_drops))
    assert np.abs(cis - ref).max() <= 1e-4 * span


def test_full_dense_mesh_peak_rss_under_4gb(shared_dir, tmp_path):
    # A fresh process, so the peak RSS is this job's alone.
    script = textwrap.dedent(f"""
        import os, resource, numpy as np, jax, jax.numpy as jnp
        from scipy.io import loadmat
        from cms_jax.engine import occlusion_drops
        xy = loadmat(os.path.join({shared_dir!r}, "faces/celeba_samples/frontal_mesh.mat"))["vertices"][:, :2]
        xy = xy * (224 / 619)
        w = jnp.asarray(np.random.default_rng(0).normal(size=(28 * 28, 2)), jnp.float32)
        def model(x):  # 8x8 mean pooling and a dense head: memory-bound, like the engine's masks
            pooled = x.reshape(x.shape[0], 28, 8, 28, 8).mean(axis=(2, 4))
            return jnp.tanh(pooled).reshape(x.shape[0], -1) @ w
        img = np.random.default_rng(1).normal(size=(224, 224, 1)).astype(np.float32)
        drops, _ = occlusion_drops(model, img, xy, batch_size=512)
        assert drops.shape == (43867,) and np.isfinite(drops).all() and np.abs(drops).max() > 0
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec from the (big) test runner.
        print("PEAK_KB", [l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:")][0])
    """)
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         timeout=300, cwd=os.path.join(os.path.dirname(__file__), ".."))
    assert out.returncode == 0, out.stderr[-3000:]
    peak_gb = int(out.stdout.split("PEAK_KB")[1].split()[0]) / 2**20
    print(f"peak RSS {peak_gb:.2f} GB")
    assert peak_gb < 4.0, f"peak RSS {peak_gb:.2f} GB"
