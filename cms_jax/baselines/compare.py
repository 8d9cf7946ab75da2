"""The Fig. 9 / Fig. 10 comparison: CAM baselines vs reprojected CMS under Eqs. 7-11.

``fig9_table`` takes a model, face crops as the model sees them, and each crop's
CMS heatmap (the CMS reprojected onto the crop, Fig. 6d: ``reproject_cms``),
computes GradCAM, GradCAM++ and ScoreCAM, and scores all four with
``cms_jax.metrics.faithfulness`` on negative explanation images.
"""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from cms_jax import metrics, viz
from cms_jax.baselines.cams import gradcam, gradcam_plusplus, scorecam
from cms_jax.baselines.common import unpack_model

FIG9_BASELINES = ("GradCAM", "GradCAM++", "ScoreCAM")
_HIGHER_IS_BETTER = {"average_drop": True, "increase_in_confidence": False, "win": True}


def confidence_fn(model: Any):
    """images (B, H, W, 3) 0-255 float RGB crops -> (B, K) probabilities of ``model``."""

    def conf(images: np.ndarray) -> np.ndarray:
        out = np.asarray(model.apply_fn(model.params, jnp.asarray(model.preprocess(images))))
        if getattr(model, "outputs_are_probs", False):
            return out
        e = np.exp(out - out.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    return conf


def baseline_heatmaps(model: Any, crops: np.ndarray, targets: np.ndarray, batch_size: int = 8,
                      scorecam_batch: int = 64) -> dict[str, np.ndarray]:
    """GradCAM, GradCAM++ and ScoreCAM maps of uint8 crops at the model input size.

    Args:
      model: FaceModel with features_fn/head_fn.
      crops: (N, H, W, 3) uint8 RGB crops at model.input_size.
      targets: (N,) classes to explain.
      batch_size: images per jitted call (the last batch is padded to keep one shape).
      scorecam_batch: masked images per ScoreCAM forward pass.

    Returns:
      name -> (N, H, W) float32 heatmaps.
    """
    fns = unpack_model(model)
    methods = {"GradCAM": lambda x, t: gradcam(*fns, x, t),
               "GradCAM++": lambda x, t: gradcam_plusplus(*fns, x, t),
               "ScoreCAM": lambda x, t: scorecam(*fns, x, t, batch_size=scorecam_batch)}
    out = {name: [] for name in methods}
    n = len(crops)
    for i in range(0, n, batch_size):
        sl = np.arange(i, i + batch_size).clip(max=n - 1)  # pad by repeating the last image
        x = jnp.asarray(model.preprocess(crops[sl]))
        t = jnp.asarray(np.asarray(targets)[sl], jnp.int32)
        keep = min(batch_size, n - i)
        for name, fn in methods.items():
            out[name].append(np.asarray(fn(x, t))[:keep])
    return {name: np.concatenate(v).astype(np.float32) for name, v in out.items()}


def reproject_cms(cms: np.ndarray, canon_xy: np.ndarray, image_xy: np.ndarray,
                  image_hw: tuple[int, int], patch_size: float,
                  valid: np.ndarray | None = None) -> np.ndarray:
    """Fig. 6d: the CMS read at the canonical vertices and splatted at the image's vertices.

    Args:
      cms: (H_F, W_F) canonical map.
      canon_xy: (V, 2) canonical vertex positions on the CMS canvas.
      image_xy: (V, 2) the same vertices in the crop's pixels.
      image_hw: (H, W) of the crop.
      patch_size: splat square side in crop pixels (the occlusion side).
      valid: optional (V,) bool, vertices to draw (visible and inside the crop).

    Returns:
      (H, W) float32 heatmap; 0 where no vertex square reaches.
    """
    from cms_jax.projection import reproject, sample_at

    values = sample_at(cms, canon_xy)
    return reproject(values, image_xy, tuple(image_hw), patch_size, valid)


def fig9_table(model: Any, crops: np.ndarray, cms_maps: np.ndarray,
               targets: np.ndarray | None = None, s_frac: float | None = None,
               batch_size: int = 8, scorecam_batch: int = 64, per_image: bool = False
               ) -> tuple[dict, dict[str, np.ndarray]]:
    """Average Drop %, % Increase, Win % of GradCAM, GradCAM++, ScoreCAM and CMS (Fig. 9).

    Args:
      model: FaceModel with features_fn/head_fn.
      crops: (N, H, W, 3) uint8 crops at model.input_size.
      cms_maps: (N, H, W) CMS reprojected onto each crop.
      targets: (N,) classes (e.g. labels); None = the model's prediction on each crop.
      s_frac: Eq. 8 sum; see ``metrics.normalize_heatmaps``.
      batch_size, scorecam_batch: see ``baseline_heatmaps``.
      per_image: also keep ``table["per_image"]`` (see ``metrics.faithfulness``).

    Returns:
      (table from ``metrics.faithfulness``, name -> (N, H, W) heatmaps of all four methods).
    """
    crops = np.asarray(crops)
    if crops.dtype != np.uint8 or crops.ndim != 4:
        raise ValueError(f"crops must be uint8 (N, H, W, 3), got {crops.dtype} {crops.shape}")
    if np.shape(cms_maps) != crops.shape[:3]:
        raise ValueError(f"cms_maps {np.shape(cms_maps)} must be (N, H, W) = {crops.shape[:3]}")
    conf = confidence_fn(model)
    if targets is None:
        targets = np.concatenate([conf(crops[i:i + batch_size].astype(np.float32)).argmax(-1)
                                  for i in range(0, len(crops), batch_size)])
    maps = baseline_heatmaps(model, crops, targets, batch_size, scorecam_batch)
    maps["CMS"] = np.asarray(cms_maps, np.float32)
    table = metrics.faithfulness(conf, crops.astype(np.float32), maps, np.asarray(targets),
                                 s_frac=s_frac, batch_size=batch_size, per_image=per_image)
    return table, maps


def markdown_table(table: dict, title: str = "") -> str:
    """The Fig. 9 table as markdown, best value of each column in bold."""
    names = list(table["methods"])
    lines = [f"**{title}** (N = {table['n']})" if title else f"N = {table['n']}", "",
             "| Method | Average Drop % (higher better) | % Increase in Confidence (lower better) "
             "| Win % | 1-H clipped (% px) |", "|---|---|---|---|---|"]
    best = {}
    for key, higher in _HIGHER_IS_BETTER.items():
        vals = [table["methods"][n][key] for n in names]
        best[key] = max(vals) if higher else min(vals)
    for n in names:
        row = table["methods"][n]
        cells = [f"**{row[k]:.2f}**" if row[k] == best[k] else f"{row[k]:.2f}" for k in _HIGHER_IS_BETTER]
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {100 * row['clip_rate']:.2f} |")
    return "\n".join(lines)


def method_grid(crops: np.ndarray, maps: dict[str, np.ndarray], rows: int = 4) -> np.ndarray:
    """Fig. 2-style uint8 grid: each row a face, then one jet overlay per method."""
    tiles = []
    for i in range(min(rows, len(crops))):
        tiles.append(crops[i])
        tiles += [viz.overlay(crops[i], m[i]) for m in maps.values()]
    return viz.grid(tiles, cols=1 + len(maps))
