"""Exact incremental occlusion inference for any JAX model (a jaxpr transformation).

See `transform.Incremental`; `program` traces and inlines the model, `window`
holds windowed values and `rules` the per-primitive rules.
"""
from cms_jax.incremental.transform import Incremental

__all__ = ["Incremental"]
