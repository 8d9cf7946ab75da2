"""The canonical face F and its points M_F (Section 3.1).

``CanonicalFace`` holds M_F: the canonical vertices in canvas pixels
(x column, y row), the triangles, the canvas size (H_F, W_F) and a display
image, the backdrop of the canonical maps (Eqs. 4-6). Sources:

* ``CanonicalFace.mediapipe``: MediaPipe's canonical mesh (468 frontal
  vertices in landmark order, 898 triangles) projected orthographically into
  a square canvas, default 256 px with a 10% margin per side. The OBJ's y axis
  points up, so it is flipped to rows; x is kept, which puts the subject's
  left eye (landmark 263, +x in the model) on the canvas's right, as a camera
  facing the subject sees it in every image. Display: a shaded rendering of
  the mesh (no data needed), or the mean of aligned faces (``with_mean_face``).
* ``CanonicalFace.prnet``: the official code's canonical face (PRNet mesh of
  ``frontal.jpg``, 619x619), ``vertices[::stride]``, for parity runs.

Triangles are wound so that a front-facing triangle has a positive signed
area in canvas/image coordinates (see visibility.py).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from cms_jax.align import raster, subdivide as subdiv, visibility
from cms_jax.assets import resolve

DEFAULT_CANVAS = 256
DEFAULT_MARGIN = 0.1


def _orient_front_positive(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Flips the winding of all triangles when the frontal view is mostly negative."""
    if visibility.signed_areas(vertices, triangles).sum() < 0:
        return triangles[:, [0, 2, 1]]
    return triangles


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class CanonicalFace:
    """Canonical vertices M_F on a canvas, with triangles and a display image.

    Attributes:
      vertices: float32 (V, 2) canvas pixels, x column, y row.
      triangles: int32 (T, 3), front-facing = positive signed area.
      canvas_hw: (H_F, W_F).
      image: uint8 (H_F, W_F, 3) display image.
      name: source label (``mediapipe``, ``mediapipe-sub1``, ``prnet``).
      depth: float32 (V,) depth in canvas pixels, larger = nearer the viewer.
      interp: scipy.sparse (V, V_base) matrix taking the aligner's points
        (e.g. 468 MediaPipe landmarks) to these vertices; None = identity.
      pos3: float64 (V, 3) 3-D positions (x right, y up, z to the viewer)
        used for shading; None when unknown.
    """
    vertices: np.ndarray
    triangles: np.ndarray
    canvas_hw: tuple[int, int]
    image: np.ndarray
    name: str = ""
    depth: np.ndarray | None = None
    interp: object = None
    pos3: np.ndarray | None = None

    def __repr__(self) -> str:
        return (f"CanonicalFace({self.name!r}, {self.num_vertices} vertices, "
                f"{len(self.triangles)} triangles, canvas {tuple(self.canvas_hw)})")

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])

    def expand(self, values: np.ndarray) -> np.ndarray:
        """Maps per-landmark data (V_base, ...) of an image to this face's vertices.

        For the MediaPipe face with subdivision this interpolates the 468
        landmarks (or their z) exactly as the canonical vertices were.
        """
        values = np.asarray(values)
        if self.interp is None:
            if values.shape[0] != self.num_vertices:
                raise ValueError(f"expand: got {values.shape[0]} points, face has {self.num_vertices}")
            return values
        if values.shape[0] != self.interp.shape[1]:
            raise ValueError(f"expand: got {values.shape[0]} points, expected {self.interp.shape[1]}")
        return subdiv.apply(self.interp, values)

    def with_image(self, image: np.ndarray) -> "CanonicalFace":
        """This face with another display image (same canvas size)."""
        image = np.asarray(image, np.uint8)
        if image.shape[:2] != tuple(self.canvas_hw):
            raise ValueError(f"display image {image.shape[:2]} != canvas {tuple(self.canvas_hw)}")
        return dataclasses.replace(self, image=image)

    def with_mean_face(self, images, xys) -> "CanonicalFace":
        """This face with the mean of aligned images as its display image.

        Args:
          images: iterable of uint8 (H, W, 3) RGB images.
          xys: matching (V_base, 2) landmark arrays (expanded like ``expand``).
        """
        tri_id, bary = raster.rasterize(self.vertices, self.triangles, self.canvas_hw, self.depth)
        acc = np.zeros((*self.canvas_hw, 3), np.float64)
        n = 0
        for rgb, xy in zip(images, xys):
            warped, _ = raster.warp_to_canvas(rgb, self.expand(xy), tri_id, bary, self.triangles)
            acc += warped
            n += 1
        if n == 0:
            raise ValueError("with_mean_face needs at least one image")
        mean = acc / n
        mean[tri_id < 0] = 255.0
        return self.with_image(np.clip(mean + 0.5, 0, 255).astype(np.uint8))

    @classmethod
    def mediapipe(cls, canvas: int = DEFAULT_CANVAS, margin: float = DEFAULT_MARGIN,
                  subdivision: int = 0, obj_path=None, task_path=None) -> "CanonicalFace":
        """MediaPipe's canonical mesh, projected orthographically.

        Args:
          canvas: side of the square canvas in pixels (default 256).
          margin: empty border per side as a fraction of the canvas.
          subdivision: midpoint-subdivision level k (0: 468 vertices; 1: 1,833).
          obj_path, task_path: the OBJ and the landmarker bundle (default: assets).
        """
        from cms_jax.align import mesh_io
        pos, tri = mesh_io.obj_in_landmark_order(obj_path or resolve("canonical_face_model"),
                                                 task_path or resolve("face_landmarker"))
        lo, hi = pos[:, :2].min(0), pos[:, :2].max(0)
        scale = canvas * (1 - 2 * margin) / (hi - lo).max()
        centre = (lo + hi) / 2
        xy = np.stack([(pos[:, 0] - centre[0]) * scale + canvas / 2,
                       -(pos[:, 1] - centre[1]) * scale + canvas / 2], 1)  # y up -> rows
        depth = (pos[:, 2] - pos[:, 2].mean()) * scale
        tri = _orient_front_positive(xy, tri)
        interp, name = None, "mediapipe"
        if subdivision:
            interp, tri = subdiv.subdivide(tri, len(xy), subdivision)
            xy, depth, pos = (subdiv.apply(interp, a) for a in (xy, depth, pos))
            name = f"mediapipe-sub{subdivision}"
        image = raster.shade(xy, tri, (canvas, canvas), pos)
        return cls(vertices=xy.astype(np.float32), triangles=tri.astype(np.int32),
                   canvas_hw=(canvas, canvas), image=image, name=name,
                   depth=depth.astype(np.float32), interp=interp, pos3=pos)

    @classmethod
    def prnet(cls, stride: int = 20, mesh_path=None, image_path=None) -> "CanonicalFace":
        """The official code's PRNet canonical face (``frontal.jpg``, 619x619).

        Args:
          stride: keep ``vertices[::stride]`` (20 gives the 2,194 points that pair
            one-to-one with the sample meshes in ``prnet_meshes/``).
          mesh_path, image_path: ``frontal_mesh.mat`` and ``frontal.jpg``.

        With stride 1 the PRNet triangles are kept; otherwise the kept points
        are re-triangulated (Delaunay in the canvas), for drawing and
        visibility only.
        """
        import scipy.io
        import scipy.spatial
        from cms_jax.align.images import load_image
        mat = scipy.io.loadmat(str(mesh_path or resolve("celeba_frontal_mesh")))
        image = load_image(image_path or resolve("celeba_frontal_jpg"))
        v = np.asarray(mat["vertices"], np.float64)[::stride]
        if stride == 1:
            tri = np.asarray(mat["triangles"], np.int64)
        else:
            tri = scipy.spatial.Delaunay(v[:, :2]).simplices.astype(np.int64)
        tri = _orient_front_positive(v[:, :2], tri)
        return cls(vertices=v[:, :2].astype(np.float32), triangles=tri.astype(np.int32),
                   canvas_hw=tuple(image.shape[:2]), image=image, name="prnet",
                   depth=v[:, 2].astype(np.float32))
