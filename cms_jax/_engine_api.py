"""Public names of the canonical saliency engine (Eqs. 1-6, Algorithm 1).

The package ``cms_jax/__init__.py`` re-exports these; import them from there.
"""
from cms_jax.accumulate import CMSAccumulator, cms_from_drops
from cms_jax.engine import EngineResult, OcclusionEngine, occlusion_drops
from cms_jax.occlusion import default_patch_size, square_bounds
from cms_jax.projection import canonical_map, canonical_patch_size, reproject, sample_at, splat
from cms_jax.sharding import data_mesh

__all__ = [
    "CMSAccumulator",
    "EngineResult",
    "OcclusionEngine",
    "canonical_map",
    "canonical_patch_size",
    "cms_from_drops",
    "data_mesh",
    "default_patch_size",
    "occlusion_drops",
    "reproject",
    "sample_at",
    "splat",
    "square_bounds",
]
