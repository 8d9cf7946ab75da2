"""Batched, data-parallel occlusion engine: Algorithm 1 lines 5-10 for many images.

Every (image, vertex) pair is one work item.  Items of several images share a
device batch of fixed size (so a small model still fills every device and no
shape ever changes between calls), the batch is sharded over the ``data`` axis
of a named mesh and the model parameters are replicated jit arguments.  Each
item is occluded on the device (Eqs. 2-3) from a replicated slab of the
group's images, scored, and its drop S_v (Eq. 1) formed on the host.
Memory is bounded by the batch and the group size, whatever V or N.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from cms_jax import occlusion as occ
from cms_jax import sharding as shd


@dataclasses.dataclass(frozen=True)
class EngineResult:
    """Output of :meth:`OcclusionEngine.run`.

    Attributes:
        drops: (N, V) float32 drops S_v (Eq. 1); 0 where ``valid`` is False.
        targets: (N,) int32 class c scored for each image.
        clean: (N,) float32 phi(I, c) of the unoccluded images.
        valid: (N, V) bool, the vertices that were scored.
    """
    drops: np.ndarray
    targets: np.ndarray
    clean: np.ndarray
    valid: np.ndarray


def _as_model(model: Any) -> tuple[Callable, Any, bool, str, bool]:
    """(apply_fn, params, outputs_are_probs, output, jittable) of a FaceModel or callable."""
    if hasattr(model, "apply_fn") and hasattr(model, "params"):
        return (model.apply_fn, model.params, bool(getattr(model, "outputs_are_probs", False)),
                getattr(model, "output", "classes"), bool(getattr(model, "jittable", True)))
    if callable(model):
        return (lambda params, x: model(x)), {}, False, "classes", True
    raise TypeError(f"model must be a FaceModel-like object (.apply_fn, .params) or a callable "
                    f"batch -> (B, K) scores, got {type(model).__name__}")


class OcclusionEngine:
    """Scores occlusion drops for batches of images on all devices of a mesh.

    Example::

        eng = OcclusionEngine(model, batch_size=64)
        res = eng.run(images, vertices_xy, valid=visible)   # res.drops (N, V)
    """

    def __init__(self, model: Any, *, score: str = "prob", batch_size: int = 64,
                 images_per_group: int = 16, mesh: jax.sharding.Mesh | None = None):
        """Builds the engine.

        Args:
            model: a FaceModel-like object (``apply_fn(params, x)``, ``params``,
                optional ``outputs_are_probs``, ``output``, ``jittable``) or a
                plain callable mapping (B, H, W, C) to (B, K) scores.
            score: 'prob' or 'logit' (see :func:`cms_jax.occlusion.score_mode`).
            batch_size: work items per device batch (all devices together);
                rounded up to a multiple of the device count.
            images_per_group: images whose items are scored together; their
                inputs are replicated on every device, so this bounds memory.
            mesh: a mesh from :func:`cms_jax.sharding.data_mesh` (default: all devices).
        """
        self._apply, params, probs, output, self._jittable = _as_model(model)
        self._mode = occ.score_mode(score, probs, output)
        self.mesh = mesh if mesh is not None else shd.data_mesh()
        ndev = shd.num_shards(self.mesh)
        if batch_size < 1 or images_per_group < 1:
            raise ValueError(f"batch_size and images_per_group must be >= 1, got "
                             f"{batch_size} and {images_per_group}")
        self.batch_size = shd.round_up(batch_size, ndev)
        self.group = shd.round_up(images_per_group, ndev)
        self.trace_count = 0  # incremented at trace time; tests assert no retrace
        rep, dat = shd.replicated(self.mesh), shd.data_sharding(self.mesh)
        if self._jittable:
            self._params = shd.replicate(params, self.mesh)
            self._step = jax.jit(self._step_impl, in_shardings=(rep, rep, dat, dat, dat, rep),
                                 out_shardings=(dat, dat))
        else:  # black box that cannot be traced: occlude on device, score on the host
            self._params = params
            self._occlude = jax.jit(lambda slab, idx, box, fill: occ.occlude_batch(slab[idx], box, fill))

    def _step_impl(self, params, slab, idx, box, target, fill):
        """One device batch: gather, occlude (vmap), score -> (phi (B,), class (B,))."""
        self.trace_count += 1
        x = occ.occlude_batch(slab[idx], box, fill)
        conf = occ.confidences(self._apply(params, x), self._mode)
        return occ.target_confidence(conf, target)

    def _score(self, slab, idx, box, target, fill):
        if self._jittable:
            return self._step(self._params, slab, idx, box, target, fill)
        x = self._occlude(slab, idx, box, fill)
        raw = np.asarray(self._apply(self._params, np.asarray(x)))
        conf = occ.confidences(jnp.asarray(raw), self._mode)
        return occ.target_confidence(conf, jnp.asarray(target))

    def run(self, images: np.ndarray, vertices_xy: np.ndarray, *, valid: np.ndarray | None = None,
            targets: np.ndarray | None = None, patch_size: int | None = None,
            fill: float = 0.0) -> EngineResult:
        """Occlusion drops of every valid vertex of every image.

        Args:
            images: (N, H, W, C) float32 preprocessed model inputs.
            vertices_xy: (N, V, 2) or shared (V, 2) positions in input pixels.
            valid: (N, V) or (V,) bool; False vertices (e.g. invisible) are skipped.
            targets: (N,) class per image; default the predicted class.
            patch_size: occlusion side in pixels; default scales with H (15 at 224).
            fill: value written into the occluded square.

        Returns:
            An :class:`EngineResult`.
        """
        images = np.asarray(images, np.float32)
        if images.ndim != 4:
            raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}")
        n, h, w, _ = images.shape
        xy = np.asarray(vertices_xy, np.float64)
        if xy.ndim == 2:
            xy = np.broadcast_to(xy, (n,) + xy.shape)
        if xy.ndim != 3 or xy.shape[0] != n or xy.shape[2] != 2:
            raise ValueError(f"vertices_xy must be (N, V, 2) or (V, 2) with N={n}, got {np.shape(vertices_xy)}")
        v = xy.shape[1]
        ok = np.ones((n, v), bool) if valid is None else np.broadcast_to(np.asarray(valid, bool), (n, v))
        bad = ok & ~np.isfinite(xy).all(axis=2)
        if bad.any():
            raise ValueError(f"vertices_xy has {int(bad.sum())} non-finite valid vertices; mark them "
                             f"invalid with `valid`")
        sz = occ.check_patch_size(patch_size, h)
        tgt_in = np.full(n, -1, np.int32) if targets is None else np.asarray(targets, np.int32).reshape(n)
        if targets is not None:
            k = (jax.eval_shape(self._apply, self._params, jax.ShapeDtypeStruct(
                (1,) + images.shape[1:], jnp.float32)).shape[-1] if self._jittable else np.inf)
            if (tgt_in < 0).any() or (tgt_in >= k).any():
                raise ValueError(f"targets must be class indices in [0, {k}), got {tgt_in.tolist()}")
        fill_arr = np.float32(fill)
        drops = np.zeros((n, v), np.float32)
        out_tgt, out_clean = np.zeros(n, np.int32), np.zeros(n, np.float32)
        g, b = self.group, self.batch_size
        for g0 in range(0, n, g):
            m = min(g, n - g0)
            slab = jax.device_put(shd.pad_to(images[g0:g0 + m], g), shd.replicated(self.mesh))
            # Clean pass: empty boxes, one item per image of the group.
            c_phi, c_cls = self._score(slab, np.arange(g, dtype=np.int32), np.zeros((g, 4), np.int32),
                                       shd.pad_to(tgt_in[g0:g0 + m], g, -1), fill_arr)
            out_clean[g0:g0 + m] = np.asarray(c_phi)[:m]
            out_tgt[g0:g0 + m] = np.asarray(c_cls)[:m]
            ii, vv = np.nonzero(ok[g0:g0 + m])
            boxes = np.concatenate([occ.square_bounds(xy[g0 + i], sz, (h, w)) for i in range(m)])
            boxes = boxes.reshape(m, v, 4)[ii, vv]
            item_tgt = out_tgt[g0 + ii]
            pending = []
            for s in range(0, len(ii), b):  # dispatch all batches, then fetch (async pipeline)
                e = min(s + b, len(ii))
                phi, _ = self._score(slab, shd.pad_to(ii[s:e].astype(np.int32), b),
                                     shd.pad_to(boxes[s:e], b), shd.pad_to(item_tgt[s:e], b), fill_arr)
                pending.append((s, e, phi))
            for s, e, phi in pending:
                drops[g0 + ii[s:e], vv[s:e]] = occ.drops_from_confidences(
                    out_clean[g0 + ii[s:e]], np.asarray(phi)[:e - s])
        return EngineResult(drops=drops, targets=out_tgt, clean=out_clean, valid=np.array(ok))


# Engines hold compiled steps; the model object is kept alive beside its engine
# so that its id() cannot be reused by another model while cached.
_ENGINES: dict[tuple, tuple[Any, OcclusionEngine]] = {}


def occlusion_drops(score_fn: Any, image: np.ndarray, vertices_xy: np.ndarray, *,
                    patch_size: int | None = None, target: int | None = None, score: str = "prob",
                    fill: float = 0.0, valid: np.ndarray | None = None,
                    batch_size: int = 64) -> tuple[np.ndarray, int]:
    """Eq. 1 for one image: the drop in confidence when each vertex is occluded.

    Args:
        score_fn: a callable (B, H, W, C) -> (B, K) or a FaceModel.
        image: (H, W, C) float32 preprocessed model input.
        vertices_xy: (V, 2) positions (x = column, y = row) in input pixels.
        patch_size: occlusion side; default 15 px at 224 px, scaled with H.
        target: class to score; default the predicted class.
        score: 'prob' (softmax) or 'logit' (raw value, the official code).
        fill: value of the occluded pixels (0 in the normalised input).
        valid: optional (V,) bool; invalid vertices get drop 0.
        batch_size: work items per device batch.

    Returns:
        ``(drops, target)``: (V,) float32 drops and the class scored.
    """
    image = np.asarray(image, np.float32)
    if image.ndim != 3:
        raise ValueError(f"image must be (H, W, C), got shape {image.shape}")
    key = (id(score_fn), score, batch_size)
    if key not in _ENGINES:
        if len(_ENGINES) >= 8:
            _ENGINES.pop(next(iter(_ENGINES)))
        _ENGINES[key] = (score_fn, OcclusionEngine(score_fn, score=score, batch_size=batch_size,
                                                   images_per_group=1))
    eng = _ENGINES[key][1]
    res = eng.run(image[None], vertices_xy, valid=valid, patch_size=patch_size, fill=fill,
                  targets=None if target is None else [target])
    return res.drops[0], int(res.targets[0])
