"""Batched, data-parallel occlusion engine: Algorithm 1 lines 5-10 for many images.

Every (image, vertex) pair is one work item.  Items of several images share a
device batch of fixed size (so a small model still fills every device and no
shape ever changes between calls), the batch is sharded over the ``data`` axis
of a named mesh and the model parameters are replicated jit arguments.  Each
item's square comes from `occlusion.square_bounds` (Eqs. 2-3); a forward
strategy (`cms_jax.forward`: dense, or exact incremental) scores it in float32
or bfloat16, and its drop S_v (Eq. 1) is formed on the host.  Memory is
bounded by the batch and the image block size, whatever V or N.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np

from cms_jax import forward as fwd
from cms_jax import occlusion as occ
from cms_jax import sharding as shd
from cms_jax import work_items as wi
from cms_jax.compile_options import engine_options


@dataclasses.dataclass(frozen=True)
class EngineResult:
    """Output of :meth:`OcclusionEngine.run`.

    Attributes:
        drops: (N, V) float32 drops S_v (Eq. 1); 0 where ``valid`` is False. (N, V, R) with
            R references per image.
        targets: (N,) int32 class c scored for each image (0 for embeddings).
        clean: (N,) float32 phi(I, c) of the unoccluded images; (N, R) with R references.
        valid: (N, V) bool, the vertices that were scored.
    """
    drops: np.ndarray
    targets: np.ndarray
    clean: np.ndarray
    valid: np.ndarray


def _as_model(model: Any) -> tuple[Callable, Any, bool, str, bool, str]:
    """(apply_fn, params, outputs_are_probs, output, jittable, name) of a FaceModel or callable."""
    if hasattr(model, "apply_fn") and hasattr(model, "params"):
        return (model.apply_fn, model.params, bool(getattr(model, "outputs_are_probs", False)),
                getattr(model, "output", "classes"), bool(getattr(model, "jittable", True)),
                str(getattr(model, "name", type(model).__name__)))
    if callable(model):
        return ((lambda params, x: model(x)), {}, False, "classes", True,
                getattr(model, "__name__", type(model).__name__))
    raise TypeError(f"model must be a FaceModel-like object (.apply_fn, .params) or a callable "
                    f"batch -> (B, K) scores, got {type(model).__name__}")


class OcclusionEngine:
    """Scores occlusion drops for batches of images on all devices of a mesh.

    Example::

        eng = OcclusionEngine(model, batch_size=64, forward="incremental", dtype="bfloat16")
        res = eng.run(images, vertices_xy, valid=visible)   # res.drops (N, V)
    """

    def __init__(self, model: Any, *, score: str = "prob", batch_size: int = 64,
                 images_per_block: int = 16, mesh: jax.sharding.Mesh | None = None,
                 forward: str = "dense", dtype: str = "float32", patch_size: int = 0,
                 approx_tau: float = 1.0):
        """Builds the engine.

        Args:
            model: a FaceModel-like object (``apply_fn(params, x)``, ``params``,
                optional ``outputs_are_probs``, ``output``, ``jittable``, ``name``,
                ``input_size``, ``channels``) or a plain callable mapping
                (B, H, W, C) to (B, K) scores.
            score: 'prob' or 'logit' (see :func:`cms_jax.occlusion.score_mode`).
            batch_size: work items per device batch (all devices together);
                rounded up to a multiple of the device count.
            images_per_block: images whose items are scored together; their
                inputs (or clean stack) are replicated on every device, so this
                bounds memory. The incremental forward lowers it to keep the
                clean stack under ~1 GiB.
            mesh: a mesh from :func:`cms_jax.sharding.data_mesh` (default: this
                process's local devices).
            forward: 'dense' (every occluded copy through the whole model) or
                'incremental' (exact incremental inference, `cms_jax.forward`).
            dtype: 'float32' or 'bfloat16' (weights and images cast once;
                confidences always in float32).
            patch_size: default square side of :meth:`run` in input pixels (0: 15 px
                at 224, scaled). With 'incremental' and a model that has ``input_size``
                and ``channels``, its plan is built here, so a black box is
                refused at once.
            approx_tau: 1.0 (exact), or in (0, 1) approximate incremental inference
                (`cms_jax.incremental.Incremental`'s ``approx_tau``); 'incremental' only.
        """
        apply, params, probs, output, jittable, name = _as_model(model)
        if forward not in fwd.FORWARDS:
            raise ValueError(f"forward must be one of {sorted(fwd.FORWARDS)}, got {forward!r}")
        if dtype not in fwd.DTYPES:
            raise ValueError(f"dtype must be one of {sorted(fwd.DTYPES)}, got {dtype!r}")
        mode = occ.score_mode(score, probs, output)
        self.mode, self.output = mode, output
        self._apply, self._params, self._jittable = apply, params, jittable
        self.mesh = mesh if mesh is not None else shd.data_mesh()
        ndev = shd.num_shards(self.mesh)
        if batch_size < 1 or images_per_block < 1:
            raise ValueError(f"batch_size and images_per_block must be >= 1, got "
                             f"{batch_size} and {images_per_block}")
        self.batch_size = shd.round_up(batch_size, ndev)
        self.batch_sizes = wi.ladder(self.batch_size, ndev)  # the last batches of a block (`work_items`)
        self.item_counts = wi.ItemCounts()
        self.block = shd.round_up(images_per_block, ndev)
        self.patch_size, self.dtype = patch_size, dtype
        self.strategy = fwd.FORWARDS[forward](fwd.Model(apply, params, mode, jittable, name), self.mesh, dtype,
                                             approx_tau)
        size, ch = getattr(model, "input_size", None), getattr(model, "channels", None)
        if forward == "incremental" and size is not None and ch is not None:
            self.strategy.plan((*size, ch), occ.check_patch_size(patch_size, size[0]))

    @property
    def trace_count(self) -> int:
        """Traces of the forward's jitted calls so far; tests assert no retrace across calls."""
        return self.strategy.trace_count

    def run(self, images: np.ndarray, vertices_xy: np.ndarray, *, valid: np.ndarray | None = None,
            targets: np.ndarray | None = None, patch_size: int = 0,
            fill: float | np.ndarray = 0.0) -> EngineResult:
        """Occlusion drops of every valid vertex of every image.

        Args:
            images: (N, H, W, C) float32 preprocessed model inputs.
            vertices_xy: (N, V, 2) or shared (V, 2) positions in input pixels.
            valid: (N, V) or (V,) bool; False vertices (e.g. invisible) are skipped.
            targets: (N,) class per image; default the predicted class. For an
                embedding model, (N, D) reference embeddings; default each
                image's own clean embedding (self-cosine); or (N, R, D): R
                references per image, scored from the same occluded copies
                (drops (N, V, R), clean (N, R); zero rows are padding).
            patch_size: occlusion side in input pixels; 0: the engine's, and if
                that is 0 too, 15 px at 224 scaled with H.
            fill: value written into the occluded square, or (N, H, W, C) fill images, one per image,
                whose pixels the square takes (a blur fill, `occlusion.blurred`; dense forward only).

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
        sz = occ.check_patch_size(patch_size or self.patch_size, h)
        fills = None
        if np.ndim(fill) != 0:
            fills = np.asarray(fill, np.float32)
            if fills.shape != images.shape:
                raise ValueError(f"fill must be one value or fill images of the images' shape {images.shape}, "
                                 f"got shape {fills.shape}")
        if self.mode == "cosine":
            tgt_in = self.embed(images) if targets is None else np.asarray(targets, np.float32)
            if tgt_in.ndim not in (2, 3) or tgt_in.shape[0] != n:
                raise ValueError(f"an embedding model's targets are (N, D) or (N, R, D) reference embeddings "
                                 f"with N={n}, got shape {tgt_in.shape}")
        else:
            if targets is None and self.output == "regression":
                raise ValueError("a regression model has no predicted class: give targets, the index of the "
                                 "output to score (the main job's --target)")
            tgt_in = np.full(n, -1, np.int32) if targets is None else np.asarray(targets, np.int32).reshape(n)
        if targets is not None and self.mode != "cosine":
            k = self.strategy.num_outputs(images.shape[1:])
            if (tgt_in < 0).any() or (tgt_in >= k).any():
                raise ValueError(f"targets must be class indices in [0, {k}), got {tgt_in.tolist()}")
        refs = tgt_in.shape[1:-1] if self.mode == "cosine" else ()  # (R,) with several references per image
        drops = np.zeros((n, v) + refs, np.float32)
        out_tgt, out_clean = np.zeros(n, np.int32), np.zeros((n,) + refs, np.float32)
        g = self.strategy.block_size(self.block, images.shape[1:], sz)
        for g0 in range(0, n, g):
            m = min(g, n - g0)
            carry, c_phi, c_cls = self.strategy.clean_block(shd.pad_to(images[g0:g0 + m], g),
                                                     shd.pad_to(tgt_in[g0:g0 + m], g, -1), sz)
            out_clean[g0:g0 + m] = np.asarray(c_phi)[:m]
            out_tgt[g0:g0 + m] = np.asarray(c_cls)[:m]
            block_fill = fill if fills is None else self.strategy.fill_block(shd.pad_to(fills[g0:g0 + m], g))
            ii, vv = np.nonzero(ok[g0:g0 + m])
            boxes = np.concatenate([occ.square_bounds(xy[g0 + i], sz, (h, w)) for i in range(m)])
            boxes = boxes.reshape(m, v, 4)[ii, vv]
            keep, inverse = wi.unique_items(ii, boxes)  # each distinct (image, square) scored once
            ui, ub = ii[keep].astype(np.int32), boxes[keep]
            item_tgt = tgt_in[g0 + ui] if self.mode == "cosine" else out_tgt[g0 + ui]
            plan = wi.batch_plan(len(ui), self.batch_sizes)
            self.item_counts.add(len(ii), len(ui), sum(p.size for p in plan))
            pending = []
            for p in plan:  # dispatch all batches, then fetch (async pipeline)
                s, e = p.start, p.end
                phi, _ = self.strategy.step(carry, shd.pad_to(ui[s:e], p.size), shd.pad_to(ub[s:e], p.size),
                                           shd.pad_to(item_tgt[s:e], p.size), block_fill)
                pending.append((s, e, phi))
            scored = np.zeros((len(ui),) + refs, np.float32)
            for s, e, phi in pending:
                scored[s:e] = occ.drops_from_confidences(out_clean[g0 + ui[s:e]], np.asarray(phi)[:e - s])
            drops[g0 + ii, vv] = scored[inverse]
        return EngineResult(drops=drops, targets=out_tgt, clean=out_clean, valid=np.array(ok))

    def embed(self, images: np.ndarray) -> np.ndarray:
        """(N, K) float32 raw outputs of the clean images (an embedding model's own embeddings)."""
        images = np.asarray(images, np.float32)
        if not self._jittable:
            return np.asarray(self._apply(self._params, images), np.float32)
        if not hasattr(self, "_embed"):
            rep, dat = shd.replicated(self.mesh), shd.data_sharding(self.mesh)
            self._embed = jax.jit(self._apply, in_shardings=(rep, dat), out_shardings=dat,
                                  compiler_options=engine_options(self.mesh))
            self._embed_params = shd.replicate(self._params, self.mesh)
        out = []
        for s in range(0, len(images), self.block):
            chunk = images[s:s + self.block]
            padded = shd.pad_to(chunk, self.block)  # one shape: no retrace
            out.append(np.asarray(self._embed(self._embed_params, padded), np.float32)[:len(chunk)])
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


# Engines hold compiled steps; the model object is kept alive beside its engine
# so that its id() cannot be reused by another model while cached.
_ENGINES: dict[tuple, tuple[Any, OcclusionEngine]] = {}


def occlusion_drops(score_fn: Any, image: np.ndarray, vertices_xy: np.ndarray, *,
                    patch_size: int = 0, target: int | None = None, score: str = "prob",
                    fill: float = 0.0, valid: np.ndarray | None = None,
                    batch_size: int = 64) -> tuple[np.ndarray, int]:
    """Eq. 1 for one image: the drop in confidence when each vertex is occluded.

    Args:
        score_fn: a callable (B, H, W, C) -> (B, K) or a FaceModel.
        image: (H, W, C) float32 preprocessed model input.
        vertices_xy: (V, 2) positions (x = column, y = row) in input pixels.
        patch_size: occlusion side in input pixels; 0: 15 px at 224 px, scaled with H.
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
                                                   images_per_block=1))
    eng = _ENGINES[key][1]
    res = eng.run(image[None], vertices_xy, valid=valid, patch_size=patch_size, fill=fill,
                  targets=None if target is None else [target])
    return res.drops[0], int(res.targets[0])
