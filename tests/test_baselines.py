"""Baselines (cms_jax.baselines) against independent torch references and hand-made cases.

GradCAM, GradCAM++ and ScoreCAM are recomputed in torch on CPU with the formulas as
pytorch-grad-cam writes them, on a tiny conv net with the same weights.
"""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cms_jax import baselines as bl
from cms_jax.models import tiny_vgg

_DN = ("NHWC", "HWIO", "NHWC")
H = W = 12


def _params(seed=0):
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    return {"w1": 0.4 * jax.random.normal(k[0], (3, 3, 3, 4)),
            "w2": 0.4 * jax.random.normal(k[1], (3, 3, 4, 5)),
            "wd": 0.2 * jax.random.normal(k[2], (6 * 6 * 5, 3))}


def features(p, x, act=jax.nn.relu):
    y = act(jax.lax.conv_general_dilated(x, p["w1"], (1, 1), "SAME", dimension_numbers=_DN))
    y = jax.lax.reduce_window(y, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    return act(jax.lax.conv_general_dilated(y, p["w2"], (1, 1), "SAME", dimension_numbers=_DN))


def head(p, a):
    # A flattening dense head makes the gradients vary in space (a GAP head would not).
    return a.reshape(a.shape[0], -1) @ p["wd"]


def apply(p, x):
    return head(p, features(p, x))


def _images(seed=1, b=2):
    return jax.random.normal(jax.random.PRNGKey(seed), (b, H, W, 3))


class TorchNet(torch.nn.Module):
    """The same net written independently in torch (NCHW)."""

    def __init__(self, p):
        super().__init__()
        t = lambda a: torch.tensor(np.asarray(a))
        self.w1 = t(p["w1"]).permute(3, 2, 0, 1)
        self.w2 = t(p["w2"]).permute(3, 2, 0, 1)
        self.wd = t(p["wd"])

    def features(self, x):
        y = F.max_pool2d(F.relu(F.conv2d(x, self.w1, padding=1)), 2)
        return F.relu(F.conv2d(y, self.w2, padding=1))

    def head(self, a):  # flatten in NHWC order, like the jax head
        return a.permute(0, 2, 3, 1).reshape(a.shape[0], -1) @ self.wd

    def forward(self, x):
        return self.head(self.features(x))


def _torch_acts_grads(net, x_nhwc):
    x = torch.tensor(np.asarray(x_nhwc)).permute(0, 3, 1, 2)
    a = net.features(x).detach().requires_grad_(True)
    out = net.head(a)
    t = out.argmax(-1)
    out[torch.arange(len(t)), t].sum().backward()
    return x, a.detach().numpy(), a.grad.numpy(), t


def _cam(acts, weights):  # acts (B, C, h, w), weights (B, C)
    return np.maximum((weights[:, :, None, None] * acts).sum(1), 0)


def _up(cam, hw):  # cv2.resize-style (half-pixel) bilinear, via torch
    return F.interpolate(torch.tensor(cam)[:, None], size=hw, mode="bilinear",
                         align_corners=False)[:, 0].numpy()


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a), b, atol=1e-4, rtol=1e-4)


def test_gradcam_matches_torch():
    p, x = _params(), _images()
    _, acts, grads, _ = _torch_acts_grads(TorchNet(p), x)
    ref = _cam(acts, grads.mean(axis=(2, 3)))
    _close(bl.gradcam(features, head, p, x, upsample=False), ref)
    _close(bl.gradcam(features, head, p, x), _up(ref, (H, W)))


@pytest.mark.parametrize("eps", [1e-6, 0.0])
def test_gradcam_plusplus_matches_pytorch_grad_cam_formula(eps):
    p, x = _params(), _images()
    _, acts, g, _ = _torch_acts_grads(TorchNet(p), x)
    g = g.astype(np.float64)
    sum_a = acts.sum(axis=(2, 3))[:, :, None, None]
    denom = 2 * g ** 2 + sum_a * g ** 3 + eps
    denom = np.where(denom != 0, denom, 1.0)  # the original authors' guard
    alpha = np.where(g != 0, g ** 2 / denom, 0.0)
    weights = (np.maximum(g, 0) * alpha).sum(axis=(2, 3))
    ref = _cam(acts, weights)
    assert ref.max() > 1e-3, "reference map is empty: the test would prove nothing"
    got = bl.gradcam_plusplus(features, head, p, x, upsample=False, eps=eps)
    _close(got, ref)
    _close(bl.gradcam_plusplus(features, head, p, x, eps=eps), _up(ref, (H, W)))


