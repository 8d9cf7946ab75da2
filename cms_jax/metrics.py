"""Faithfulness metrics on negative explanation images, Eqs. 7-11 of the paper (Section 4.2).

  Eq. 7   E = (1 - H) * I, a negative explanation image: the salient pixels are darkened.
  Eq. 8   H' = (h - min h) / (max h - min h);  H = s / sum(H') * H'.
  Eq. 9   Average Drop %. The printed Eq. 9, max(0, M(E_n) - M(I_n) M(E_N)), is garbled;
          we use the Grad-CAM++ definition (Chattopadhyay et al.) that the paper cites:
          100/N * sum_n max(0, Y_n - O_n) / Y_n, with Y = M(I_n), O = M(E_n). Higher is better.
  Eq. 10  % Increase in Confidence: 100/N * sum_n [O_n > Y_n]. Lower is better.
  Eq. 11  Win %: share of images on which a method's explanation gives the lowest O_n.

Choices the paper leaves open, made here:
  * s (Eq. 8), per image: by default the mean over the compared methods of their
    min-max-normalised sums, so the common budget is the methods' typical area;
    a float s_frac instead fixes s = s_frac * H * W.
  * A constant map (max h = min h, e.g. an all-zero GradCAM) carries no location; it
    becomes a uniform map of the same sum s, and is counted in ``degenerate``.
  * Scaling to a common sum can push H above 1 where a method is concentrated; 1 - H is
    clipped to [0, 1] (the official code lets it go negative and wraps it in uint8, a bug
    not copied) and the fraction of clipped pixels is reported as ``clip_rate``.
  * Win % ties (equal O_n, within ``tie_tol``) split the image's credit equally among the
    tied methods, so Win % over the compared methods always sums to 100.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np


def minmax_normalize(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 8, first half: each (H, W) map of an (N, H, W) stack scaled to [0, 1].

    Returns:
      (maps, degenerate): constant maps become all-ones; degenerate (N,) marks them.
    """
    h = np.asarray(h, np.float64)
    if h.ndim != 3:
        raise ValueError(f"heatmaps must be (N, H, W), got shape {h.shape}")
    if not np.all(np.isfinite(h)):
        raise ValueError("heatmaps contain NaN or inf")
    lo = h.min(axis=(1, 2), keepdims=True)
    span = h.max(axis=(1, 2), keepdims=True) - lo
    degenerate = span[:, 0, 0] <= 0
    out = np.where(span > 0, (h - lo) / np.where(span > 0, span, 1.0), 1.0)
    return out, degenerate


def normalize_heatmaps(heatmaps: Mapping[str, np.ndarray], s_frac: float | None = None
                       ) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray]]:
    """Eq. 8: min-max normalise every method's maps, then give them the same sum s per image.

    Negative values are clipped at 0 first, as the official code's ``SumNormalize`` does: a
    negative occlusion drop is evidence against the class, not weak saliency. Without the clip,
    min-max would lift a CMS's zero background (outside every vertex square) above its negative
    values, and the sum normalisation would then spend most of the map's budget on the context.

    Args:
      heatmaps: method name -> (N, H, W) raw heatmaps of the same N images.
      s_frac: None for s = mean over methods of the min-max-normalised sums (default);
        a float in (0, 1] for s = s_frac * H * W.

    Returns:
      (H, s, degenerate): method -> (N, H, W) scaled maps; s (N,); method -> (N,) bool.
    """
    if not heatmaps:
        raise ValueError("heatmaps is empty: pass at least one method's maps")
    normed, degenerate = {}, {}
    shapes = {name: np.shape(h) for name, h in heatmaps.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"all methods' heatmaps must have the same (N, H, W) shape, got {shapes}")
    for name, h in heatmaps.items():
        normed[name], degenerate[name] = minmax_normalize(np.maximum(np.asarray(h, np.float64), 0.0))
    sums = {name: m.sum(axis=(1, 2)) for name, m in normed.items()}
    if s_frac is None:
        s = np.mean(np.stack(list(sums.values())), axis=0)
    else:
        if not 0.0 < s_frac <= 1.0:
            raise ValueError(f"s_frac must lie in (0, 1], got {s_frac}")
        n, hh, ww = next(iter(shapes.values()))
        s = np.full((n,), s_frac * hh * ww)
    scaled = {name: m * (s / sums[name])[:, None, None] for name, m in normed.items()}
    return scaled, s, degenerate


