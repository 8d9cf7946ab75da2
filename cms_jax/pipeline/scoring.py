"""Device side of the job: per-vertex drops (Eqs. 1-3), CIS maps (Eqs. 4-5), CMS sum (Eq. 6).

`Scorer` owns the model, the canonical face and the occlusion engine of a
run. It turns a chunk of prepared crops into per-vertex drop vectors (the
canonical representation of each CIS), renders each CIS on the canonical
face, and adds it to the accumulator state (sum of maps and count; the CMS is
their mean, or their sum as in the official code).
"""
from __future__ import annotations

import dataclasses
import traceback

import numpy as np

from cms_jax import models
from cms_jax.accumulate import CMSAccumulator
from cms_jax.align.canonical import CanonicalFace
from cms_jax.align.visibility import visible_vertices
from cms_jax.engine import EngineResult, OcclusionEngine
from cms_jax.occlusion import default_patch_size
from cms_jax.projection import splat
from cms_jax import sharding, sources
from cms_jax.pipeline.failures import signature


@dataclasses.dataclass
class ChunkResult:
    """Drops of the images of one chunk that were scored."""

    files: list[str]
    drops: np.ndarray    # float32 (n, V)
    valid: np.ndarray    # bool (n, V)
    targets: np.ndarray  # int32 (n,)
    clean: np.ndarray    # float32 (n,) confidence of the unoccluded image


def face_canonical_side(cfg_patch: int, model, canon) -> float:
    """Side f of the square splatted on the canonical face (Algorithm 1, line 4), face-size aware.

    The paper uses f = sz * H_F / H_I (`cms_jax.projection.paper_canonical_side`), which
    assumes the face fills the input as it fills the canvas (true for its whole-image CelebA
    inputs; ``whole`` crops use it). With a crop policy that adds context, the face fills
    1 / (1 + margin) of the input, so the same facial area is f = sz * H_face_canvas / H_face_input.

    Args:
      cfg_patch: the occlusion side sz in input pixels (0: the model's default).
      model: the FaceModel (input size, crop policy and margin).
      canon: the `CanonicalFace` (canvas and vertices).
    """
    h_in = model.input_size[0]
    sz = cfg_patch or default_patch_size(h_in)
    face_canvas = float(np.ptp(canon.vertices[:, 1]))
    if model.crop_policy == "whole":
        return sz * canon.canvas_hw[0] / h_in
    face_input = h_in / (1.0 + model.crop_margin)
    return sz * face_canvas / face_input


