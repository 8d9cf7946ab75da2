"""Face alignment (Section 3.1): MediaPipe mesh M_I, canonical face F and M_F.

Public API:
  load_image, ImageError                      robust image decoding (images.py)
  Landmarker, Face                            MediaPipe FaceLandmarker (landmarker.py)
  align_files, AlignResult, align_bytes       many files, workers (batch.py)
  cache_key, entry_path, read_entry, write_entry, model_hash   disk cache (cache.py)
  crop_face, crop_box                         model crops (crops.py)
  CanonicalFace                               the canonical face (canonical.py)
  subdivide_mesh                              denser meshes (subdivide.py)
  similarity_fit                              Procrustes fit (procrustes.py)
  visible_vertices                            back-facing vertices (visibility.py)
"""
from cms_jax.align.batch import NO_FACE, AlignResult, align_bytes, align_files
from cms_jax.align.cache import cache_key, entry_path, model_hash, read_entry, write_entry
from cms_jax.align.canonical import CanonicalFace
from cms_jax.align.crops import POLICIES, crop_box, crop_face
from cms_jax.align.images import ImageError, load_image, load_image_bytes
from cms_jax.align.landmarker import LEFT_EYE_OUTER, NUM_MESH, RIGHT_EYE_OUTER, Face, Landmarker
from cms_jax.align.procrustes import similarity_fit
# Exported under another name so ``cms_jax.align.subdivide`` stays the module.
from cms_jax.align.subdivide import subdivide as subdivide_mesh
from cms_jax.align.visibility import signed_areas, visible_vertices

__all__ = [
    "AlignResult", "CanonicalFace", "align_bytes", "cache_key", "entry_path", "model_hash",
    "read_entry", "write_entry", "Face", "ImageError", "LEFT_EYE_OUTER", "Landmarker",
    "NO_FACE", "NUM_MESH", "POLICIES", "RIGHT_EYE_OUTER", "align_files", "crop_box",
    "crop_face", "load_image", "load_image_bytes", "signed_areas", "similarity_fit",
    "subdivide_mesh", "visible_vertices",
]
