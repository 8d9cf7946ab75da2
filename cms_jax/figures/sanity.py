"""Fig. 7: Adebayo et al.'s sanity check by cascading randomisation, from the output layer down.

The last k parametrised layers (those holding a kernel: convolutions,
separable convolutions, dense layers) get fresh weights drawn from a normal
with each array's own mean and standard deviation; batch-norm statistics and
earlier layers stay trained. The CMS (Eq. 6) of each randomised model over
the same aligned faces, explaining the trained model's predicted class, is
compared with the trained model's CMS by Spearman rank correlation (of the
values and of their absolute values) and SSIM. A saliency method passes when
the similarity falls as more layers are randomised. The trained model's CMS
of one random half of the faces against the other half's gives the level
that sampling noise alone reaches (dotted lines).
"""
from __future__ import annotations

import dataclasses
import os
import time

import matplotlib.pyplot as plt
import numpy as np

from cms_jax import models, viz
from cms_jax.accumulate import cms_from_drops
from cms_jax.figures import common, per_image, stats
from cms_jax.pipeline import RunConfig
from cms_jax.data.image_list import expand_images


def layer_order(params: dict, apply_fn=None, image_shape=None) -> list[str]:
    """Top-level layer names holding a kernel, from input to output.

    With ``apply_fn`` and ``image_shape`` (H, W, C) the order is the order in
    which the forward pass first uses each layer's weights (the model traced
    into a flat program), so it holds whatever order the dict's keys are in: an
    Orbax round trip sorts them alphabetically. Without, the dict's own order.
    """
    def has_kernel(tree):
        return isinstance(tree, dict) and any(k == "kernel" or has_kernel(v) for k, v in tree.items())

    names = [k for k, v in params.items() if has_kernel(v)]
    if not names:
        raise ValueError(f"no layer with a kernel among the parameters {sorted(params)[:10]}")
    if apply_fn is None:
        return names
    import jax

    from cms_jax.incremental.program import trace
    prog = trace(apply_fn, params, tuple(image_shape))
    first: dict[int, int] = {}
    for i, eqn in enumerate(prog.eqns):
        for v in eqn.ins:
            if isinstance(v, int):
                first.setdefault(v, i)
    paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    use: dict[str, int] = {}
    for path, vid in zip(paths, prog.param_ids):
        top = str(getattr(path[0], "key", path[0]))
        if top in names and vid in first:
            use[top] = min(use.get(top, first[vid]), first[vid])
    unused = [n for n in names if n not in use]
    if unused:
        raise ValueError(f"layers {unused} hold weights the forward pass never uses")
    return sorted(names, key=use.__getitem__)


def randomise(params: dict, layers: list[str], seed: int = 0) -> dict:
    """A copy of ``params`` whose ``layers`` hold normal draws with each array's mean and std."""
    rng = np.random.default_rng(seed)

    def redraw(tree):
        if isinstance(tree, dict):
            return {k: redraw(v) for k, v in tree.items()}
        a = np.asarray(tree)
        return rng.normal(a.mean(), a.std(), a.shape).astype(a.dtype)

    missing = [l for l in layers if l not in params]
    if missing:
        raise ValueError(f"randomise: no layers {missing} in the parameters")
    return {k: (redraw(v) if k in layers else v) for k, v in params.items()}


def default_levels(num_layers: int) -> list[int]:
    """1, 2, 3, 4, then doubling, then all ``num_layers`` (the paper shows 1-4)."""
    out, k = [], 1
    while k < num_layers:
        out.append(k)
        k = k + 1 if k < 4 else k * 2
    return out + [num_layers]