def test_scorecam_matches_pytorch_grad_cam_formula():
    p, x = _params(), _images()
    net = TorchNet(p)
    xt, acts, _, t = _torch_acts_grads(net, x)
    with torch.no_grad():
        up = torch.nn.UpsamplingBilinear2d(size=(H, W))(torch.tensor(acts))
        mins = up.amin(dim=(2, 3), keepdim=True)
        maxs = up.amax(dim=(2, 3), keepdim=True)
        up = (up - mins) / (maxs - mins + 1e-8)
        scores = torch.stack([net(xt[b][None] * up[b][:, None])[:, t[b]] for b in range(len(t))])
        weights = torch.softmax(scores, dim=-1).numpy()
    ref = _cam(acts, weights)
    _close(bl.scorecam(features, head, p, x, upsample=False, batch_size=3), ref)
    _close(bl.scorecam(features, head, p, x), _up(ref, (H, W)))


def test_explicit_targets_change_the_map():
    p, x = _params(), _images()
    a = bl.gradcam_plusplus(features, head, p, x, jnp.array([0, 0]))
    b = bl.gradcam_plusplus(features, head, p, x, jnp.array([1, 1]))
    assert a.shape == (2, H, W) and not np.allclose(a, b)


def test_guided_backprop_equals_explicit_guided_relu_model():
    p, x = _params(), _images()
    explicit = lambda q, xx: head(q, features(q, xx, act=bl.guided_relu))
    t = jnp.argmax(apply(p, x), -1)
    want = jax.grad(lambda xx: jnp.sum(explicit(p, xx)[jnp.arange(2), t]))(x)
    got = bl.guided_backprop(apply, p, x)
    _close(got, np.max(np.abs(np.asarray(want)), axis=-1))
    assert not np.allclose(got, bl.vanilla_gradients(apply, p, x))
    # The rewrite leaves the forward pass untouched.
    _close(bl.with_guided_relus(apply)(p, x), np.asarray(apply(p, x)))


def test_smoothgrad_without_noise_is_vanilla_gradient():
    p, x = _params(), _images()
    _close(bl.smoothgrad(apply, p, x, noise_level=0.0, num_samples=2),
           np.asarray(bl.vanilla_gradients(apply, p, x)))
    noisy = bl.smoothgrad(apply, p, x, noise_level=0.3, num_samples=4)
    assert noisy.shape == (2, H, W) and not np.allclose(noisy, bl.vanilla_gradients(apply, p, x))


def test_guided_gradcam_plusplus_is_product():
    p, x = _params(), _images()
    want = np.asarray(bl.guided_backprop(apply, p, x)) * np.asarray(
        bl.gradcam_plusplus(features, head, p, x))
    _close(bl.guided_gradcam_plusplus(features, head, p, x), want)


def test_grid_occlusion_matches_brute_force():
    region = np.zeros((H, W), np.float32)
    region[3:7, 5:10] = 1.0

    def linear(_, xx):  # class 0 score = sum of channel 0 inside the region
        s = jnp.sum(xx[..., 0] * region, axis=(1, 2))
        return jnp.stack([s, jnp.zeros_like(s)], axis=-1)

    x = jnp.abs(_images(b=1)) + 0.1
    got = bl.grid_occlusion(linear, {}, x, jnp.array([0]), patch=4, stride=3, mode="raw")
    xi = np.asarray(x[0, ..., 0])
    total, count = np.zeros((H, W)), np.zeros((H, W))
    for i in [0, 3, 6, 8]:  # offsets 0, 3, 6 and the edge-touching 8
        for j in [0, 3, 6, 8]:
            m = np.zeros((H, W))
            m[i:i + 4, j:j + 4] = 1
            total += m * (xi * region * m).sum()
            count += m
    _close(got[0], total / count)
    assert float(got[0, 0, 0]) == 0.0  # no placement covering (0, 0) touches the region


