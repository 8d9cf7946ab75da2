"""The scoring methods the throughput benchmark times: the engine's four paths and the paper's.

Every method computes Eq. 1's drops for one face at many vertices with the official square
(Eqs. 2-3): the one occlusion engine (`cms_jax.engine.OcclusionEngine`) dense or incremental, in
float32 or bfloat16, and the official code's procedure (PyTorch, one occluded copy per vertex,
DataLoader batches of 16, softmax), whose drops must equal the engine's fp32 drops.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cms_jax.bench.measure import xla_flops
from cms_jax.engine import OcclusionEngine

# method -> (engine forward, dtype)
JAX_METHODS = {"dense_fp32": ("dense", "float32"), "dense_bf16": ("dense", "bfloat16"),
               "incremental": ("incremental", "float32"), "incremental_bf16": ("incremental", "bfloat16")}


def engine(model, method: str, batch: int, patch_size: int) -> OcclusionEngine:
    """The occlusion engine of one JAX method (one face per call, squares of ``patch_size``)."""
    forward, dtype = JAX_METHODS[method]
    return OcclusionEngine(model, batch_size=batch, images_per_block=1, forward=forward, dtype=dtype,
                           patch_size=patch_size)


def incremental_flops(eng: OcclusionEngine, model, batch: int, patch_size: int) -> float:
    """FLOPs of one occluded copy on the incremental path: XLA cost analysis of a lowered batch."""
    shape = (*model.input_size, model.channels)
    inc = eng.strategy.plan(shape, patch_size)[0]
    params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), eng.strategy._params)
    dtype = eng.strategy.dtype
    stack = jax.eval_shape(inc.clean, params, jax.ShapeDtypeStruct((1,) + shape, dtype))[1]
    return xla_flops(jax.jit(inc.items).lower(params, stack, jax.ShapeDtypeStruct((batch,), jnp.int32),
                                              jax.ShapeDtypeStruct((batch, 4), jnp.int32),
                                              jax.ShapeDtypeStruct((), dtype))) / batch


def torch_reference_drops(model, image, xy, patch_size, target, device):
    """The official procedure: one occluded copy per vertex, DataLoader batches of 16, softmax.

    Args:
      model: a torch module (NCHW), e.g. `converters.torchvision_vgg.to_torch` of the JAX weights.
      image: (H, W, C) float32 preprocessed input.
      xy: (V, 2) square centres, pixels.
      patch_size: square side, pixels.
      target: class to score; None = the clean prediction.
      device: torch device name.

    Returns:
      (V,) float32 drops, clean probability minus occluded probability (Eq. 1).
    """
    import torch

    class Occluded(torch.utils.data.Dataset):
        def __len__(self):
            return len(xy)

        def __getitem__(self, i):
            x, y = xy[i]
            x1, y1 = max(0, int(np.floor(x - patch_size / 2))), max(0, int(np.floor(y - patch_size / 2)))
            copy = image.copy()
            copy[y1:y1 + patch_size, x1:x1 + patch_size] = 0.0
            return torch.from_numpy(copy.transpose(2, 0, 1).copy())

    probs = []
    with torch.no_grad():
        clean = torch.softmax(model(torch.from_numpy(image.transpose(2, 0, 1).copy())[None].to(device)), 1)[0]
        target = int(torch.argmax(clean)) if target is None else target
        clean = clean[target]
        for batch in torch.utils.data.DataLoader(Occluded(), batch_size=16, shuffle=False):
            probs.append(torch.softmax(model(batch.to(device)), 1)[:, target].cpu())
    return (clean.cpu() - torch.cat(probs)).numpy()
