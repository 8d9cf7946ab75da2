"""Forward strategies of the occlusion engine: how phi(I ⊙ B_v, c) of Eq. 1 is computed.

Both strategies score the same work items -- (image of the block, square from
`occlusion.square_bounds`) -- with the one confidence rule
(`occlusion.phi`), on the engine's
``data`` mesh:

* `DenseForward`: every occluded copy ``I ⊙ B`` (Eqs. 2-3, `occlusion.occlude_batch`)
  runs through the whole model.
* `IncrementalForward`: the block's clean activations are computed once
  (`cms_jax.incremental.Incremental.clean`), and each copy recomputes only the
  window its square reaches (``Incremental.items``); same outputs up to float
  rounding, far fewer FLOPs.

Each strategy has two calls: ``clean_block(images, targets, patch)`` places a block of
images on the mesh and scores them clean, returning ``(carry, phi, class)``;
``step(carry, idx, boxes, targets, fill)`` scores one device batch of copies.
With ``dtype='bfloat16'`` floating weights are cast once and images are cast
on placement; outputs go back to float32 before the confidence.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from cms_jax import occlusion as occ
from cms_jax.compile_options import engine_options
from cms_jax import sharding as shd

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
STACK_BUDGET_BYTES = 1 << 30  # clean stack of one image block, replicated on every device


def cast_floats(tree: Any, dtype) -> Any:
    """Casts the floating leaves of a pytree (model weights) to ``dtype``; other leaves unchanged."""
    def cast(a):
        a = jnp.asarray(a)
        return a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a
    return jax.tree.map(cast, tree)


def _num_outputs(apply: Callable, params: Any, image_shape, dtype) -> int:
    """K, the output width of ``apply`` on one image of ``image_shape`` (abstract evaluation)."""
    return jax.eval_shape(apply, params, jax.ShapeDtypeStruct((1,) + tuple(image_shape), dtype)).shape[-1]


@dataclasses.dataclass(frozen=True)
class Model:
    """What a strategy needs of a model: ``apply(params, x)``, its weights and how to read its outputs."""
    apply: Callable
    params: Any
    mode: str       # 'softmax' | 'raw' | 'cosine' (`occlusion.score_mode`)
    jittable: bool
    name: str


def _occluded(slab, idx, box, fill):
    """The copies ``slab[idx]`` with their squares set to ``fill``: a value, or (G, H, W, C) fill images."""
    if jnp.ndim(fill) == 4:
        return occ.occlude_batch_images(slab[idx], box, fill[idx])
    return occ.occlude_batch(slab[idx], box, fill)


class DenseForward:
    """Every occluded copy runs through the whole model (the paper's procedure, batched)."""

    name = "dense"

    def __init__(self, model: Model, mesh, dtype: str, approx_tau: float = 1.0):
        if approx_tau != 1.0:
            raise ValueError(f"approx_tau={approx_tau} approximates incremental inference; the dense forward "
                             f"is always exact (model {model.name!r}): use forward='incremental' or approx_tau=1")
        self.model, self.mesh, self.dtype = model, mesh, DTYPES[dtype]
        self.trace_count = 0
        rep, dat = shd.replicated(mesh), shd.data_sharding(mesh)
        if model.jittable:
            params = model.params if dtype == "float32" else cast_floats(model.params, self.dtype)
            self._params = shd.replicate(params, mesh)
            self._step = jax.jit(self._step_impl, in_shardings=(rep, rep, dat, dat, dat, rep),
                                 out_shardings=(dat, dat), compiler_options=engine_options(mesh))
        else:  # cannot be traced: occlude on the device, run the model on the host (float32 input)
            self._params = model.params
            self._occlude = jax.jit(lambda slab, idx, box, fill: _occluded(slab, idx, box, fill))

    def _step_impl(self, params, slab, idx, box, target, fill):
        """One device batch: gather, occlude (vmap), score -> (phi (B,), class (B,))."""
        self.trace_count += 1
        x = _occluded(slab, idx, box, fill)
        return occ.phi(self.model.apply(params, x), self.model.mode, target)

    def fill_block(self, fills: np.ndarray):
        """A block's fill images (G, H, W, C), replicated like its slab (a blur fill)."""
        return jax.device_put(np.asarray(fills).astype(self.dtype), shd.replicated(self.mesh))

    def num_outputs(self, image_shape) -> float:
        """K, the model's output width (inf when it cannot be traced)."""
        if not self.model.jittable:
            return np.inf
        return _num_outputs(self.model.apply, self._params, image_shape, self.dtype)

    def block_size(self, requested: int, image_shape, patch: int) -> int:
        """Images per block: as requested (the slab is small next to the weights)."""
        return requested

    def clean_block(self, images: np.ndarray, targets: np.ndarray, patch: int):
        """Replicates the block's images; clean pass = copies with empty squares."""
        slab = jax.device_put(images.astype(self.dtype), shd.replicated(self.mesh))
        g = len(images)
        c_phi, c_cls = self.step(slab, np.arange(g, dtype=np.int32), np.zeros((g, 4), np.int32), targets, 0.0)
        return slab, c_phi, c_cls

    def step(self, slab, idx, boxes, targets, fill):
        """phi and class of one device batch of copies ``slab[idx] ⊙ B(boxes)``; ``fill`` a value, or
        the block's fill images from `fill_block` (each copy's square from its own image's)."""
        fill = fill if np.ndim(fill) == 4 else np.asarray(fill, self.dtype)
        if self.model.jittable:
            return self._step(self._params, slab, idx, boxes, targets, fill)
        x = np.asarray(self._occlude(slab, idx, boxes, fill), np.float32)
        raw = jnp.asarray(np.asarray(self.model.apply(self._params, x), np.float32))
        return occ.phi(raw, self.model.mode, jnp.asarray(targets))


class IncrementalForward:
    """Exact incremental inference: one clean pass per image block, windows per copy.

    One `cms_jax.incremental.Incremental` (and its two jitted calls) is kept per
    (input shape, square side). The clean stack is replicated on the mesh; the
    block size is lowered so it stays under `STACK_BUDGET_BYTES`.
    """

    name = "incremental"

    def __init__(self, model: Model, mesh, dtype: str, approx_tau: float = 1.0):
        if not model.jittable:
            raise ValueError(f"forward='incremental' cannot score model {model.name!r}: it cannot be traced "
                             f"(a black box). Drop --incremental to score it densely.")
        self.model, self.mesh, self.dtype = model, mesh, DTYPES[dtype]
        self.approx_tau = float(approx_tau)
        self.trace_count = 0
        self._params = shd.replicate(cast_floats(model.params, self.dtype), mesh)
        self._plans: dict[tuple, tuple] = {}

    def plan(self, image_shape, patch: int):
        """(Incremental, jitted clean, jitted step, stack bytes per image) for this shape and side, cached."""
        key = (tuple(image_shape), int(patch))
        if key not in self._plans:
            from cms_jax.incremental import Incremental
            try:
                inc = Incremental(self.model.apply, self._params, key[0], key[1], dtype=self.dtype,
                                  approx_tau=self.approx_tau)
            except ValueError as e:
                raise ValueError(f"forward='incremental' cannot score model {self.model.name!r}: {e} "
                                 f"Drop --incremental to score it densely.") from None
            rep, dat = shd.replicated(self.mesh), shd.data_sharding(self.mesh)
            mode = self.model.mode

            def clean(params, images, target):
                self.trace_count += 1
                out, stack = inc.clean(params, images)
                return (stack,) + occ.phi(out, mode, target)

            def step(params, stack, idx, boxes, offsets, target, fill):
                self.trace_count += 1
                return occ.phi(inc.items(params, stack, idx, boxes, fill, offsets), mode, target)

            one = jax.ShapeDtypeStruct((1,) + key[0], self.dtype)
            nbytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(
                jax.eval_shape(inc.clean, self._params, one)[1]))
            opts = engine_options(self.mesh)
            self._plans[key] = (inc, jax.jit(clean, in_shardings=(rep, dat, dat), out_shardings=(rep, dat, dat),
                                             compiler_options=opts),
                                jax.jit(step, in_shardings=(rep, rep, dat, dat, dat, dat, rep),
                                        out_shardings=(dat, dat), compiler_options=opts), nbytes)
        return self._plans[key]

    def num_outputs(self, image_shape) -> int:
        """K, the model's output width."""
        return _num_outputs(self.model.apply, self._params, image_shape, self.dtype)

    def block_size(self, requested: int, image_shape, patch: int) -> int:
        """``requested`` lowered so the block's clean stack fits the budget; a multiple of the devices."""
        ndev = shd.num_shards(self.mesh)
        fits = STACK_BUDGET_BYTES // max(1, self.plan(image_shape, patch)[3])
        return max(ndev, min(requested, fits) // ndev * ndev)

    def clean_block(self, images: np.ndarray, targets: np.ndarray, patch: int):
        """Clean outputs and clean stack of the block (computed sharded, stack replicated)."""
        inc, clean, step, _ = self.plan(images.shape[1:], patch)
        stack, c_phi, c_cls = clean(self._params, images.astype(self.dtype), targets)
        return (inc, step, stack), c_phi, c_cls

    def fill_block(self, fills: np.ndarray):
        raise ValueError(f"forward='incremental' fills every square with one value; a fill image per copy "
                         f"(--fill_blur) needs the dense forward (model {self.model.name!r}): drop --incremental")

    def step(self, carry, idx, boxes, targets, fill):
        """phi and class of one device batch of copies, from the block's clean stack."""
        inc, step, stack = carry  # offsets computed once per batch, on the host (`incremental.offsets`)
        return step(self._params, stack, idx, boxes, inc.offsets(boxes), targets, np.asarray(fill, self.dtype))


FORWARDS = {"dense": DenseForward, "incremental": IncrementalForward}
