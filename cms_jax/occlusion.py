"""Occlusion scoring, Eqs. 1-3 of the paper (Algorithm 1, lines 6-7 and 10).

For a vertex at (x, y) (x = column, y = row, pixels of the model input) the
occluded square is the official code's
``x1 = max(0, floor(x - sz/2)); x2 = min(x1 + sz, W)`` (the same for y) and
those pixels are set to ``fill`` (0 in the model's normalised input), i.e.
``I ⊙ B_{x,y}`` of Eqs. 2-3.  The drop of Eq. 1 is
``S_v = phi(I, c) - phi(I_v, c)`` with ``phi`` either the softmax probability
(the paper's text) or the raw logit (the official code).  :func:`phi` is that
confidence rule, the one every scorer uses (the engine's forwards, grid
occlusion, the figures): :func:`score_mode` reads a model's outputs,
:func:`confidences` normalises them and :func:`target_confidence` or
:func:`cosine_confidence` picks phi(I, c).

Square bounds are computed on the host in float64 so that ``floor`` agrees
bit-for-bit with the official Python code; the masks themselves are built on
the device with ``jax.vmap`` inside jit (never materialised on the host).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

SCORES = ("prob", "logit")


def default_patch_size(input_h: int) -> int:
    """Occlusion square side for a model input of height ``input_h``.

    The paper uses 15 px at 224 px; the side scales with the input (about 4 px
    at 64 px) so the square covers the same fraction of the face.

    Args:
        input_h: model input height in pixels.

    Returns:
        The side in pixels, at least 1.
    """
    if input_h <= 0:
        raise ValueError(f"default_patch_size: input_h must be positive, got {input_h}")
    return max(1, int(round(15 * input_h / 224)))


def square_bounds(xy: np.ndarray, size: float, hw: tuple[int, int]) -> np.ndarray:
    """Official-code square around each point, clipped to the image.

    ``x1 = max(0, floor(x - size/2)); x2 = min(floor(x1 + size), W)`` and the
    same for y with H.  For an integer ``size`` this is the occlusion square
    (Eqs. 2-3); for the canonical side ``f = sz * H_F / H_I`` it is the splat
    square of Eq. 4.  A square whose ``x1 >= x2`` is empty.

    Args:
        xy: (V, 2) positions, column 0 = x (column), column 1 = y (row).
        size: square side in pixels (> 0).
        hw: (H, W) of the image or canvas.

    Returns:
        (V, 4) int32 array of ``(x1, x2, y1, y2)``, half-open.
    """
    xy = np.asarray(xy, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"square_bounds: xy must have shape (V, 2), got {xy.shape}")
    if not size > 0:
        raise ValueError(f"square_bounds: size must be > 0, got {size}")
    h, w = int(hw[0]), int(hw[1])
    finite = np.isfinite(xy).all(axis=1)
    xy = np.where(finite[:, None], xy, -1e9)  # non-finite -> empty square, checked by callers
    x1 = np.maximum(0.0, np.floor(xy[:, 0] - size / 2))
    y1 = np.maximum(0.0, np.floor(xy[:, 1] - size / 2))
    x2 = np.minimum(np.floor(x1 + size), w)
    y2 = np.minimum(np.floor(y1 + size), h)
    # Squares starting past the edge are empty; clip so int32 cannot overflow.
    x1, y1 = np.minimum(x1, w), np.minimum(y1, h)
    out = np.stack([x1, x2, y1, y2], axis=1).astype(np.int32)
    out[~finite] = 0
    return out


def box_mask(box: jax.Array, hw: tuple[int, int]) -> jax.Array:
    """(H, W) bool mask, True inside the half-open box ``(x1, x2, y1, y2)``."""
    rows = jnp.arange(hw[0], dtype=jnp.int32)[:, None]
    cols = jnp.arange(hw[1], dtype=jnp.int32)[None, :]
    return ((cols >= box[0]) & (cols < box[1]) & (rows >= box[2]) & (rows < box[3]))


def occlude(image: jax.Array, box: jax.Array, fill: jax.Array | float = 0.0) -> jax.Array:
    """``I ⊙ B`` of Eqs. 2-3: the pixels of ``box`` set to ``fill`` in every channel.

    Args:
        image: (H, W, C) model input.
        box: (4,) int32 ``(x1, x2, y1, y2)`` from :func:`square_bounds`.
        fill: value written into the square.

    Returns:
        The occluded (H, W, C) image.
    """
    mask = box_mask(box, image.shape[:2])
    return jnp.where(mask[:, :, None], jnp.asarray(fill, image.dtype), image)


# One occluded copy per (image, box) pair, built inside whatever jit calls it.
occlude_batch = jax.vmap(occlude, in_axes=(0, 0, None))
# The same with each copy's own fill image (H, W, C): a blur fill, the image's own blurred pixels.
occlude_batch_images = jax.vmap(occlude, in_axes=(0, 0, 0))


def blurred(images: np.ndarray, sigma: float) -> np.ndarray:
    """Each image blurred by a Gaussian of ``sigma`` input pixels (reflected borders): a blur fill.

    The occluder of Fong & Vedaldi's meaningful perturbations: the square keeps the image's own
    colours and coarse shading but loses its detail, so the copy stays closer to the images the
    model was trained on than a constant square does. The kernel spans ±3 sigma.

    Args:
        images: (N, H, W, C) model inputs.
        sigma: standard deviation in pixels, > 0.

    Returns:
        float32 (N, H, W, C).
    """
    x = np.asarray(images, np.float32)
    if x.ndim != 4:
        raise ValueError(f"blurred: images must be (N, H, W, C), got shape {x.shape}")
    if not sigma > 0:
        raise ValueError(f"blur sigma must be > 0 pixels, got {sigma!r}")
    r = max(1, int(np.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = (k / k.sum()).astype(np.float32)
    for axis in (1, 2):
        n = x.shape[axis]
        pad = [(0, 0)] * 4
        pad[axis] = (r, r)
        xp = np.pad(x, pad, mode="reflect" if n > r else "edge")
        x = sum(w * np.take(xp, np.arange(j, j + n), axis=axis) for j, w in enumerate(k))
    return x.astype(np.float32)


def score_mode(score: str, outputs_are_probs: bool = False, output: str = "classes") -> str:
    """How raw model outputs become the confidence phi of Eq. 1.

    Args:
        score: 'prob' (softmax probability, the paper's text) or 'logit' (the
            raw value of the class, the official code).
        outputs_are_probs: the model already ends in a softmax; its raw value
            is then the probability and no second softmax is applied.
        output: the model's output kind; regression outputs have no classes to
            normalise over, so their raw values are used; an embedding is scored
            by the cosine similarity to a reference embedding (its own clean
            embedding unless one is given): 'cosine'.

    Returns:
        'softmax', 'raw' or 'cosine'.
    """
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    if output == "embedding":
        return "cosine"
    if score == "logit" or outputs_are_probs or output != "classes":
        return "raw"
    return "softmax"


def confidences(scores: jax.Array, mode: str) -> jax.Array:
    """Maps (B, K) model outputs to per-class confidences under ``mode`` ('softmax' or 'raw').

    A single-output classifier under 'softmax' uses the sigmoid, since a
    softmax over one logit is constantly 1. An embedding ('cosine') has no
    per-class confidence: its phi is :func:`cosine_confidence` to a reference.
    """
    if mode not in ("softmax", "raw"):
        raise ValueError(f"confidences: mode must be 'softmax' or 'raw' (per-class confidences), got {mode!r}; "
                         "an embedding is scored by phi(outputs, 'cosine', reference)")
    scores = scores.astype(jnp.float32)
    if mode == "raw":
        return scores
    if scores.shape[-1] == 1:
        return jax.nn.sigmoid(scores)
    return jax.nn.softmax(scores, axis=-1)


def phi(outputs: jax.Array, mode: str, target: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Eq. 1's confidence phi(I, c) of each row: the one confidence rule of the package.

    Args:
        outputs: (B, K) raw model outputs (any float dtype; scored in float32).
        mode: :func:`score_mode` of the model: 'softmax', 'raw' or 'cosine'.
        target: (B,) int32 class indices (-1: the predicted class), or under
            'cosine' (B, D) reference embeddings.

    Returns:
        ``(phi, c)``: (B,) float32 confidences and (B,) int32 classes used (0 for embeddings).
    """
    if mode == "cosine":
        return cosine_confidence(outputs, target)
    return target_confidence(confidences(outputs, mode), target)