def test_explain_dispatch_and_errors():
    p, x = _params(), _images()
    model = types.SimpleNamespace(name="tiny", apply_fn=apply, params=p, features_fn=features,
                                  head_fn=head, outputs_are_probs=False)
    _close(bl.explain(model, x, "gradcam++"), np.asarray(bl.gradcam_plusplus(features, head, p, x)))
    assert bl.explain(model, x, "grid_occlusion", patch=4, stride=4).shape == (2, H, W)
    black_box = types.SimpleNamespace(name="bb", apply_fn=apply, params={}, features_fn=None,
                                      head_fn=None)
    with pytest.raises(ValueError, match="no features_fn/head_fn"):
        bl.explain(black_box, x, "gradcam")
    with pytest.raises(ValueError, match="unknown saliency method"):
        bl.explain(model, x, "lime")
    with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
        bl.gradcam(features, head, p, x[0])


def test_no_retrace_on_second_call():
    traces = []

    def counted(p, x):
        traces.append(1)
        return features(p, x)

    p = _params()
    bl.gradcam(counted, head, p, _images(1))
    n = len(traces)
    bl.gradcam(counted, head, p, _images(2))
    assert len(traces) == n


def test_gradcam_runs_on_models_tiny_vgg():
    model = tiny_vgg()
    hh, ww = model.input_size
    x = jax.random.normal(jax.random.PRNGKey(0), (2, hh, ww, model.channels))
    cam = bl.explain(model, x, "gradcam")
    assert cam.shape == (2, hh, ww) and bool(jnp.all(jnp.isfinite(cam)))
    assert bl.explain(model, x, "guided_backprop").shape == (2, hh, ww)


def test_fig9_table_on_tiny_model():
    from cms_jax.baselines import compare

    p = _params()
    model = types.SimpleNamespace(
        name="tiny", apply_fn=apply, params=p, features_fn=features, head_fn=head,
        outputs_are_probs=False, preprocess=lambda rgb: np.asarray(rgb, np.float32) / 127.5 - 1.0)
    crops = np.random.default_rng(0).integers(0, 256, (3, H, W, 3), dtype=np.uint8)
    cms = np.zeros((3, H, W), np.float32)
    cms[:, 4:8, 4:8] = 1.0
    table, maps = compare.fig9_table(model, crops, cms, batch_size=2, scorecam_batch=4)
    assert list(maps) == ["GradCAM", "GradCAM++", "ScoreCAM", "CMS"]
    assert all(m.shape == (3, H, W) for m in maps.values())
    # The padded last batch must not change the maps of the real images.
    x = jnp.asarray(model.preprocess(crops))
    t = jnp.argmax(apply(p, x), -1)
    _close(maps["GradCAM++"], np.asarray(bl.gradcam_plusplus(features, head, p, x, t)))
    assert sum(m["win"] for m in table["methods"].values()) == pytest.approx(100.0)
    md = compare.markdown_table(table)
    assert md.count("\n| ") == 5 and "| CMS |" in md
    assert compare.method_grid(crops, maps, rows=2).dtype == np.uint8
    with pytest.raises(ValueError, match="cms_maps"):
        compare.fig9_table(model, crops, cms[:2])


def test_cam_baselines_explain_the_logits_of_a_softmax_model(shared_dir):
    """GradCAM on the gender model's logits (the layer before `predictions`), not its softmax."""
    import jax
    import numpy as np

    from cms_jax import baselines, models
    from cms_jax.baselines.cams import gradcam

    m = models.load("gender")
    x = m.preprocess(np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3)).astype(np.uint8))
    a = m.features_fn(m.params, x)
    np.testing.assert_allclose(jax.nn.softmax(m.head_logits_fn(m.params, a), -1), m.head_fn(m.params, a),
                               atol=1e-6)  # logits -> softmax is the model's output
    got = np.asarray(baselines.explain(m, x, "gradcam"))
    want = np.asarray(gradcam(m.features_fn, m.head_logits_fn, m.params, x, None))
    on_probs = np.asarray(gradcam(m.features_fn, m.head_fn, m.params, x, None))
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.abs(got - on_probs).max() > 1e-3 * np.abs(got).max()  # the softmax changed the map
    assert models.outputs.age_bins(models.load("age")).head_logits_fn is None  # wrappers keep none
