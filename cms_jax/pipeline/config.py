"""The configuration of one CMS run, and its fingerprint for safe resumption.

A run is defined by what changes its numbers: the model, the image list, the
occlusion (patch side, fill, score), the compute dtype, the mesh density,
visibility and the canonical canvas. Two runs with the same fingerprint add up to the same CMS,
so a checkpoint may only be resumed by a run whose fingerprint matches.
"""
from __future__ import annotations

import dataclasses
import math
import hashlib
import json



def _either(words) -> str:
    """``'a', 'b' or 'c'``: a vocabulary in an error message."""
    q = [repr(w) for w in words]
    return ", ".join(q[:-1]) + " or " + q[-1]


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's result (Algorithm 1 inputs and Eq. 6 reduction).

    Attributes:
      model: built-in model name or a path (HDF5, ONNX, Orbax dir with a model card).
      images: a folder, a glob, a text file with one path per line, or comma-separated paths.
      max_images: keep the first N images of the sorted list (0 = all).
      patch_size: occluding square side in model-input pixels (0 = 15 px at 224, scaled).
      score: 'prob' (softmax of the target class, the paper's text) or 'logit' (official code).
      fill: value written into the occluded square, in the model's normalised input.
      fill_blur: 0 (the constant ``fill``) or a Gaussian sigma in input pixels: each square takes
        the pixels of its own image blurred by it (`occlusion.blurred`, Fong & Vedaldi's blur
        perturbation); needs the dense forward (``incremental='auto'`` picks it).
      subdivision: triangle subdivision level of the MediaPipe mesh (0 = 468 vertices).
      visibility: leave out vertices on triangles facing away from the camera.
      canvas: side of the square canonical canvas in pixels.
      reduce: 'mean' (Eq. 6), 'sum' (the official code) or 'covered' (each pixel's mean over the
        images whose CIS reaches it; see `cms_jax.accumulate`).
      batch_size: work items (image, vertex) per device batch, over all devices; 0 (default):
        `backend.default_batch_size` (128 a device for the incremental forward on the CPU, else 1024).
      label_from: '' (predicted class) or a ``SOURCE:FIELD`` spec (`cms_jax.sources`, e.g.
        ``utkface:gender``) whose values name the target class (checked against the model's class
        names; see `labels`).
      target: '' or one output (name or index) scored for every image; required for regression
        outputs (no argmax over regression values).
      reference: '' or ``csv:FILE`` of ``file,identity``: an embedding model is scored against the
        mean embedding of the identity's other images instead of the image's own.
      groups: '' or a grouping spec (``utkface:race``, ``csv:PATH``, ``celeba:PATH:ATTR``) whose
        per-group CMS sums are accumulated with the run's (and reduced across processes).
      group_compare: how the group tests compare CIS maps (`groups.COMPARES`): 'normalised' (the
        default: each image's CIS divided by its own mean |value|, so a group the model is less sure
        of cannot differ "everywhere" by magnitude alone) or 'raw' drops.
      group_truth: '' or a ``SOURCE:FIELD`` of true classes (values naming the model's classes):
        the group tests then use only the faces whose explained (predicted) class is correct.
      incremental: score by exact incremental inference (`cms_jax.forward`, any model that runs
        on the device; black boxes are refused); same drops within float rounding, fewer FLOPs.
        'auto': incremental where the model allows, else dense, the default of ``experiments/cms.py``
        (its ``--incremental`` left unset) and of the figure scripts; ``RunConfig``'s own default is
        False (dense), which the library call and the tests comparing the two forwards rely on.
      onnx_backend: 'jax' (ONNX graphs converted to JAX, on the device) or 'onnxruntime' (host
        black box); the same numbers within float rounding. 'auto': the faster of the two by a
        short timed probe at the start (`scoring.backend_probe`, recorded in summary.json).
      dtype: 'float32' or 'bfloat16' weights and inputs (confidences in float32); bfloat16
        changes the numbers, so it is part of the fingerprint.
      approx_tau: 1.0 (exact) or in (0, 1): approximate incremental inference (Krypton's
        projective-field threshold, `cms_jax.incremental`); changes the numbers (fingerprinted),
        and the run records its fidelity to exact drops (``summary.json["approx_fidelity"]``).
    """

    model: str = "gender"
    images: str = ""
    max_images: int = 0
    patch_size: int = 0
    score: str = "prob"
    fill: float = 0.0
    fill_blur: float = 0.0
    subdivision: int = 0
    visibility: bool = True
    canvas: int = 512
    reduce: str = "mean"
    batch_size: int = 0
    label_from: str = ""
    target: str = ""
    reference: str = ""
    groups: str = ""
    group_compare: str = "normalised"
    group_truth: str = ""
    incremental: bool | str = False
    dtype: str = "float32"
    onnx_backend: str = "auto"
    approx_tau: float = 1.0

    # Fields that only change speed or bookkeeping, never the numbers (beyond fp32 rounding).
    _NOT_IN_FINGERPRINT = ("batch_size", "incremental", "onnx_backend", "group_compare", "group_truth")

    def validate(self) -> None:
        from cms_jax.accumulate import REDUCES
        from cms_jax.forward import DTYPES
        from cms_jax.models.foreign import ONNX_BACKENDS
        from cms_jax.occlusion import SCORES
        if self.score not in SCORES:
            raise ValueError(f"score must be {_either(SCORES)}, got {self.score!r}")
        if self.reduce not in REDUCES:
            raise ValueError(f"reduce must be {_either(REDUCES)}, got {self.reduce!r}")
        if self.patch_size < 0 or self.canvas < 16 or self.subdivision < 0 or self.max_images < 0:
            raise ValueError(f"bad sizes in {self}")
        if self.batch_size < 0:
            raise ValueError(f"batch_size must be >= 0 (0: chosen for the forward and devices), got "
                             f"{self.batch_size}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be {_either(DTYPES)}, got {self.dtype!r}")
        if self.onnx_backend not in ONNX_BACKENDS:
            raise ValueError(f"onnx_backend must be {_either(ONNX_BACKENDS)}, got {self.onnx_backend!r}")
        if not (self.fill_blur >= 0.0 and math.isfinite(self.fill_blur)):
            raise ValueError(f"fill_blur must be 0 (constant fill) or a blur sigma > 0 in input pixels, got "
                             f"{self.fill_blur!r}")
        if not 0.0 < self.approx_tau <= 1.0:
            raise ValueError(f"approx_tau must be in (0, 1] (1 = exact), got {self.approx_tau!r}")
        if self.incremental not in (True, False, "auto"):
            raise ValueError(f"incremental must be True, False or 'auto', got {self.incremental!r}")
        from cms_jax.groups import COMPARES
        if self.group_compare not in COMPARES:
            raise ValueError(f"group_compare must be {_either(COMPARES)}, got {self.group_compare!r}")
        if self.group_truth and (self.label_from or self.target):
            raise ValueError("group_truth restricts the group tests to correctly predicted faces, so the run "
                             f"must explain the predicted class: drop {'label_from' if self.label_from else 'target'} "
                             f"(or group_truth)")
        from cms_jax import sources
        for name in ("label_from", "groups", "group_truth"):
            if getattr(self, name):
                try:
                    sources.check(getattr(self, name))
                except ValueError as e:
                    raise ValueError(f"{name}: {e}") from None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    # Fields added after runs were made, left out of the fingerprint at their default, so a run made
    # before a field existed keeps its fingerprint (and is reused, resumed) under the same settings.
    _ADDED_LATER = {"fill_blur": 0.0}

    def fingerprint_fields(self) -> dict:
        return {k: v for k, v in self.to_dict().items() if k not in self._NOT_IN_FINGERPRINT
                and not (k in self._ADDED_LATER and v == self._ADDED_LATER[k])}

    def fingerprint(self) -> str:
        blob = json.dumps(self.fingerprint_fields(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def differences(self, saved: dict) -> list[str]:
        """Flags whose value differs from a checkpoint's saved config, as 'name: saved -> now'.

        A flag the checkpoint does not know (added since) counts as its default there.
        """
        now = {k: v for k, v in self.to_dict().items() if k not in self._NOT_IN_FINGERPRINT}
        defaults = RunConfig().to_dict()
        saved = {**{k: v for k, v in defaults.items() if k not in saved}, **saved}
        out = []
        for k in sorted(set(now) | set(saved)):
            if k in self._NOT_IN_FINGERPRINT:
                continue
            if now.get(k) != saved.get(k):
                out.append(f"{k}: {saved.get(k)!r} (checkpoint) -> {now.get(k)!r} (now)")
        return out