def cosine_confidence(outputs: jax.Array, reference: jax.Array) -> tuple[jax.Array, jax.Array]:
    """phi for an embedding: cosine similarity of each row with its (B, D) reference; class 0.

    The drop S_v = phi(I) - phi(I_v) of Eq. 1 then says how far occluding the square moves the
    embedding away from the reference (its own clean embedding: "how much the identity moves").
    With (B, R, D) references each row is scored against R of them at once, phi (B, R): one
    occluded probe against every gallery photo it is paired with (`cms_jax.verify`). An all-zero
    reference (padding) scores 0.
    """
    o = outputs.astype(jnp.float32)
    r = reference.astype(jnp.float32)
    if r.ndim == o.ndim + 1:
        o = o[:, None, :]
    num = (o * r).sum(-1)
    den = jnp.sqrt((o * o).sum(-1) * (r * r).sum(-1))
    return jnp.where(den > 0, num / jnp.maximum(den, 1e-30), 0.0), jnp.zeros(o.shape[0], jnp.int32)


def target_confidence(conf: jax.Array, target: jax.Array) -> tuple[jax.Array, jax.Array]:
    """phi(I, c) for each row, with c the predicted class where ``target < 0``.

    Args:
        conf: (B, K) confidences from :func:`confidences`.
        target: (B,) int32 class index, or -1 for "the predicted class".

    Returns:
        ``(phi, c)``: (B,) float32 confidences and (B,) int32 classes used.
    """
    pred = jnp.argmax(conf, axis=-1).astype(jnp.int32)
    cls = jnp.where(target < 0, pred, target).astype(jnp.int32)
    phi = jnp.take_along_axis(conf, cls[:, None], axis=-1)[:, 0]
    return phi, cls


def drops_from_confidences(clean: np.ndarray, occluded: np.ndarray) -> np.ndarray:
    """Eq. 1: ``S_v = phi(I, c) - phi(I_v, c)`` in float32."""
    return (np.asarray(clean, np.float32) - np.asarray(occluded, np.float32)).astype(np.float32)


def check_patch_size(patch_size: int, input_h: int) -> int:
    """Validates an occlusion side; 0 (the one "default" sentinel of every API, flag and
    `RunConfig`) is :func:`default_patch_size`."""
    if patch_size == 0:
        return default_patch_size(input_h)
    if not float(patch_size).is_integer() or patch_size < 1:
        raise ValueError(f"patch_size must be a positive integer number of pixels, got {patch_size}")
    return int(math.floor(patch_size))
