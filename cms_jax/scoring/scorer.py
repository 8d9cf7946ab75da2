"""Scoring a chunk of prepared crops: per-vertex drops (Eqs. 1-3) and canonical sides (Algorithm 1, line 4).

`Scorer` turns a chunk of prepared crops into per-vertex drop vectors (the
canonical representation of each CIS) and each image's canonical square side
(`geometry.face_canonical_side`), retrying a failing chunk image by image. It
is the one place where a run's scoring parts are composed from its config: the
model, the canonical face, `geometry` (vertices) and `backend` (the engine).
What is done with the drops (the job's sums, Eq. 6; a figure's maps) is the
caller's.
"""
from __future__ import annotations

import dataclasses
import traceback

import numpy as np

from cms_jax import models
from cms_jax.align.canonical import CanonicalFace
from cms_jax.scoring import backend_probe
from cms_jax.scoring.backend import DropsBackend
from cms_jax.models import with_logits
from cms_jax.data.failures import signature
from cms_jax.scoring.geometry import VertexGeometry


@dataclasses.dataclass
class ChunkResult:
    """Drops of the images of one chunk that were scored."""

    files: list[str]
    drops: np.ndarray    # float32 (n, V)
    valid: np.ndarray    # bool (n, V)
    targets: np.ndarray  # int32 (n,)
    clean: np.ndarray    # float32 (n,) confidence of the unoccluded image
    sides: np.ndarray    # float32 (n,) canonical square side f_i of each image (`geometry.face_canonical_side`)


class Scorer:
    """One run's scoring: per-vertex drops and canonical sides of chunks of prepared crops.

    It validates the config and composes the run's two parts, each usable alone:

    * ``geometry`` (`VertexGeometry`): vertex positions in a crop, validity (visibility, inside the
      crop), each image's canonical side, coverage on the canvas;
    * ``backend`` (`DropsBackend`): the one occlusion engine (forward strategy, dtype, patch side sz;
      a black-box model with ``incremental=True`` is refused here, before any image is read);

    and adds the retry policy (`score`): a chunk that fails is scored image by image.

    Attributes:
      cfg, model, canon: the run's config, FaceModel and canonical face.
      patch: the occlusion side sz in input pixels (the backend's).
    """

    def __init__(self, cfg, model=None, canon=None, devices=None):
        """The parts of ``cfg`` (a `RunConfig`, validated here); ``model`` and ``canon`` replace the ones it names.

        With no ``model``, an ONNX model and ``onnx_backend='auto'``, the faster runtime is chosen by a
        timed probe (`backend_probe`); ``devices``: the mesh's (default: this process's local devices).
        """
        cfg.validate()
        self.cfg = cfg
        self.backend_probe: dict | None = None  # onnx_backend='auto': both runtimes' rates and the choice
        if model is None and cfg.onnx_backend == "auto" and backend_probe.is_onnx(cfg.model):
            self.model, self.backend, self.backend_probe = backend_probe.choose(cfg, devices)
        else:
            self.model = model or models.load(cfg.model, onnx_backend=cfg.onnx_backend)
            if cfg.score == "logit":  # a model ending in a softmax is read before it
                self.model = with_logits(self.model)
            self.backend = DropsBackend(cfg, self.model, devices)  # default: this process's local devices
        self.canon = canon or CanonicalFace.mediapipe(canvas=cfg.canvas, subdivision=cfg.subdivision)
        self.geometry = VertexGeometry(self.canon, self.model, cfg.visibility)

    @property
    def patch(self) -> int:
        return self.backend.patch

    def vertices(self, xy468: np.ndarray, z468: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Crop-space positions of the canonical face's vertices and their validity (`VertexGeometry.vertices`)."""
        return self.geometry.vertices(xy468, z468)

    def score(self, prepared, labels) -> tuple[ChunkResult | None, list[dict]]:
        """Drops for a chunk of prepared crops; images that fail are returned with reasons.

        ``labels`` has one target per image (see `labels.TargetRule`): a class or output index,
        a (D,) reference embedding, or None for all (the predicted class; an embedding's own);
        or (R, D) references (the same R for every image): drops (n, V, R), clean (n, R).

        A chunk whose scoring raises is retried image by image, so one bad
        image costs only itself. An image that fails with an exception has, besides its
        ``reason``, an ``error``: (signature, traceback) for the run's `FailurePolicy`.
        """
        kept, failed = [], []
        for p, label in zip(prepared, labels):
            xy, valid = self.geometry.vertices(p.xy, p.z)
            side = self.geometry.sides(xy[None], self.patch)[0]
            if not valid.any():
                failed.append({"file": p.path, "reason": "no visible vertex inside the crop"})
            elif not (np.isfinite(side) and side > 0):
                failed.append({"file": p.path, "reason": "the face spans no row of the input"})
            else:
                kept.append((p, label, xy, valid, side))
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
            res = self.backend.drops(x, xy, valid, targets)
            self.backend.measure_fidelity(res, x, xy, targets)  # bfloat16 or approx_tau runs: once
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
                                 for a in ("drops", "valid", "targets", "clean", "sides"))), failed
        n = len(kept)  # (n, V) drops, or (n, V, R) against R references per image
        finite = np.isfinite(res.drops).reshape(n, -1).all(1) & np.isfinite(res.clean).reshape(n, -1).all(1)
        failed += [{"file": files[i], "reason": "model returned non-finite scores"} for i in np.nonzero(~finite)[0]]
        keep = np.nonzero(finite)[0]
        if keep.size == 0:
            return None, failed
        sides = np.asarray([k[4] for k in kept], np.float32)
        return ChunkResult([files[i] for i in keep], res.drops[keep], res.valid[keep],
                           res.targets[keep], res.clean[keep], sides[keep]), failed
