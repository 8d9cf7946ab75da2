"""Where the saliency lies: the share of a canonical map on each facial region.

Regions are drawn on the canonical face from MediaPipe's landmark groups
(``FaceLandmarksConnections``: eyes, eyebrows, nose, lips, face oval) at the
canonical positions of those landmarks: the convex hull of each group,
widened a little for eyes (lids and corners) and mouth, the forehead as the
face above the eyebrows, and jaw-and-cheeks as the rest of the face oval.
A pixel belongs to the first region that claims it in ``REGIONS`` order.
"""
from __future__ import annotations

import cv2
import numpy as np

REGIONS = ("eyes", "eyebrows", "nose", "mouth", "forehead", "jaw_and_cheeks", "outside_face")

_WIDEN = {"eyes": 1.45, "eyebrows": 1.25, "nose": 1.0, "mouth": 1.2}


def _indices(name: str) -> np.ndarray:
    from mediapipe.tasks.python import vision
    conns = getattr(vision.FaceLandmarksConnections, name)
    return np.unique([i for c in conns for i in (c.start, c.end)])


def _groups() -> dict[str, list[np.ndarray]]:
    return {
        "eyes": [_indices("FACE_LANDMARKS_LEFT_EYE"), _indices("FACE_LANDMARKS_RIGHT_EYE")],
        "eyebrows": [_indices("FACE_LANDMARKS_LEFT_EYEBROW"), _indices("FACE_LANDMARKS_RIGHT_EYEBROW")],
        "nose": [_indices("FACE_LANDMARKS_NOSE")],
        "mouth": [_indices("FACE_LANDMARKS_LIPS")],
        "oval": [_indices("FACE_LANDMARKS_FACE_OVAL")],
    }


