"""Per-image maps for Figs. 2, 6, 7, 14, 15 and 16: occlusion map, CIS (Eqs. 1-5), CMS reprojected (Fig. 6d).

`FaceMaps` is what a figure needs of a run's setup, and nothing more: the
model, the canonical face, the occlusion side, and the maps of single faces.
Faces are aligned and cropped by the job's `FacePreparer`, and its parts are
composed by the job's own `Scorer` (`VertexGeometry` places the vertices, the
`DropsBackend` scores them with the one engine), so these maps are the very
ones a CMS run averages.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from cms_jax import models, occlusion
from cms_jax.baselines.grid_occlusion import grid_occlusion
from cms_jax.data.prepare import FacePreparer, Prepared
from cms_jax.projection import canonical_map, reproject, sample_at, splat
from cms_jax.scoring.scorer import Scorer


class FaceMaps:
    """A run's model, canonical face and occlusion side, and the maps of single faces.

    Attributes:
      model: the FaceModel.
      canon: the canonical face (its ``image`` is the backdrop of canonical maps).
      patch: the occlusion side sz in input pixels.
      score: 'prob' or 'logit' (the run's confidence, Eq. 1).
      fill: the value written into an occluded square.
    """

    def __init__(self, cfg, model=None, canon=None, devices=None):
        """The setup of ``cfg`` (a `RunConfig`); ``model`` and ``canon`` replace the ones it names.

        An ONNX model is its JAX function here, without the job's runtime probe: grid occlusion
        and the baselines trace the model.
        """
        scorer = Scorer(cfg, model or models.load(cfg.model, onnx_backend=cfg.onnx_backend), canon, devices)
        self.model, self.canon = scorer.model, scorer.canon
        self._geometry, self._backend = scorer.geometry, scorer.backend
        self.patch, self.score, self.fill = scorer.patch, cfg.score, float(cfg.fill)

    @property
    def mode(self) -> str:
        """How the model's outputs become the run's confidence (`occlusion.score_mode`: softmax, raw, cosine)."""
        m = self.model
        return occlusion.score_mode(self.score, m.outputs_are_probs, m.output)

    def prepare(self, paths: list[str], workers: int = 0,
                cache_dir: str | None = None) -> tuple[list[Prepared], list[dict]]:
        """Aligned model-size crops of ``paths``; returns (prepared faces, skipped files with reasons)."""
        good, skipped = [], []
        preparer = FacePreparer(self.model, workers=workers, cache_dir=cache_dir)
        try:
            for p in preparer.imap(paths):
                if p.reason is not None:
                    skipped.append({"file": p.path, "reason": p.reason})
                else:
                    good.append(p)
        finally:
            preparer.close()
        return good, skipped

    def drops(self, faces: list[Prepared], patch_size: int = 0,
              targets: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Eq. 1 at every visible vertex of each face.

        Args:
          faces: prepared crops.
          patch_size: occluding side in input pixels (0 = the run's).
          targets: (N,) class per face (None = predicted).

        Returns:
          dict of drops (N, V), valid (N, V), xy (N, V, 2) crop pixels, targets (N,), clean (N,),
          patch (the side used) and sides (N,), each face's canonical side at that patch.
        """
        if not faces:
            raise ValueError("FaceMaps.drops: no face to score")
        pairs = [self._geometry.vertices(p.xy, p.z) for p in faces]
        xy, valid = np.stack([a for a, _ in pairs]), np.stack([b for _, b in pairs])
        x = self.model.preprocess(np.stack([p.crop for p in faces]))
        patch = patch_size or self.patch
        res = self._backend.drops(x, xy, valid, targets, patch_size=patch)
        return {"drops": res.drops, "valid": res.valid, "xy": xy, "targets": res.targets, "clean": res.clean,
                "patch": int(patch), "sides": self._geometry.sides(xy, patch)}

    def cis(self, drops: np.ndarray, valid: np.ndarray, side: float) -> np.ndarray:
        """Eqs. 4-5: one face's drops splatted on the canonical face at its canonical ``side``, count-normalised."""
        return canonical_map(drops, self.canon.vertices, self.canon.canvas_hw, float(side), valid)

    def cis_unnormalised(self, drops: np.ndarray, valid: np.ndarray, side: float) -> tuple[np.ndarray, np.ndarray]:
        """Eq. 4 alone: (P*, N) of one face's drops on the canonical face at its canonical ``side``."""
        return splat(drops, self.canon.vertices, self.canon.canvas_hw, float(side), valid)

    def coverage(self, sides) -> np.ndarray:
        """bool (H_F, W_F): canvas pixels some vertex square reaches at one of ``sides`` (N > 0 in Eq. 5)."""
        return self._geometry.coverage(sides)

    def occlusion_map(self, face: Prepared, target: int | None = None, stride: int = 0) -> np.ndarray:
        """Zeiler & Fergus occlusion map of one crop in image space (Section 2, Fig. 6a).

        The square side is the run's patch; the stride defaults to half of it.
        """
        m = self.model
        x = m.preprocess(face.crop[None])
        t = None if target is None else np.asarray([target], np.int32)
        out = grid_occlusion(m.apply_fn, m.params, x, t, patch=int(self.patch),
                             stride=int(stride or max(1, self.patch // 2)), fill=self.fill, mode=self.mode)
        return np.asarray(out[0], np.float32)

    def reprojected_cms(self, cms: np.ndarray, xy: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Fig. 6d: the CMS read at the canonical vertices and splatted on the face's own vertices."""
        values = sample_at(cms, self.canon.vertices)
        return reproject(values, xy, tuple(self.model.input_size), self.patch, valid)

    def image_mask(self, xy: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """bool (H, W) of the crop pixels some visible vertex square reaches (where a reprojection is defined)."""
        ones = np.ones(len(xy), np.float32)
        return splat(ones, xy, tuple(self.model.input_size), self.patch, valid)[1] > 0

    def confidences(self, crops: np.ndarray) -> np.ndarray:
        """(B, K) class confidences of uint8 crops, as the occlusion score uses them ('prob' or 'logit')."""
        m = self.model
        raw = m.apply_fn(m.params, jnp.asarray(m.preprocess(crops)))
        return np.asarray(occlusion.confidences(jnp.asarray(raw), self.mode), np.float64)


def face_rgb(face: Prepared) -> np.ndarray:
    """The crop as uint8 RGB (what the model saw, before normalisation)."""
    return np.asarray(face.crop, np.uint8)
