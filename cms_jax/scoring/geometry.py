"""Vertex geometry of a run: the canonical face's vertices in a model crop and on the canvas.

Host-side numpy, no model and no device: where an image's vertices fall in
its crop (the 468 landmarks subdivided like the canonical face), which of them
are scored (facing the camera and inside the crop: Algorithm 1, line 7), the
side f_i of the square each image's drops are splatted with on the canonical
face (Algorithm 1, line 4) and the canvas pixels those squares reach.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from cms_jax.align.canonical import CanonicalFace
from cms_jax.align.visibility import visible_vertices
from cms_jax.projection import square_coverage


def face_canonical_side(patch_size: int, model, canon, xy: np.ndarray) -> np.ndarray:
    """Side f_i of the square splatted on the canonical face for each image (Algorithm 1, line 4).

    The paper's f = sz * H_F / H_I (`cms_jax.projection.paper_canonical_side`) assumes the face
    fills the input as it fills the canvas. Here the same facial area is covered whatever the crop:
    f_i = sz * (face height on the canvas) / (face height in image i's input), the face height on the
    canvas being ``np.ptp(canon.vertices[:, 1])`` (the rows spanned by the canonical vertices, M_F).
    The face height in the input is

    * ``loose`` / ``tight``: H_I / (1 + margin), since these crops are built around the face's
      landmark box with that margin: one side for every image;
    * ``whole`` (the whole image resized to the input): measured as on the canvas, the rows spanned
      by the image's own vertices in input pixels (``canon.expand`` of its 468 landmarks, as
      `VertexGeometry.vertices` gives them): the face fills a different fraction of each image.

    Args:
      patch_size: the occlusion side sz in input pixels (> 0; `DropsBackend.patch` resolves the default).
      model: the FaceModel (input size, crop policy and margin).
      canon: the `CanonicalFace` (its vertices).
      xy: (N, V, 2) the images' vertex positions in input pixels (read for ``whole`` crops only).

    Returns:
      float32 (N,); not finite where a face spans no row (only possible for ``whole`` crops).
    """
    if not patch_size > 0:
        raise ValueError(f"face_canonical_side: patch_size must be > 0 (the resolved sz), got {patch_size}")
    xy = np.asarray(xy, np.float64)
    face_canvas = float(np.ptp(canon.vertices[:, 1]))
    if model.crop_policy == "whole":
        face_input = np.ptp(xy[..., 1], axis=-1)
    else:
        face_input = np.full(xy.shape[0], model.input_size[0] / (1.0 + model.crop_margin))
    with np.errstate(divide="ignore"):
        return (patch_size * face_canvas / face_input).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class VertexGeometry:
    """The canonical face's vertices for one model's crops.

    Attributes:
      canon: the canonical face M_F (vertices, triangles, canvas).
      model: the FaceModel; only its input size, crop policy and margin are read.
      visibility: score only vertices facing the camera.
    """
    canon: CanonicalFace
    model: object
    visibility: bool = True

    @property
    def num_vertices(self) -> int:
        return int(self.canon.vertices.shape[0])

    def vertices(self, xy468: np.ndarray, z468: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Crop-space positions (V, 2) of the canonical face's vertices (subdivided like it) and their validity (V,).

        A vertex is valid when it faces the camera (if ``visibility``) and lies inside the crop.
        """
        xy = np.asarray(self.canon.expand(xy468), np.float32)
        if self.visibility:
            z = np.asarray(self.canon.expand(z468), np.float32)
            valid = visible_vertices(xy, self.canon.triangles, z)
        else:
            valid = np.ones(len(xy), bool)
        h, w = self.model.input_size
        inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
        return xy, valid & inside

    def sides(self, xy: np.ndarray, patch_size: int) -> np.ndarray:
        """float32 (N,): the canonical side of images whose vertices are ``xy`` (N, V, 2) (`face_canonical_side`)."""
        return face_canonical_side(patch_size, self.model, self.canon, xy)

    def coverage(self, sides) -> np.ndarray:
        """bool (H_F, W_F): canvas pixels some vertex square reaches at one of ``sides`` (N > 0 in Eq. 5)."""
        return square_coverage(self.canon.vertices, self.canon.canvas_hw, sides)
