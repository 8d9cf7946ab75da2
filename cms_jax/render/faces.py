"""The faces behind a map: a photo with its own CIS projected onto it (Fig. 6d), at display size.

Nothing per image is stored during a run except its drop vector. For the few
images a report shows, the photo is read again, its landmarks come from the
run's landmark cache (content-hash keyed; MediaPipe runs again only on a
miss), the model's crop is cut again, at display size instead of the model's
input size (the same box, so vertex positions scale exactly), and the image's
drops are splatted at its own vertices with the occlusion square scaled the
same way (Eqs. 4-5 on the image instead of the canonical face).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from cms_jax.align.batch import align_files
from cms_jax.align.crops import crop_face
from cms_jax.align.images import ImageError, load_image
from cms_jax.projection import count_normalise, splat


@dataclasses.dataclass(frozen=True)
class CropSpec:
    """How the run's model cropped faces (from summary.json): policy, margin, input (H, W), patch side."""
    policy: str
    margin: float
    input_hw: tuple[int, int]
    patch: float

    @classmethod
    def from_summary(cls, summary: dict) -> "CropSpec | None":
        """None for a summary that does not record the crop (runs before ``crop_margin`` was kept)."""
        try:
            return cls(str(summary["crop_policy"]), float(summary["crop_margin"]),
                       tuple(int(v) for v in summary["model_input"]), float(summary["patch_size"]))
        except (KeyError, TypeError, ValueError):
            return None


@dataclasses.dataclass
class FaceCIS:
    """One photo's crop at display size with its CIS on it, or why there is none."""
    path: str
    rgb: np.ndarray | None = None     # uint8 (h, w, 3), the model's crop at display size
    cis: np.ndarray | None = None     # float32 (h, w), Eqs. 4-5 on the image's own vertices
    mask: np.ndarray | None = None    # bool (h, w), N > 0
    reason: str | None = None


def faces_cis(paths, drops: np.ndarray, valid: np.ndarray, canon, crop: CropSpec, *, size: int = 176,
              cache_dir=None) -> list[FaceCIS]:
    """Each photo cropped as the model saw it, ``size`` px wide, with its CIS reprojected.

    Args:
      paths: the images (as in ``drops.npz['files']``).
      drops, valid: (n, V) their drop vectors and masks from the run.
      canon: the run's canonical face (its ``expand`` maps the 468 landmarks to its vertices).
      crop: the run's crop (see `CropSpec`).
      size: display width in pixels.
      cache_dir: the run's landmark cache (None: MediaPipe runs on these images).
    """
    paths = [str(p) for p in paths]
    aligned = align_files(paths, workers=0, cache_dir=cache_dir)
    ih, iw = crop.input_hw
    hw = (max(1, int(round(size * ih / iw))), int(size))
    out = []
    for i, (path, a) in enumerate(zip(paths, aligned)):
        if not a.ok:
            out.append(FaceCIS(path, reason=a.reason or "no face"))
            continue
        try:
            rgb = load_image(path)
        except ImageError as e:
            out.append(FaceCIS(path, reason=e.reason))
            continue
        shown, xy = crop_face(rgb, a.face.xy, crop.policy, crop.margin, hw)
        verts = canon.expand(np.asarray(xy, np.float64)).astype(np.float32)
        p_star, count = splat(drops[i], verts, hw, crop.patch * hw[1] / iw, valid[i])
        out.append(FaceCIS(path, rgb=np.asarray(shown[..., :3], np.uint8),
                           cis=np.asarray(count_normalise(p_star, count), np.float32), mask=count > 0))
    return out