def figure(cfg: RunConfig, out_dir: str, *, levels: list[int] | None = None, seed: int = 0,
           workers: int = 2, align_cache: str | None = None) -> dict:
    """Write fig07.png (similarity against layers randomised), fig07_maps.png and fig07.json.

    Args:
      cfg: model (a jit-able FaceModel with a parameter dict) and images.
      out_dir: output folder.
      levels: numbers of output-side layers randomised (default `default_levels`).
      seed: seed of the random weights.
      workers: host processes for alignment.
      align_cache: landmark cache folder.

    Returns:
      The JSON dict.
    """
    model = models.load(cfg.model)
    if not model.jittable or not isinstance(model.params, dict) or not model.params:
        raise ValueError(f"fig07: {cfg.model} has no parameter dict to randomise (black-box model)")
    order = layer_order(model.params, model.apply_fn, (*model.input_size, model.channels))
    levels = levels or default_levels(len(order))
    bad = [k for k in levels if not 1 <= k <= len(order)]
    if bad:
        raise ValueError(f"fig07: levels {bad} outside [1, {len(order)}] (layers: {order})")
    fm = per_image.FaceMaps(cfg, model=model)
    faces, skipped = fm.prepare(expand_images(cfg.images, cfg.max_images), workers, align_cache)
    if not faces:
        raise ValueError(f"fig07: no face aligned in {cfg.images!r}")
    hw, canon_xy = fm.canon.canvas_hw, fm.canon.vertices

    def cms_of(maker, targets=None):
        d = maker.drops(faces, targets=targets)
        return cms_from_drops(d["drops"], d["valid"], canon_xy, hw, d["sides"], cfg.reduce), d

    t0 = time.monotonic()
    trained, d0 = cms_of(fm)
    cov = fm.coverage(d0["sides"])
    # The noise floor: the trained model's CMS of one random half of the faces against the other's.
    half = np.random.default_rng(seed).permutation(len(faces))
    halves = [cms_from_drops(d0["drops"][h], d0["valid"][h], canon_xy, hw, d0["sides"][h], cfg.reduce)
              for h in (half[:len(faces) // 2], half[len(faces) // 2:])]
    split_half = stats.compare(*halves, cov) if len(faces) >= 2 else None
    maps, rows = [trained], []
    for k in levels:
        rand = dataclasses.replace(model, params=randomise(model.params, order[-k:], seed + k))
        cms_k, dk = cms_of(per_image.FaceMaps(cfg, model=rand, canon=fm.canon), d0["targets"])
        maps.append(cms_k)
        rows.append({"layers_randomised": k, "layers": order[-k:][::-1],
                     "mean_clean_confidence": float(dk["clean"].mean()),
                     **stats.compare(trained, cms_k, cov)})
        print(f"fig07: last {k} layers randomised: spearman {rows[-1]['spearman']:.3f} "
              f"ssim {rows[-1]['ssim']:.3f} ({time.monotonic() - t0:.0f}s)", flush=True)
    os.makedirs(out_dir, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for key in ("spearman", "spearman_abs", "ssim"):
        line, = ax.plot([0] + levels, [1.0] + [r[key] for r in rows], marker="o", label=key)  # 0: trained
        if split_half is not None:
            ax.axhline(split_half[key], color=line.get_color(), ls=":", lw=1)
    ax.plot([], [], color="gray", ls=":", label="trained, half vs half")
    ax.axhline(0, color="gray", lw=0.5)
    ax.set_xlabel("layers randomised, from the output")
    ax.set_ylabel("similarity to the trained model's CMS")
    ax.set_ylim(-1.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"Fig. 7: {cfg.model}, CMS over {len(faces)} faces", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "fig07.png"), dpi=100, facecolor="white")
    plt.close(fig)
    tiles = [viz.overlay(fm.canon.image, m, cov) for m in maps]
    common.panels(tiles, ["trained"] + [f"last {k} randomised" for k in levels],
                  os.path.join(out_dir, "fig07_maps.png"), cols=min(len(tiles), 6))
    np.savez(os.path.join(out_dir, "fig07_maps.npz"), trained=trained, randomised=np.stack(maps[1:]),
             levels=np.asarray(levels))
    return common.write_json(os.path.join(out_dir, "fig07.json"), {
        "model": cfg.model, "faces": len(faces), "skipped": skipped, "seed": seed,
        "layer_order": order, "trained_mean_clean_confidence": float(d0["clean"].mean()),
        "trained_split_half": split_half,
        "levels": rows, "seconds": round(time.monotonic() - t0, 1)})
