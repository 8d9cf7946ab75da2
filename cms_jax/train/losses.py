"""Training objectives: ``loss(graphdef, params, x, y) -> scalar``, by name in `LOSSES`.

  softmax  cross-entropy of the task classes (Sec. 4.1.1 of the paper: the
           fine-tuned heads of gender, age, pose and expression).
  cosface  the large-margin cosine loss of CosFace (Wang et al., CVPR 2018,
           Eq. 4): the network's output is an embedding; ``params['centres']``
           holds one learnt direction per training identity, and the logit
           of identity j is ``s * (cos(e, w_j) - m [j = y])``. Subtracting the
           margin from the true identity's cosine only, then training, pulls
           photos of a person together and pushes people apart on the sphere,
           which is what a verifier thresholding the cosine needs. The centres
           are dropped when the network is exported (`embedding.export`).
"""
from __future__ import annotations

import jax.numpy as jnp
import optax
from flax import nnx

COSFACE_SCALE = 30.0   # s of CosFace (their Sec. 4.1 uses 64 on 512-d; 30 suits 128-d and few identities)
COSFACE_MARGIN = 0.35  # m of CosFace (their Sec. 4.1 reports 0.35 as the best)


def softmax(graphdef, params, x, y):
    """Mean softmax cross-entropy of the network's logits against integer labels."""
    logits = nnx.merge(graphdef, params)(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def unit(v, axis: int = -1, eps: float = 1e-12):
    """``v / |v|`` along `axis` (eps keeps a zero vector finite)."""
    return v / jnp.sqrt(jnp.sum(v * v, axis=axis, keepdims=True) + eps)


def cosface(graphdef, params, x, y, scale: float = COSFACE_SCALE, margin: float = COSFACE_MARGIN):
    """CosFace loss of the embeddings ``net(x)`` against the identity centres ``params['centres']``."""
    net = {k: v for k, v in params.items() if k != "centres"}
    e = unit(nnx.merge(graphdef, net)(x))                       # (B, D)
    w = unit(params["centres"]["kernel"], axis=0)               # (D, identities)
    cos = e @ w
    onehot = jnp.arange(cos.shape[-1])[None, :] == y[:, None]
    logits = scale * jnp.where(onehot, cos - margin, cos)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


LOSSES = {"softmax": softmax, "cosface": cosface}