def explanation_images(images: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, float]:
    """Eq. 7: E = clip(1 - H, 0, 1) * I.

    Args:
      images: (N, H, W, C) float images in a space where 0 is black (e.g. raw 0-255 pixels).
      h: (N, H, W) heatmaps from ``normalize_heatmaps``.

    Returns:
      (E, clip_rate): explanation images, and the fraction of pixels where 1 - H < 0.
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[:3] != np.shape(h):
        raise ValueError(f"images (N, H, W, C) {images.shape} do not match heatmaps {np.shape(h)}")
    keep = 1.0 - np.asarray(h, np.float32)
    clip_rate = float(np.mean(keep < 0.0))
    return images * np.clip(keep, 0.0, 1.0)[..., None], clip_rate


def average_drop(y: np.ndarray, o: np.ndarray) -> float:
    """Eq. 9 (Grad-CAM++ definition): 100 * mean(max(0, Y - O) / Y)."""
    y, o = np.asarray(y, np.float64), np.asarray(o, np.float64)
    if np.any(y <= 0):
        raise ValueError("original confidences Y must be positive (use probabilities)")
    return float(100.0 * np.mean(np.maximum(0.0, y - o) / y))


def increase_in_confidence(y: np.ndarray, o: np.ndarray) -> float:
    """Eq. 10: 100 * fraction of images whose explanation raises the confidence (O > Y)."""
    return float(100.0 * np.mean(np.asarray(o) > np.asarray(y)))


def win_percent(o: Mapping[str, np.ndarray], tie_tol: float = 0.0) -> dict[str, float]:
    """Eq. 11: % of images on which each method's explanation has the lowest confidence.

    Args:
      o: method -> (N,) explanation-image confidences O.
      tie_tol: methods within tie_tol of the lowest O share that image's win equally.

    Returns:
      method -> Win %; the values sum to 100.
    """
    names = list(o)
    stack = np.stack([np.asarray(o[n], np.float64) for n in names])  # (M, N)
    winners = stack <= stack.min(axis=0, keepdims=True) + tie_tol
    credit = winners / winners.sum(axis=0, keepdims=True)
    return {n: float(100.0 * credit[i].mean()) for i, n in enumerate(names)}


def faithfulness(confidence_fn: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                 heatmaps: Mapping[str, np.ndarray], targets: np.ndarray | None = None,
                 s_frac: float | None = None, batch_size: int = 32, per_image: bool = False) -> dict:
    """The Fig. 9 table: Average Drop %, % Increase, Win % and clip rate per method.

    Args:
      confidence_fn: images (B, H, W, C) in the space of ``images`` -> (B, K) class
        probabilities (preprocessing and softmax inside).
      images: (N, H, W, C) float images, 0 = black.
      heatmaps: method -> (N, H, W) raw heatmaps of these images.
      targets: (N,) classes whose confidence M is read; None = predicted on the originals.
      s_frac: see ``normalize_heatmaps``.
      batch_size: images per confidence_fn call.
      per_image: also return ``"per_image": {"y": (N,), "o": {name: (N,)}, "win_credit": {name: (N,)}}``,
        the numbers behind each mean (for bootstrap CIs and paired tests).

    Returns:
      {"n": N, "s_mean": mean s, "methods": {name: {"average_drop", "increase_in_confidence",
      "win", "clip_rate", "degenerate"}}}.
    """
    images = np.asarray(images, np.float32)

    def conf(batch_images):
        outs = [np.asarray(confidence_fn(batch_images[i:i + batch_size]))
                for i in range(0, len(batch_images), batch_size)]
        return np.concatenate(outs)

    probs = conf(images)
    t = probs.argmax(-1) if targets is None else np.asarray(targets, int)
    y = probs[np.arange(len(t)), t]
    scaled, s, degenerate = normalize_heatmaps(heatmaps, s_frac)
    o, clip = {}, {}
    for name, h in scaled.items():
        e, clip[name] = explanation_images(images, h)
        o[name] = conf(e)[np.arange(len(t)), t]
    wins = win_percent(o)
    methods = {name: {"average_drop": average_drop(y, o[name]),
                      "increase_in_confidence": increase_in_confidence(y, o[name]),
                      "win": wins[name], "clip_rate": clip[name],
                      "degenerate": int(degenerate[name].sum())} for name in scaled}
    out = {"n": int(len(images)), "s_mean": float(np.mean(s)), "methods": methods}
    if per_image:
        names = list(o)
        stack = np.stack([np.asarray(o[n], np.float64) for n in names])
        winners = stack <= stack.min(axis=0, keepdims=True)
        credit = winners / winners.sum(axis=0, keepdims=True)
        out["per_image"] = {"y": y, "o": o, "win_credit": {n: credit[i] for i, n in enumerate(names)}}
    return out


def per_face(per_image: Mapping) -> dict[str, dict[str, np.ndarray]]:
    """The numbers behind each mean of the Fig. 9 table, face by face (for CIs and paired tests).

    Args:
      per_image: ``faithfulness(..., per_image=True)["per_image"]``.

    Returns:
      ``{method: {"average_drop": 100 max(0, Y - O) / Y (Eq. 9), "increase": 1 where O > Y else 0
      (Eq. 10), "win": 100 x the face's share of the win (Eq. 11)}}``, each (N,) float64; their
      means are the table's Average Drop, % Increase / 100 and Win %.
    """
    y = np.asarray(per_image["y"], np.float64)
    out = {}
    for m, o in per_image["o"].items():
        o = np.asarray(o, np.float64)
        out[m] = {"average_drop": 100.0 * np.maximum(0.0, y - o) / y, "increase": (o > y).astype(np.float64),
                  "win": 100.0 * np.asarray(per_image["win_credit"][m], np.float64)}
    return out
