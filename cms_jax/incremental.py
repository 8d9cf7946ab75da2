"""Exact incremental occlusion inference for VGG-family nets (Eqs. 1-3).

Eq. 1 needs one forward pass per occluded copy ``I * B_ij``. A 15x15 square
changes only a small window of each early feature map, so, as in Krypton
(Nakandala et al., SIGMOD 2019), the clean image is run once, its activations
kept, and for every occluded copy only the window the square can reach is
recomputed (static size per layer from ``incremental_plan``; dynamic position
clamped to the map), from the clean map with the updated window written in
(``lax.dynamic_update_slice``), halo included. From the layer where the window
covers most of the map the rest of the net runs densely on the batch. The
result equals the dense path up to float rounding.

Square rule (the official code): ``x1 = max(0, floor(x - sz/2))``,
``x2 = min(x1 + sz, W)``, same for y; pixels in ``[y1,y2) x [x1,x2)`` are set to
``fill``. Params are a plain dict ``{'conv1_1': {'kernel': (3,3,Cin,Cout),
'bias': (Cout,)}, ..., 'fc6': {'kernel': (h*w*C, D) flattened in (H,W,C)
order, 'bias'}, ...}``. ``compute_dtype=bfloat16`` runs convs and matmuls in
bf16 with fp32 accumulation; logits and softmax stay fp32.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from cms_jax.incremental_plan import VGGArch, init_params, make_plan, vgg_params  # noqa: F401  (re-exported)

_DN = ("NHWC", "HWIO", "NHWC")


def _precision(dtype):
    # fp32 means fp32: no TF32 on GPUs, so the exactness contract holds everywhere.
    return lax.Precision.HIGHEST if dtype == jnp.float32 else None


def _conv(x, p, dtype, padding):
    # bf16 in, fp32 accumulation. XLA:CPU takes an fp32 result type; cuDNN accumulates bf16 convs
    # in fp32 itself and may not offer a bf16-in/fp32-out kernel, so on GPUs the sum is returned
    # in bf16 (one extra rounding, before the bias) rather than risk an fp32 fallback.
    out = jnp.float32 if (dtype == jnp.float32 or jax.default_backend() == "cpu") else dtype
    y = lax.conv_general_dilated(x.astype(dtype), p["kernel"].astype(dtype), (1, 1), padding,
                                 dimension_numbers=_DN, precision=_precision(dtype), preferred_element_type=out)
    return jax.nn.relu(y.astype(jnp.float32) + p["bias"].astype(jnp.float32)).astype(dtype)


def _conv_valid(x, p, dtype):
    """'VALID' 3x3 conv of a window with its halo."""
    if jax.default_backend() != "cpu":
        return _conv(x, p, dtype, "VALID")
    # XLA:CPU runs an unpadded conv 3-5x slower than a padded one (measured, jax 0.10): pad one
    # zero column on the left and drop the output column it produces -- same values, 1/w more work.
    return _conv(x, p, dtype, ((0, 0), (1, 0)))[:, :, 1:]


def _pool(x):
    return lax.reduce_window(x, jnp.array(-jnp.inf, x.dtype), lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def _fc_names(params):
    names = [k for k in params if k.startswith("fc")]
    return sorted(names, key=lambda k: int(k[2:]))


def _head(params, feats, dtype):
    x = feats.reshape(feats.shape[0], -1)
    names = _fc_names(params)
    for j, name in enumerate(names):
        x = jnp.dot(x.astype(dtype), params[name]["kernel"].astype(dtype), precision=_precision(dtype),
                    preferred_element_type=jnp.float32) + params[name]["bias"].astype(jnp.float32)
        if j < len(names) - 1:
            x = jax.nn.relu(x).astype(dtype)
    return x


def _layer(params, kind, name, x, dtype):
    return _conv(x, params[name], dtype, "SAME") if kind == "conv" else _pool(x)


def vgg_logits(params, arch: VGGArch, x, compute_dtype=jnp.float32):
    """Dense reference forward. x: (B,H,W,C) float32 -> (B,K) float32 logits."""
    x = x.astype(compute_dtype)
    for kind, name in arch.layers():
        x = _layer(params, kind, name, x, compute_dtype)
    return _head(params, x, compute_dtype)


def patch_boxes(patch_xy, patch_size: int, hw) -> np.ndarray:
    """The official square rule. patch_xy (V,2) x=column, y=row -> int32 (V,4) (x1,y1,x2,y2)."""
    xy = np.asarray(patch_xy, np.float32)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"patch_xy must have shape (V, 2), got {xy.shape}")
    h, w = hw
    x1 = np.maximum(0, np.floor(xy[:, 0] - patch_size / 2)).astype(np.int64)
    y1 = np.maximum(0, np.floor(xy[:, 1] - patch_size / 2)).astype(np.int64)
    x1, y1 = np.minimum(x1, w), np.minimum(y1, h)  # a square wholly outside occludes nothing
    return np.stack([x1, y1, np.minimum(x1 + patch_size, w), np.minimum(y1 + patch_size, h)], 1).astype(np.int32)


def _inside(start, size, lo, hi):
    idx = start + jnp.arange(size)
    return (idx >= lo) & (idx < hi)


def _occlude(image, box, fill):
    h, w = image.shape[:2]
    m = _inside(0, h, box[1], box[3])[:, None] & _inside(0, w, box[0], box[2])[None, :]
    return jnp.where(m[..., None], jnp.asarray(fill, image.dtype), image)


def _clean_acts(params, arch, image, dtype):
    """Inputs of every layer (plus the final map) for the clean image, and its logits."""
    acts, x = [], image[None].astype(dtype)
    for kind, name in arch.layers():
        acts.append(x[0])
        x = _layer(params, kind, name, x, dtype)
    acts.append(x[0])
    return acts, _head(params, x, dtype)[0]


def _window_to_map(params, plan, acts, image, box, fill, dtype):
    """Runs one occluded copy through the incremental layers; returns the full map at the switch."""
    hgt, wid, ch = image.shape
    h, w = plan[0].win_in
    r, c = jnp.clip(box[1], 0, hgt - h), jnp.clip(box[0], 0, wid - w)
    win = lax.dynamic_slice(image, (r, c, 0), (h, w, ch))
    m = _inside(r, h, box[1], box[3])[:, None] & _inside(c, w, box[0], box[2])[None, :]
    win = jnp.where(m[..., None], jnp.asarray(fill, dtype), win.astype(dtype))
    for i, layer in enumerate(plan):
        if not layer.incremental:
            return lax.dynamic_update_slice(acts[i], win, (r, c, 0))
        (h, w), (oh, ow), cin = layer.win_out, layer.out_hw, acts[i].shape[-1]
        if layer.kind == "conv":
            r2, c2 = jnp.clip(r - 1, 0, oh - h), jnp.clip(c - 1, 0, ow - w)
            clean = jnp.pad(acts[i], ((1, 1), (1, 1), (0, 0)))  # 'SAME' zeros around the map
            halo = lax.dynamic_slice(clean, (r2, c2, 0), (h + 2, w + 2, cin))
            halo = lax.dynamic_update_slice(halo, win, (r - r2 + 1, c - c2 + 1, 0))
            win = _conv_valid(halo[None], params[layer.name], dtype)[0]
        else:
            r2, c2 = jnp.clip(r // 2, 0, oh - h), jnp.clip(c // 2, 0, ow - w)
            eh, ew = layer.in_hw[0] % 2, layer.in_hw[1] % 2  # an odd map: the window may reach the dropped row
            clean = jnp.pad(acts[i], ((0, eh), (0, ew), (0, 0)))
            base = lax.dynamic_slice(clean, (2 * r2, 2 * c2, 0), (2 * h + eh, 2 * w + ew, cin))
            base = lax.dynamic_update_slice(base, win, (r - 2 * r2, c - 2 * c2, 0))
            win = _pool(base[None, : 2 * h, : 2 * w])[0]
        r, c = r2, c2
    return lax.dynamic_update_slice(acts[len(plan)], win, (r, c, 0))


def _mesh():
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))


def replicate(tree):
    """Places a pytree (params) on every device once, so repeated calls skip the host-to-device copy."""
    return jax.device_put(tree, NamedSharding(_mesh(), P()))


@functools.lru_cache(maxsize=64)
def _compiled(arch, patch_size, method, dtype_name, fill, switch_fraction, ndev):
    """Jitted (clean, chunk) functions; cached so repeated calls never retrace."""
    del ndev  # part of the cache key only: a new device count needs a new mesh
    dtype = jnp.dtype(dtype_name)
    mesh = _mesh()
    rep, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    plan = make_plan(arch, patch_size, switch_fraction)
    layers = arch.layers()
    switch = next((i for i, layer in enumerate(plan) if not layer.incremental), len(plan))

    def clean(params, image):
        return _clean_acts(params, arch, image, dtype)

    def chunk(params, acts, image, boxes):
        if method == "dense":
            x = jax.vmap(lambda b: _occlude(image, b, fill))(boxes)
            return vgg_logits(params, arch, x, dtype)
        x = jax.vmap(lambda b: _window_to_map(params, plan, acts, image, b, fill, dtype))(boxes)
        for kind, name in layers[switch:]:
            x = _layer(params, kind, name, x, dtype)
        return _head(params, x, dtype)

    clean_fn = jax.jit(clean, in_shardings=(rep, rep), out_shardings=rep)
    chunk_fn = jax.jit(chunk, in_shardings=(rep, rep, rep, data), out_shardings=data)
    return clean_fn, chunk_fn, rep


def occluded_logits(params, arch: VGGArch, image, patch_xy, patch_size: int = 15, *, method="incremental",
                    compute_dtype=jnp.float32, chunk: int = 32, fill: float = 0.0,
                    switch_fraction: float = 0.9):
    """Logits of the clean image and of one occluded copy per vertex.

    Args:
      params: plain VGG params dict (see module docstring); pass ``replicate(params)``
        when calling per face, so the weights are copied to the devices once.
      arch: the architecture; ``arch.input_hw`` must equal the image size.
      image: (H, W, C) float32, preprocessed.
      patch_xy: (V, 2) square centres, x = column, y = row, pixels.
      patch_size: square side ``sz``.
      method: 'incremental' or 'dense' (one full forward per copy).
      compute_dtype: jnp.float32 or jnp.bfloat16 (fp32 accumulation).
      chunk: occluded copies per device call (rounded up to the device count).
      fill: value written into the occluded pixels.
      switch_fraction: see ``incremental_plan.make_plan``.

    Returns:
      (clean logits (K,), occluded logits (V, K)), float32 numpy arrays.
    """
    image = np.asarray(image, np.float32)
    if image.ndim != 3 or tuple(image.shape[:2]) != tuple(arch.input_hw):
        raise ValueError(f"image must be (H, W, C) with (H, W) = arch.input_hw {arch.input_hw}, got {image.shape}")
    if method not in ("incremental", "dense"):
        raise ValueError(f"method must be 'incremental' or 'dense', got {method!r}")
    ndev = jax.device_count()
    clean_fn, chunk_fn, rep = _compiled(arch, int(patch_size), method, jnp.dtype(compute_dtype).name,
                                        float(fill), float(switch_fraction), ndev)
    boxes = patch_boxes(patch_xy, int(patch_size), arch.input_hw)
    n = boxes.shape[0]
    chunk = -(-max(1, min(chunk, n)) // ndev) * ndev
    pad = -n % chunk
    boxes = np.concatenate([boxes, np.repeat(boxes[-1:], pad, 0)]) if pad else boxes
    params, image = jax.device_put((params, jnp.asarray(image)), rep)
    acts, clean_logits = clean_fn(params, image)
    outs = [chunk_fn(params, acts, image, boxes[s:s + chunk]) for s in range(0, boxes.shape[0], chunk)]
    return np.asarray(clean_logits), np.concatenate([np.asarray(o) for o in outs])[:n]


def _score(logits, target, score):
    if score == "prob":
        return jax.nn.softmax(jnp.asarray(logits, jnp.float32), axis=-1)[..., target]
    if score == "logit":
        return jnp.asarray(logits, jnp.float32)[..., target]
    raise ValueError(f"score must be 'prob' or 'logit', got {score!r}")


def incremental_drops(params, arch: VGGArch, image, patch_xy, patch_size: int = 15, target=None,
                      score: str = "prob", **kwargs):
    """Eq. 1 per vertex: score(clean) - score(occluded), computed incrementally.

    Args:
      params, arch, image, patch_xy, patch_size: as for ``occluded_logits``.
      target: class index; None takes the clean image's argmax.
      score: 'prob' (softmax, fp32) or 'logit'.
      **kwargs: ``method``, ``compute_dtype``, ``chunk``, ``fill``, ``switch_fraction``.

    Returns:
      (drops (V,) float32 numpy, target int) -- the engine's ``occlusion_drops`` contract.
    """
    clean, occluded = occluded_logits(params, arch, image, patch_xy, patch_size, **kwargs)
    target = int(np.argmax(clean)) if target is None else int(target)
    if not 0 <= target < clean.shape[-1]:
        raise ValueError(f"target {target} is outside the model's {clean.shape[-1]} classes")
    drops = _score(clean, target, score) - _score(occluded, target, score)
    return np.asarray(drops, np.float32), target


def dense_drops(params, arch: VGGArch, image, patch_xy, patch_size: int = 15, target=None, score="prob", **kwargs):
    """Eq. 1 with one full forward pass per occluded copy (the reference)."""
    return incremental_drops(params, arch, image, patch_xy, patch_size, target, score, method="dense", **kwargs)


def from_face_model(model, blocks=(2, 2, 3, 3, 3)):
    """(plain params, VGGArch) of a VGG ``FaceModel`` (``cms_jax.models.vgg``: pure-dict NNX params).

    Raises:
      ValueError: the model is not a VGG of this shape (lists every mismatched weight).
    """
    arch = VGGArch(tuple(blocks), tuple(model.input_size))
    return vgg_params(model.params, arch), arch


def cast_kernels(params, dtype):
    """Kernels to ``dtype``, biases kept fp32: pre-cast once so bf16 calls skip the per-call cast."""
    return {k: {"kernel": jnp.asarray(v["kernel"], dtype), "bias": jnp.asarray(v["bias"], jnp.float32)}
            for k, v in params.items()}


def pearson(a, b) -> float:
    """Pearson correlation of two vectors (1.0 when both are constant and equal)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float(np.allclose(a, b))


def bf16_fidelity(params, arch: VGGArch, images, patch_xys, patch_size: int = 15, score="prob",
                  method="incremental", **kwargs) -> np.ndarray:
    """Pearson correlation of bf16 against fp32 drops, one value per face.

    The target is fixed by the fp32 pass, so both precisions score the same class.

    Returns:
      (F,) float64 correlations.
    """
    out = []
    for image, xy in zip(images, patch_xys):
        d32, t = incremental_drops(params, arch, image, xy, patch_size, None, score, method=method, **kwargs)
        d16, _ = incremental_drops(params, arch, image, xy, patch_size, t, score, method=method,
                                   compute_dtype=jnp.bfloat16, **kwargs)
        out.append(pearson(d32, d16))
    return np.asarray(out)