class Scorer:
    """The model, canonical face, engine and CMS accumulator of one run.

    The engine's forward strategy and dtype come from the config
    (``cfg.incremental``, ``cfg.dtype``); a black-box model with
    ``incremental=True`` is refused here, before any image is read, while
    ``incremental='auto'`` (the main job's default) scores it densely and
    says why in ``forward_note``.
    """

    def __init__(self, cfg, model=None, canon=None, devices=None):
        self.cfg = cfg
        self.model = model or models.load(cfg.model, onnx_backend=cfg.onnx_backend)
        self.canon = canon or CanonicalFace.mediapipe(canvas=cfg.canvas, subdivision=cfg.subdivision)
        self.patch = cfg.patch_size or default_patch_size(self.model.input_size[0])
        self.f = face_canonical_side(cfg.patch_size, self.model, self.canon)
        self.mesh = sharding.data_mesh(devices)  # default: this process's local devices
        self.forward = "incremental" if cfg.incremental else "dense"
        self.forward_note = ""
        try:
            self.engine = self._engine(cfg.dtype)
        except ValueError as e:
            if cfg.incremental != "auto" or "Drop --incremental" not in str(e):
                raise
            self.forward, self.forward_note = "dense", f"incremental unavailable: {e}"
            self.engine = self._engine(cfg.dtype)
        # bfloat16 runs score their first chunk in float32 too: summary.json["bf16_fidelity"].
        self.bf16_fidelity: float | None = None
        self._fp32: OcclusionEngine | None = None
        self.group_names = sources.values(cfg.groups) if cfg.groups else ()
        self._group_of = sources.reader(cfg.groups) if cfg.groups else None  # tables read once
        self.acc = CMSAccumulator(self.canon.canvas_hw, reduce=cfg.reduce, groups=self.group_names)
        self.acc_state = self.acc.empty_state()

    def _engine(self, dtype: str) -> OcclusionEngine:
        return OcclusionEngine(self.model, score=self.cfg.score, batch_size=self.cfg.batch_size,
                               images_per_group=16, mesh=self.mesh, forward=self.forward, dtype=dtype,
                               patch_size=self.patch)

    @property
    def num_vertices(self) -> int:
        return int(self.canon.vertices.shape[0])

    @property
    def count(self) -> int:
        """Images accumulated so far."""
        return int(self.acc_state["count"])

    def state(self, next_index: int) -> dict:
        """Checkpointable state: the accumulator's sum and count, and the position in the image order."""
        return {**self.acc_state, "next_index": np.asarray(next_index, np.int64)}

    def load_state(self, state: dict) -> int:
        """Restore the accumulator from `state`; returns its ``next_index``."""
        self.acc_state = {k: np.asarray(state[k]) for k in self.acc.empty_state()}
        return int(state["next_index"])

    def coverage(self) -> np.ndarray:
        """bool (H_F, W_F): canvas pixels some vertex square reaches (N > 0 in Eq. 5)."""
        ones = np.ones(self.num_vertices, np.float32)
        return splat(ones, self.canon.vertices, self.canon.canvas_hw, self.f)[1] > 0

    def vertices(self, xy468: np.ndarray, z468: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Crop-space positions of the canonical face's vertices (subdivided like it) and their validity.

        A vertex is valid when it faces the camera (if ``cfg.visibility``) and lies inside the crop.
        """
        xy = np.asarray(self.canon.expand(xy468), np.float32)
        if self.cfg.visibility:
            z = np.asarray(self.canon.expand(z468), np.float32)
            valid = visible_vertices(xy, self.canon.triangles, z)
        else:
            valid = np.ones(len(xy), bool)
        h, w = self.model.input_size
        inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
        return xy, valid & inside

    def score(self, prepared, labels) -> tuple[ChunkResult | None, list[dict]]:
        """Drops for a chunk of prepared crops; images that fail are returned with reasons.

        ``labels`` has one target per image (see `labels.TargetRule`): a class or output index,
        a (D,) reference embedding, or None for all (the predicted class; an embedding's own).

        A chunk whose scoring raises is retried image by image, so one bad
        image costs only itself. An image that fails with an exception has, besides its
        ``reason``, an ``error``: (signature, traceback) for the run's `FailurePolicy`.
        """
        kept, failed = [], []
        for p, label in zip(prepared, labels):
            xy, valid = self.vertices(p.xy, p.z)
            if valid.any():
                kept.append((p, label, xy, valid))
            else:
                failed.append({"file": p.path, "reason": "no visible vertex inside the crop"})
        if not kept:
            return None, failed
        files = [k[0].path for k in kept]
        tg = [k[1] for k in kept]
        if any(t is None for t in tg) and not all(t is None for t in tg):
            raise ValueError("labels must be given for every image of a run or for none")
        targets = None if tg[0] is None else (np.stack(tg).astype(np.float32) if np.ndim(tg[0])
                                              else np.asarray(tg, np.int32))
        try:
            x, xy, valid = (self.model.preprocess(np.stack([k[0].crop for k in kept])),
                            np.stack([k[2] for k in kept]), np.stack([k[3] for k in kept]))
            res = self.engine.run(x, xy, valid=valid, targets=targets, patch_size=self.patch, fill=self.cfg.fill)
            if self.cfg.dtype == "bfloat16" and self.bf16_fidelity is None:
                self.bf16_fidelity = self._fidelity(res, x, xy, targets)
        except Exception as e:  # never lose the run to one chunk
            if len(kept) == 1:
                return None, failed + [{"file": files[0], "reason": f"scoring failed: {type(e).__name__}: {e}",
                                        "error": (signature(e, files[0]), traceback.format_exc())}]
            singles = [self.score([k[0]], [k[1]]) for k in kept]
            failed += [f for _, fs in singles for f in fs]
            ok = [r for r, _ in singles if r is not None]
            if not ok:
                return None, failed
            return ChunkResult(sum((r.files for r in ok), []),
                               *(np.concatenate([getattr(r, a) for r in ok])
                                 for a in ("drops", "valid", "targets", "clean"))), failed
        finite = np.isfinite(res.drops).all(axis=1) & np.isfinite(res.clean)
        failed += [{"file": files[i], "reason": "model returned non-finite scores"} for i in np.nonzero(~finite)[0]]
        keep = np.nonzero(finite)[0]
        if keep.size == 0:
            return None, failed
        return ChunkResult([files[i] for i in keep], res.drops[keep], res.valid[keep],
                           res.targets[keep], res.clean[keep]), failed

    def _fidelity(self, res: EngineResult, x, xy, targets) -> float | None:
        """Pearson correlation of these bfloat16 drops with float32 drops of the same images and targets.

        None when the drops are constant (then the next chunk is tried).
        """
        self._fp32 = self._fp32 or self._engine("float32")
        same = res.targets if self.engine.mode != "cosine" else targets  # the classes bf16 scored
        ref = self._fp32.run(x, xy, valid=res.valid, targets=same, patch_size=self.patch, fill=self.cfg.fill)
        keep = res.valid & np.isfinite(res.drops) & np.isfinite(ref.drops)
        a, b = res.drops[keep], ref.drops[keep]
        if a.size < 2 or a.std() == 0 or b.std() == 0:
            return None
        self._fp32 = None  # only the first chunk is compared: free its weights and compiled steps
        return float(np.corrcoef(a, b)[0, 1])

    def accumulate(self, result: ChunkResult) -> None:
        """Add the chunk's CIS maps (Eqs. 4-5) to the CMS sum (Eq. 6)."""
        group_of = self._group_of(result.files) if self._group_of else None
        self.acc_state = self.acc.add_drops(self.acc_state, result.drops, result.valid,
                                            self.canon.vertices, self.f, group_of=group_of)

    def cms(self) -> np.ndarray:
        """The CMS so far (Eq. 6: mean of the CIS maps, or their sum)."""
        return self.acc.result(self.acc_state)
