"""SSR-Net age estimation (Yang et al., IJCAI 2018) in Flax NNX, for the weights-only ``ssr_age_imdb.h5``.

The paper's age task (10 bins of 10 years, Sec. 4.1) needs an age model; the
public SSR-Net IMDB model ships weights without a graph, so the graph is
written here after shamangary/SSR-Net ``SSRNET_model.py`` (stage_num 3,3,3,
lambda_local = lambda_d = 1). Layer names are the Keras auto-names of that
graph, in its creation order, so the HDF5 weights map one to one. Two streams
(x: conv/avg-pool/ReLU, s: conv/max-pool/tanh) feed three soft stagewise
regression stages merged into one age (``merge_age``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from cms_jax.models.base import FaceModel, make_preprocess

STAGES = (3, 3, 3)
LAMBDA_LOCAL = 1.0
LAMBDA_D = 1.0
_V = 101.0  # age range of merge_age


def _pool(x, k, kind):
    fn = nnx.max_pool if kind == "max" else nnx.avg_pool
    return fn(x, (k, k), strides=(k, k))  # Keras default: VALID, stride = pool size


class SSRNet(nnx.Module):
    """SSR-Net for 64x64x3 input; returns (B, 1) age in years."""

    def __init__(self, *, rngs: nnx.Rngs):
        conv = lambda name, cin, cout, k: setattr(self, name, nnx.Conv(cin, cout, (k, k), padding="VALID", rngs=rngs))
        bn = lambda name, c: setattr(self, name, nnx.BatchNorm(c, use_running_average=True, epsilon=1e-3, rngs=rngs))
        dense = lambda name, cin, cout: setattr(self, name, nnx.Linear(cin, cout, rngs=rngs))
        for i, cin in zip(range(1, 5), (3, 32, 32, 32)):  # x stream
            conv(f"conv2d_{i}", cin, 32, 3)
            bn(f"batch_normalization_{i}", 32)
        for i, cin in zip(range(5, 9), (3, 16, 16, 16)):  # s stream
            conv(f"conv2d_{i}", cin, 16, 3)
            bn(f"batch_normalization_{i}", 16)
        # Per stage: 1x1 convs (s, x), mix denses (s, x), delta, feature dense, prediction, local shift.
        for st, (cs, cx, ds, dx, dfeat, width) in enumerate(
                (("conv2d_9", "conv2d_10", "dense_1", "dense_2", "dense_3", 160),
                 ("conv2d_11", "conv2d_12", "dense_4", "dense_5", "dense_6", 90),
                 ("conv2d_13", "conv2d_14", "dense_7", "dense_8", "dense_9", 90)), start=1):
            n = STAGES[st - 1]
            conv(cs, 16, 10, 1)
            conv(cx, 32, 10, 1)
            dense(ds, width, n)
            dense(dx, width, n)
            dense(f"delta_s{st}", width, 1)
            dense(dfeat, n, 2 * n)
            dense(f"pred_age_stage{st}", 2 * n, n)
            dense(f"local_delta_stage{st}", 2 * n, n)

    def _stage(self, st, s_feat, x_feat, cs, cx, ds, dx, dfeat, pool):
        flat = lambda a: a.reshape(a.shape[0], -1)  # Keras channels_last Flatten: (H, W, C) order
        s, x = jax.nn.relu(getattr(self, cs)(s_feat)), jax.nn.relu(getattr(self, cx)(x_feat))
        if pool:
            s, x = _pool(s, pool, "max"), _pool(x, pool, "avg")
        s, x = flat(s), flat(x)
        delta = jnp.tanh(getattr(self, f"delta_s{st}")(s * x))
        mix = jax.nn.relu(getattr(self, ds)(s)) * jax.nn.relu(getattr(self, dx)(x))
        feat = jax.nn.relu(getattr(self, dfeat)(mix))
        pred = jax.nn.relu(getattr(self, f"pred_age_stage{st}")(feat))
        local = jnp.tanh(getattr(self, f"local_delta_stage{st}")(feat))
        return pred, delta[:, 0], local

    def __call__(self, img):
        x, xs = img, []
        for i in range(1, 5):
            x = jax.nn.relu(getattr(self, f"batch_normalization_{i}")(getattr(self, f"conv2d_{i}")(x)))
            if i < 4:
                x = _pool(x, 2, "avg")
                xs.append(x)
        s, ss = img, []
        for i in range(5, 9):
            s = jnp.tanh(getattr(self, f"batch_normalization_{i}")(getattr(self, f"conv2d_{i}")(s)))
            if i < 8:
                s = _pool(s, 2, "max")
                ss.append(s)
        p1, d1, l1 = self._stage(1, s, x, "conv2d_9", "conv2d_10", "dense_1", "dense_2", "dense_3", 0)
        p2, d2, l2 = self._stage(2, ss[1], xs[1], "conv2d_11", "conv2d_12", "dense_4", "dense_5", "dense_6", 4)
        p3, d3, l3 = self._stage(3, ss[0], xs[0], "conv2d_13", "conv2d_14", "dense_7", "dense_8", "dense_9", 8)
        # merge_age: stagewise soft regression, each stage refining the bins of the previous.
        idx = lambda n: jnp.arange(n, dtype=jnp.float32)[None, :]
        n1, n2, n3 = STAGES
        w1, w2, w3 = n1 * (1 + LAMBDA_D * d1), n2 * (1 + LAMBDA_D * d2), n3 * (1 + LAMBDA_D * d3)
        a = jnp.sum((idx(n1) + LAMBDA_LOCAL * l1) * p1, axis=1) / w1
        b = jnp.sum((idx(n2) + LAMBDA_LOCAL * l2) * p2, axis=1) / w1 / w2
        c = jnp.sum((idx(n3) + LAMBDA_LOCAL * l3) * p3, axis=1) / w1 / w2 / w3
        return ((a + b + c) * _V)[:, None]


def abstract_ssrnet():
    model = nnx.eval_shape(lambda: SSRNet(rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(model)
    return graphdef, nnx.to_pure_dict(state)


def load_ssrnet(path: str, colour: str = "BGR") -> FaceModel:
    """The weights-only SSR-Net HDF5 as a regression `FaceModel` (age in years, 0-255 input).

    Args:
      path: ``ssr_age_imdb.h5``.
      colour: channel order; SSR-Net's data and demo use OpenCV frames, i.e. BGR.
    """
    from cms_jax.models.keras_h5 import read_weights

    graphdef, abstract = abstract_ssrnet()
    params = read_weights(path, abstract, source=f"SSR-Net weights {path}")

    def apply_fn(p, x):
        return nnx.merge(graphdef, p)(x)

    return FaceModel(
        name="age", apply_fn=apply_fn, params=params, input_size=(64, 64), channels=3, class_names=("age",),
        # The SSR-Net demo enlarges the detected box by 0.4 of its side on every side.
        crop_policy="loose", crop_margin=0.8, preprocess=make_preprocess(colour, 1.0, 0.0, 1.0),
        output="regression")
