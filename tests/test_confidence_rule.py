"""The one confidence rule (phi of Eq. 1, `cms_jax.occlusion.phi`) against hand computations.

Every scorer reads a model's outputs through it: the engine's dense and
incremental forwards, grid occlusion (`baselines.grid_occlusion`, `explain`),
the figures' `FaceMaps` and the cosine wrapper of `models.outputs`. The expected
numbers below are written out in numpy from the definitions (softmax, sigmoid,
raw value, cosine), independent of the implementation.
"""
import jax.numpy as jnp
import numpy as np
import pytest

from cms_jax import baselines, models, occlusion as occ
from cms_jax.engine import OcclusionEngine
from cms_jax.models import outputs


def _phi(outputs_, mode, target):
    p, c = occ.phi(jnp.asarray(outputs_, jnp.float32), mode, jnp.asarray(target))
    return np.asarray(p, np.float64), np.asarray(c)


def test_softmax_head_by_hand():
    logits = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    assert occ.score_mode("prob") == "softmax"
    e = np.exp(logits[0])  # row 0, class 1 named; row 1 predicted (class 2)
    want0 = e[1] / e.sum()
    want1 = np.exp(3.0) / (1.0 + np.exp(-1.0) + np.exp(3.0))
    p, c = _phi(logits, "softmax", np.array([1, -1], np.int32))
    np.testing.assert_allclose(p, [want0, want1], rtol=1e-6)
    assert c.tolist() == [1, 2]


def test_single_logit_is_a_sigmoid_not_a_constant_softmax():
    z = np.array([[0.3], [-2.0]])
    p, c = _phi(z, "softmax", np.array([-1, 0], np.int32))
    np.testing.assert_allclose(p, 1.0 / (1.0 + np.exp(-z[:, 0])), rtol=1e-6)
    assert c.tolist() == [0, 0]


def test_regression_outputs_are_read_raw():
    assert occ.score_mode("prob", output="regression") == "raw"
    yaw_pitch_roll = np.array([[12.5, -3.0, 40.0]])
    p, c = _phi(yaw_pitch_roll, "raw", np.array([1], np.int32))
    assert p.tolist() == [-3.0] and c.tolist() == [1]


def test_cosine_to_a_reference_embedding():
    assert occ.score_mode("logit", output="embedding") == "cosine"
    a, r = np.array([[1.0, 2.0, 2.0], [3.0, 0.0, 4.0]]), np.array([[2.0, 1.0, 2.0], [0.0, 5.0, 0.0]])
    want = [(2 + 2 + 4) / (3.0 * 3.0), 0.0]  # |a0| = |r0| = 3; a1 is orthogonal to r1
    p, c = _phi(a, "cosine", r)
    np.testing.assert_allclose(p, want, rtol=1e-6, atol=1e-7)
    assert c.tolist() == [0, 0]
    with pytest.raises(ValueError, match="cosine"):
        occ.confidences(jnp.asarray(a), "cosine")  # no per-class confidences for an embedding
    wrapped = outputs.cosine_to_reference(_callable("emb", 3, "embedding"), r[0])
    np.testing.assert_allclose(np.asarray(wrapped(a.reshape(2, 1, 1, 3).astype(np.float32)))[:, 0],
                               [want[0], 14.0 / 15.0],  # a1 . r0 = 14, |a1| |r0| = 15
                               rtol=1e-6)


def _callable(name, k, output, fn=None):
    return models.callable_model(fn or (lambda x: x[:, 0, 0, :]), name=name, input_size=(4, 4), channels=k,
                                 class_names=tuple(f"o{i}" for i in range(k)), preprocess=lambda r: r,
                                 output=output)


@pytest.mark.parametrize("k,output", [(1, "classes"), (3, "classes"), (2, "regression"), (3, "embedding")])
def test_engine_and_grid_occlusion_score_the_same_confidence(k, output):
    """One square over the whole image: the engine's drop and grid occlusion's equal the hand rule."""
    w = np.array([[0.7, -0.2, 0.4], [0.1, 0.9, -0.5], [0.3, 0.2, 0.6]])[:, :k]  # (C, K) head on the mean pixel

    def fn(x):
        return jnp.mean(x, axis=(1, 2)) @ jnp.asarray(w, jnp.float32)

    model = models.callable_model(fn, name="lin", input_size=(4, 4), channels=3, class_names=tuple("abc"[:k]),
                                  preprocess=lambda r: r, output=output)
    x = np.arange(48, dtype=np.float32).reshape(1, 4, 4, 3) / 24.0
    out = x.mean(axis=(1, 2))[0] @ w  # occluded with fill 0 -> outputs 0
    if output == "embedding":  # self-cosine: 1 clean; the occluded embedding is 0, cosine 0 by definition
        conf, conf0, c = np.ones(1), np.zeros(1), 0
    elif output == "regression":
        conf, conf0, c = out, np.zeros(k), 1
    elif k == 1:
        conf, conf0, c = 1 / (1 + np.exp(-out)), np.full(1, 0.5), 0
    else:
        conf, conf0 = np.exp(out) / np.exp(out).sum(), np.full(k, 1.0 / k)
        c = int(np.argmax(out))
    want = conf[c] - conf0[c]
    tgt = [c] if output == "regression" else None
    res = OcclusionEngine(model, batch_size=8, images_per_block=1).run(x, np.array([[2.0, 2.0]]),
                                                                     targets=tgt, patch_size=8)
    np.testing.assert_allclose(res.drops[0, 0], want, rtol=1e-5, atol=1e-7)
    grid = baselines.explain(model, jnp.asarray(x), "grid_occlusion",
                             None if tgt is None else jnp.asarray(tgt), patch=4, stride=4)
    np.testing.assert_allclose(np.asarray(grid)[0], np.full((4, 4), want), rtol=1e-5, atol=1e-7)


def test_score_logit_reads_a_softmax_model_before_its_softmax(shared_dir):
    """The shipped gender model ends in a softmax: --score=logit must read the layer before it, or
    'logit' would silently be the probability again."""
    import dataclasses

    from cms_jax import models
    from cms_jax.pipeline import RunConfig
    from cms_jax.scoring.scorer import Scorer

    prob = Scorer(RunConfig(model="gender", images="x"))
    logit = Scorer(RunConfig(model="gender", images="x", score="logit"))
    assert prob.model.outputs_are_probs and not logit.model.outputs_are_probs
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (4, 64, 64, 1)), jnp.float32)
    p = np.asarray(prob.model.apply_fn(prob.model.params, x), np.float64)
    z = np.asarray(logit.model.apply_fn(logit.model.params, x), np.float64)
    e = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(e / e.sum(1, keepdims=True), p, atol=1e-6)  # logits -> softmax = the model
    assert np.abs(z).max() > 0.1 and not np.allclose(z, p)
    no_head = dataclasses.replace(prob.model, features_fn=None, head_logits_fn=None)
    with pytest.raises(ValueError, match="ends in a softmax and exposes no layer before it"):
        models.with_logits(no_head)
    tiny = models.load("tiny")  # outputs logits already: unchanged
    assert models.with_logits(tiny) is tiny
