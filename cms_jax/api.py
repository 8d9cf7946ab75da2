"""The public API of the canonical saliency engine (Eqs. 1-6, Algorithm 1).

``import cms_jax`` re-exports these lazily (``cms_jax.occlusion_drops``, ...);
``from cms_jax.api import ...`` imports them at once.
"""
from cms_jax.accumulate import CMSAccumulator, cms_from_drops
from cms_jax.engine import EngineResult, OcclusionEngine, occlusion_drops
from cms_jax.occlusion import default_patch_size, square_bounds
from cms_jax.projection import canonical_map, count_normalise, paper_canonical_side, reproject, sample_at, splat
from cms_jax.sharding import data_mesh

__all__ = [
    "CMSAccumulator",
    "EngineResult",
    "OcclusionEngine",
    "canonical_map",
    "cms_from_drops",
    "count_normalise",
    "data_mesh",
    "default_patch_size",
    "occlusion_drops",
    "paper_canonical_side",
    "reproject",
    "sample_at",
    "splat",
    "square_bounds",
]
