"""cms_jax: Canonical Saliency Maps (John, Balasubramanian, Jawahar) in JAX/Flax.

Public entry points (stable names):
  explain(model, images, **options) -> Explanation: each photo's CIS and their CMS (a notebook's way in)
  overlay(result) / show(result)   -> a CIS on its photo or a CMS on the canonical face, with a colour bar
  occlusion_drops(score_fn, image, vertices_xy, ...)  -> per-vertex drops, Eqs. 1-3
  canonical_map(values, canon_xy, canvas_hw, side) -> CIS/CMS map, Eqs. 4-5 (side: canonical f)
Subpackages: ``cms_jax.align`` (MediaPipe alignment, canonical face),
``cms_jax.models`` (Flax VGG-Face, Keras/ONNX face models, black boxes),
``cms_jax.baselines`` and ``cms_jax.metrics`` (Eqs. 7-11), ``cms_jax.pipeline``
(the streaming, resumable CMS job behind ``experiments/cms.py``).
Names are imported lazily so ``import cms_jax`` stays cheap.
"""
import importlib

__version__ = "0.1.0"

_LAZY = {name: "cms_jax.api" for name in (
    "occlusion_drops", "canonical_map", "OcclusionEngine", "EngineResult", "CMSAccumulator",
    "cms_from_drops", "reproject", "sample_at", "splat", "default_patch_size", "data_mesh")}
_LAZY.update({name: "cms_jax.notebook" for name in ("explain", "overlay", "show", "Explanation", "FaceResult")})


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cms_jax' has no attribute '{name}'")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
