"""Fig. 7: Adebayo et al.'s sanity check by cascading randomisation, from the output layer down.

The cascade is cumulative, as in Adebayo et al. (2018): for each of ``draws``
independent draws, every parametrised layer (those holding a kernel:
convolutions, separable convolutions, dense layers) gets fresh weights from a
normal with each array's own mean and standard deviation, once; level k uses
that draw's weights for the last k layers and the trained ones below, so level
k + 1 is level k with one more layer randomised. Batch-norm statistics stay
trained. The CMS (Eq. 6) of each randomised model over the same aligned faces,
explaining the trained model's predicted class, is compared with the trained
model's CMS by Spearman rank correlation (of the values and of their absolute
values), SSIM and HOG similarity (`stats.compare`). Each level reports the mean,
minimum and maximum over the draws and how many draws give a negative Spearman
(a sign that repeats over draws is systematic, one that flips is the random
read-out's). Two references frame the numbers: the split-half noise floor (the
trained model's CMS of one random half of the faces against the other's, over
``draws`` random splits) and the fully random model (every layer randomised,
the last level, always included).
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


def cascade(params: dict, order: list[str], level: int, draw: dict) -> dict:
    """``params`` with the last ``level`` layers of ``order`` taken from ``draw`` (a fully random copy)."""
    top = set(order[-level:])
    return {k: (draw[k] if k in top else v) for k, v in params.items()}


def _spread(rows: list[dict]) -> dict:
    """Mean, min and max over draws of each similarity."""
    keys = rows[0].keys()
    return {**{k: float(np.mean([r[k] for r in rows])) for k in keys},
            **{f"{k}_min": float(np.min([r[k] for r in rows])) for k in keys},
            **{f"{k}_max": float(np.max([r[k] for r in rows])) for k in keys}}


def figure(cfg: RunConfig, out_dir: str, *, levels: list[int] | None = None, seed: int = 0, draws: int = 5,
           workers: int = 2, align_cache: str | None = None) -> dict:
    """Write fig07.png (similarity against layers randomised), fig07_maps.png and fig07.json.

    Args:
      cfg: model (a jit-able FaceModel with a parameter dict) and images.
      out_dir: output folder.
      levels: numbers of output-side layers randomised (default `default_levels`); the fully
        random model (all layers) is always added.
      seed: seed of the random weights and the split halves.
      draws: independent random draws of the cascade (and random splits of the noise floor).
      workers: host processes for alignment.
      align_cache: landmark cache folder.

    Returns:
      The JSON dict.
    """
    model = models.load(cfg.model)
    if not model.jittable or not isinstance(model.params, dict) or not model.params:
        raise ValueError(f"fig07: {cfg.model} has no parameter dict to randomise (black-box model)")
    if draws < 1:
        raise ValueError(f"fig07: draws must be >= 1, got {draws}")
    order = layer_order(model.params, model.apply_fn, (*model.input_size, model.channels))
    levels = levels or default_levels(len(order))
    bad = [k for k in levels if not 1 <= k <= len(order)]
    if bad:
        raise ValueError(f"fig07: levels {bad} outside [1, {len(order)}] (layers: {order})")
    levels = sorted(set(levels) | {len(order)})
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
    floor = None
    if len(faces) >= 2:
        rng = np.random.default_rng(seed)
        splits = []
        for _ in range(draws):
            half = rng.permutation(len(faces))
            halves = [cms_from_drops(d0["drops"][h], d0["valid"][h], canon_xy, hw, d0["sides"][h], cfg.reduce)
                      for h in (half[:len(faces) // 2], half[len(faces) // 2:])]
            splits.append(stats.compare(*halves, cov))
        floor = _spread(splits)
    per_level = {k: [] for k in levels}
    first_maps, clean = [], {k: [] for k in levels}
    for d in range(draws):
        full = randomise(model.params, order, seed * 1000 + d)  # one draw of every layer, used by all levels
        for k in levels:
            rand = dataclasses.replace(model, params=cascade(model.params, order, k, full))
            cms_k, dk = cms_of(per_image.FaceMaps(cfg, model=rand, canon=fm.canon), d0["targets"])
            per_level[k].append(stats.compare(trained, cms_k, cov))
            clean[k].append(float(dk["clean"].mean()))
            if d == 0:
                first_maps.append(cms_k)
        print(f"fig07: draw {d + 1}/{draws}: spearman " + ", ".join(
            f"{k}: {per_level[k][-1]['spearman']:+.2f}" for k in levels) + f" ({time.monotonic() - t0:.0f}s)",
            flush=True)
    rows = []
    full_random = _spread(per_level[len(order)])
    for k in levels:
        sp = _spread(per_level[k])
        rows.append({"layers_randomised": k, "layers": order[-k:][::-1], "draws": per_level[k],
                     "negative_spearman_draws": int(sum(r["spearman"] < 0 for r in per_level[k])),
                     "mean_clean_confidence": float(np.mean(clean[k])), **sp,
                     "below_floor": None if floor is None else bool(sp["spearman_abs_max"] < floor["spearman_abs_min"]),
                     "spearman_abs_minus_fully_random": sp["spearman_abs"] - full_random["spearman_abs"]})
    os.makedirs(out_dir, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for key in ("spearman", "spearman_abs", "ssim", "hog"):
        xs = [0] + levels
        line, = ax.plot(xs, [1.0] + [r[key] for r in rows], marker="o", label=key)  # 0: trained
        ax.fill_between(levels, [r[f"{key}_min"] for r in rows], [r[f"{key}_max"] for r in rows],
                        color=line.get_color(), alpha=0.15, lw=0)
        if floor is not None:
            ax.axhline(floor[key], color=line.get_color(), ls=":", lw=1)
    ax.plot([], [], color="gray", ls=":", label="trained, half vs half")
    ax.axhline(0, color="gray", lw=0.5)
    ax.set_xlabel("layers randomised, from the output (cumulative)")
    ax.set_ylabel("similarity to the trained model's CMS")
    ax.set_ylim(-1.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"Fig. 7: {cfg.model}, CMS over {len(faces)} faces, {draws} draws (band: min-max)", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "fig07.png"), dpi=100, facecolor="white")
    plt.close(fig)
    tiles = [viz.overlay(fm.canon.image, m, cov) for m in [trained] + first_maps]
    common.panels(tiles, ["trained"] + [f"last {k} randomised" for k in levels],
                  os.path.join(out_dir, "fig07_maps.png"), cols=min(len(tiles), 6))
    np.savez(os.path.join(out_dir, "fig07_maps.npz"), trained=trained, randomised=np.stack(first_maps),
             levels=np.asarray(levels))
    return common.write_json(os.path.join(out_dir, "fig07.json"), {
        "model": cfg.model, "faces": len(faces), "skipped": skipped, "seed": seed, "draws": draws,
        "cascade": "cumulative: one random draw of every layer per draw; level k takes the last k from it",
        "layer_order": order, "trained_mean_clean_confidence": float(d0["clean"].mean()),
        "trained_split_half": floor, "fully_random": full_random,
        "levels": rows, "seconds": round(time.monotonic() - t0, 1)})
