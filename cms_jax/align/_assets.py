"""Asset paths for alignment: the MediaPipe bundle and the canonical mesh.

Defers to ``cms_jax.assets`` (the project's one resolver, with hash checks);
falls back to ``$CMS_JAX_ASSETS`` only while that module is absent.
"""
from __future__ import annotations

import os
import pathlib

_FALLBACK = {
    "face_landmarker": "assets/face_landmarker.task",
    "canonical_face_model": "assets/canonical_face_model.obj",
    "celeba_frontal_jpg": "faces/celeba_samples/frontal.jpg",
    "celeba_frontal_mesh": "faces/celeba_samples/frontal_mesh.mat",
}


def resolve(name: str) -> pathlib.Path:
    """Path of a named asset (see ``cms_jax.assets.resolve``)."""
    try:
        from cms_jax.assets import resolve as _resolve
    except ImportError:
        _resolve = None
    if _resolve is not None:
        return pathlib.Path(_resolve(name))
    root = os.environ.get("CMS_JAX_ASSETS")
    if not root or name not in _FALLBACK:
        raise FileNotFoundError(
            f"asset {name!r}: cms_jax.assets is unavailable and CMS_JAX_ASSETS is not set")
    path = pathlib.Path(root) / _FALLBACK[name]
    if not path.is_file():
        raise FileNotFoundError(f"asset {name!r}: {path} does not exist")
    return path