def _hull_mask(points: np.ndarray, hw: tuple[int, int], widen: float = 1.0) -> np.ndarray:
    c = points.mean(axis=0)
    pts = c + (points - c) * widen
    hull = cv2.convexHull(np.round(pts * 16).astype(np.int32))  # 4 fractional bits
    mask = np.zeros(hw, np.uint8)
    cv2.fillConvexPoly(mask, hull, 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def region_masks(landmarks_xy: np.ndarray, canvas_hw: tuple[int, int]) -> dict[str, np.ndarray]:
    """Disjoint bool masks (H, W), one per name in ``REGIONS``, covering the canvas.

    Args:
      landmarks_xy: (468, 2) canonical positions of the MediaPipe mesh landmarks.
      canvas_hw: (H, W) of the canonical canvas.
    """
    xy = np.asarray(landmarks_xy, np.float64)[:468]
    if xy.shape != (468, 2):
        raise ValueError(f"landmarks_xy must hold the 468 MediaPipe landmarks, got {np.shape(landmarks_xy)}")
    g = _groups()
    claimed = np.zeros(canvas_hw, bool)
    out = {}
    for name in ("eyes", "eyebrows", "nose", "mouth"):
        m = np.zeros(canvas_hw, bool)
        for idx in g[name]:
            m |= _hull_mask(xy[idx], canvas_hw, _WIDEN[name])
        out[name] = m & ~claimed
        claimed |= m
    face = _hull_mask(xy[g["oval"][0]], canvas_hw)
    brow_top = min(xy[idx][:, 1].min() for idx in g["eyebrows"])
    rows = np.arange(canvas_hw[0])[:, None] < brow_top
    out["forehead"] = face & rows & ~claimed
    claimed |= out["forehead"]
    out["jaw_and_cheeks"] = face & ~claimed
    claimed |= out["jaw_and_cheeks"]
    out["outside_face"] = ~claimed
    return {k: out[k] for k in REGIONS}


def region_shares(saliency: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, float]:
    """Share (in %) of the positive saliency on each region; sums to 100 (0s for an empty map).

    Negative values (occlusion raised the confidence) carry no saliency here.
    """
    pos = np.clip(np.asarray(saliency, np.float64), 0, None)
    total = pos.sum()
    return {k: (100.0 * pos[m].sum() / total if total > 0 else 0.0) for k, m in masks.items()}


def region_density(saliency: np.ndarray, masks: dict[str, np.ndarray],
                   coverage: np.ndarray | None = None) -> dict[str, float]:
    """Mean positive saliency per pixel of each region, relative to the mean over all regions.

    1.0 means the region holds saliency in proportion to its area; the share
    alone favours large regions (jaw and cheeks). Only pixels in ``coverage``
    (where the map is defined, N > 0) count; regions without such pixels get 0.
    """
    pos = np.clip(np.asarray(saliency, np.float64), 0, None)
    cov = np.ones(pos.shape, bool) if coverage is None else np.asarray(coverage, bool)
    overall = pos[cov].mean() if cov.any() else 0.0
    out = {}
    for k, m in masks.items():
        sel = m & cov
        out[k] = float(pos[sel].mean() / overall) if sel.any() and overall > 0 else 0.0
    return out


def shares_table(maps: dict[str, np.ndarray], masks: dict[str, np.ndarray],
                 coverage: np.ndarray | None = None) -> tuple[dict, str]:
    """Region shares (%) and area-relative densities of several named maps: a dict and markdown.

    Returns:
      ``({map: {"share": {region: %}, "density": {region: ratio}}}, markdown)``.
    """
    table = {name: {"share": region_shares(m, masks), "density": region_density(m, masks, coverage)}
             for name, m in maps.items()}
    md = ""
    for key, title, fmt in (("share", "Share of positive saliency (%)", "{:.1f}"),
                            ("density", "Saliency per pixel relative to the face average", "{:.2f}")):
        md += f"**{title}**\n\n| map | " + " | ".join(REGIONS) + " |\n|---|" + "---:|" * len(REGIONS) + "\n"
        md += "".join(f"| {name} | " + " | ".join(fmt.format(v[key][r]) for r in REGIONS) + " |\n"
                      for name, v in table.items()) + "\n"
    return table, md


def vertex_regions(xy: np.ndarray, masks: dict[str, np.ndarray]) -> np.ndarray:
    """Which region each canonical vertex lies in: bool (V, R), one True per row, R = ``len(masks)``.

    A vertex belongs to the region of the pixel that holds its position (pixel (r, c)
    covers [c, c+1) x [r, r+1)); positions off the canvas are clamped to its edge.
    """
    xy = np.asarray(xy, np.float64)
    hw = next(iter(masks.values())).shape
    c = np.clip(np.floor(xy[:, 0]).astype(np.int64), 0, hw[1] - 1)
    r = np.clip(np.floor(xy[:, 1]).astype(np.int64), 0, hw[0] - 1)
    return np.stack([np.asarray(m, bool)[r, c] for m in masks.values()], axis=1)


def image_region_saliency(drops: np.ndarray, valid: np.ndarray, member: np.ndarray,
                          batch: int = 4096) -> np.ndarray:
    """Per-image saliency on each region, from drop vectors: (N, R) float64.

    The rule: an image's saliency on region r is the mean over r's vertices of its
    positive drops, a vertex the image did not score counting 0 (as its CIS adds 0
    there, Eq. 6). It ranks images by how much their CIS puts on the region without
    rendering any map: ``max(S, 0) @ member / |r|``, streamed in batches of images.
    Regions without vertices get 0.

    Args:
      drops: (N, V) per-image drops; valid: (N, V) bool.
      member: (V, R) bool from `vertex_regions`.
    """
    m = np.asarray(member, np.float64)
    size = m.sum(0)
    out = np.zeros((len(drops), m.shape[1]))
    for lo in range(0, len(drops), batch):
        d = np.asarray(drops[lo:lo + batch], np.float64)
        pos = np.where(np.asarray(valid[lo:lo + batch], bool) & np.isfinite(d), np.clip(d, 0, None), 0.0)
        out[lo:lo + batch] = pos @ m
    return np.where(size > 0, out / np.maximum(size, 1), 0.0)


def top_images(scores: np.ndarray, k: int = 6) -> list[np.ndarray]:
    """For each region (column of ``scores``), the indices of its ``k`` highest-scoring images.

    Highest first; ties go to the earlier image; images scoring 0 (nothing positive
    there) are never picked, so a region may get fewer than ``k``.
    """
    s = np.asarray(scores, np.float64)
    out = []
    for col in s.T:
        order = np.argsort(-col, kind="stable")[:k]
        out.append(order[col[order] > 0])
    return out
