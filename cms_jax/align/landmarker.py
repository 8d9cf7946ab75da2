"""MediaPipe face mesh: the dense landmarks M_I of Section 3.1.

The paper fits PRNet to get M_I (N x 2 image positions of N fixed face
points). Here MediaPipe's FaceLandmarker gives N = 468 mesh points (the 10
iris points it adds are dropped) in the landmark order of the canonical mesh,
so M_I[n] and M_F[n] (canonical.py) name the same facial point.
"""
from __future__ import annotations

import atexit
import dataclasses
import threading
import weakref

import numpy as np

NUM_MESH = 468  # mesh points; MediaPipe returns 478 (468 + 2 x 5 iris)
LEFT_EYE_OUTER = 263   # the subject's left eye, outer corner
RIGHT_EYE_OUTER = 33   # the subject's right eye, outer corner


@dataclasses.dataclass(frozen=True)
class Face:
    """One aligned face.

    Attributes:
      xy: float32 (468, 2) landmark positions in pixels, x = column, y = row
        (continuous coordinates: pixel (r, c) covers [c, c+1) x [r, r+1)).
      z: float32 (468,) relative depth in the same pixel units (smaller =
        nearer the camera), as MediaPipe gives it (scaled by image width).
      matrix: float32 (4, 4) facial transformation matrix (canonical mesh to
        camera space; its rotation is the head pose).
      num_faces: faces MediaPipe found; when > 1 this is the largest one.
      box: float32 (4,) landmark bounding box (x0, y0, x1, y1) in pixels.
    """
    xy: np.ndarray
    z: np.ndarray
    matrix: np.ndarray
    num_faces: int
    box: np.ndarray


def landmark_box(xy: np.ndarray) -> np.ndarray:
    """Bounding box (x0, y0, x1, y1) of landmark positions (V, 2)."""
    xy = np.asarray(xy, np.float32)
    return np.concatenate([xy.min(0), xy.max(0)]).astype(np.float32)


class Landmarker:
    """MediaPipe Tasks FaceLandmarker in IMAGE mode, as a context manager.

    Use ``with Landmarker() as lm: face = lm.detect(rgb)``. The native graph is
    closed on exit, or else when the object is collected or the interpreter
    exits (a FaceLandmarker left open raises during interpreter shutdown).

    Args:
      model_path: the ``face_landmarker.task`` bundle; default: the asset.
      num_faces: faces to look for; > 1 so several faces are noticed and the
        largest is chosen.
      min_detection_confidence: MediaPipe's face detector threshold.
    """

    def __init__(self, model_path=None, num_faces: int = 4, min_detection_confidence: float = 0.5):
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision
        from cms_jax.assets import resolve

        self._mp = mp
        self.model_path = str(model_path or resolve("face_landmarker"))
        opts = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=self.model_path),
            running_mode=vision.RunningMode.IMAGE,
            num_faces=num_faces,
            min_face_detection_confidence=min_detection_confidence,
            output_facial_transformation_matrixes=True,
        )
        self._lm = vision.FaceLandmarker.create_from_options(opts)
        self._finalizer = weakref.finalize(self, self._lm.close)
        # MediaPipe closes through a thread pool that Python shuts down before
        # ordinary atexit hooks run; threading's own exit hooks run earlier
        # (last registered first), so an unclosed landmarker closes in time.
        getattr(threading, "_register_atexit", atexit.register)(self._finalizer)
        self.calls = 0  # detect() calls made: lets tests prove a cache hit.

    def close(self) -> None:
        """Releases the native graph; safe to call twice."""
        self._finalizer()

    def __enter__(self) -> "Landmarker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def detect(self, rgb: np.ndarray) -> Face | None:
        """Finds the largest face in an RGB image.

        Args:
          rgb: uint8 (H, W, 3) RGB image.

        Returns:
          The largest face's ``Face`` or None when no face is found.
        """
        if not self._finalizer.alive:
            raise RuntimeError("Landmarker.detect called after close()")
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"detect expects uint8 (H, W, 3) RGB, got {rgb.dtype} {rgb.shape}")
        h, w = rgb.shape[:2]
        self.calls += 1
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB,
                               data=np.ascontiguousarray(rgb))
        res = self._lm.detect(image)
        if not res.face_landmarks:
            return None
        faces = []
        for i, lms in enumerate(res.face_landmarks):
            a = np.array([(p.x, p.y, p.z) for p in lms[:NUM_MESH]], np.float32)
            xy = a[:, :2] * np.array([w, h], np.float32)
            box = landmark_box(xy)
            faces.append(((box[2] - box[0]) * (box[3] - box[1]), i, xy, a[:, 2] * w, box))
        _, i, xy, z, box = max(faces, key=lambda f: f[0])
        mats = res.facial_transformation_matrixes
        matrix = np.asarray(mats[i], np.float32) if mats else np.eye(4, dtype=np.float32)
        return Face(xy=xy, z=z.astype(np.float32), matrix=matrix,
                    num_faces=len(faces), box=box)
