"""Fig. 5: how many images a CMS needs. The CMS (Eq. 6) of the first n images of random orders
against the CMS of the whole set, Pearson and Spearman over the canonical face.

Since a large subset shares most of its images with the whole set, the
CMS of n images from one half of the set is also compared with that of n
images from the other half (split-half reliability, disjoint images).
Subsets are formed from a run's stored per-vertex drops with a streaming
`CMSAccumulator` (no rescoring): each order adds its images once, and the
map is read off at every n. The paper reports the trends visible from 100
images and the map practically unchanged after 1,000.
"""
from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np

from cms_jax.accumulate import CMSAccumulator
from cms_jax.figures import common, stats

DEFAULT_NS = (10, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


def subset_sizes(total: int, ns=DEFAULT_NS) -> list[int]:
    """The sizes below ``total`` from ``ns``, then ``total`` itself (sorted, unique, all >= 1)."""
    if total < 1:
        raise ValueError(f"subset_sizes: the run has no image (total={total})")
    return sorted({int(n) for n in ns if 1 <= n < total} | {int(total)})


def curves(run: common.Run, ns: list[int], orders: int = 5, seed: int = 0) -> dict:
    """Correlations of the CMS of the first n images with the whole-set CMS, per random order.

    A subset of n images shares n of its images with the whole set, which
    inflates its correlation as n nears the set's size; so each order is also
    split in two halves, and the CMS of the first n images of one half is
    compared with that of the first n of the other (disjoint images, n up to
    half the set).

    Returns:
      dict with ns, pearson and spearman ((orders, len(ns))), split_ns and split_pearson /
      split_spearman ((orders, len(split_ns))), and maps (the CMS at each n, first order).
    """
    acc = CMSAccumulator(run.canon.canvas_hw)
    rng = np.random.default_rng(seed)
    full, cov, total = run.cms, run.coverage, len(run.files)
    split_ns = [n for n in ns if n <= total // 2]
    pear, spear, maps = np.zeros((orders, len(ns))), np.zeros((orders, len(ns))), []
    s_pear, s_spear = np.zeros((orders, len(split_ns))), np.zeros((orders, len(split_ns)))

    def add(state, idx):
        return acc.add_drops(state, run.drops[idx], run.valid[idx], run.canon.vertices, run.sides[idx])

    for o in range(orders):
        order = rng.permutation(total)
        state, done = acc.empty_state(), 0
        for j, n in enumerate(ns):
            state, done = add(state, order[done:n]), n
            cms_n = acc.result(state)
            pear[o, j] = stats.pearson(full, cms_n, cov)
            spear[o, j] = stats.spearman(full, cms_n, cov)
            if o == 0:
                maps.append(cms_n)
        half_a, half_b = order[:total // 2], order[total // 2:]
        sa, sb, done = acc.empty_state(), acc.empty_state(), 0
        for j, n in enumerate(split_ns):
            sa, sb, done = add(sa, half_a[done:n]), add(sb, half_b[done:n]), n
            s_pear[o, j] = stats.pearson(acc.result(sa), acc.result(sb), cov)
            s_spear[o, j] = stats.spearman(acc.result(sa), acc.result(sb), cov)
    return {"ns": list(ns), "pearson": pear, "spearman": spear, "maps": maps, "split_ns": split_ns,
            "split_pearson": s_pear, "split_spearman": s_spear}


def figure(run: common.Run, out_dir: str, *, ns=DEFAULT_NS, orders: int = 5, seed: int = 0) -> dict:
    """Write fig05.png (correlations against n, mean ± sd over orders), fig05_maps.png and fig05.json.

    Args:
      run: a finished pipeline run over the whole set.
      out_dir: output folder.
      ns: subset sizes (those >= the run's size are dropped; the whole set is added).
      orders: random orders averaged.
      seed: seed of the orders.

    Returns:
      The JSON dict.
    """
    if orders < 1:
        raise ValueError(f"fig05: orders must be >= 1, got {orders}")
    sizes = subset_sizes(len(run.files), ns)
    c = curves(run, sizes, orders, seed)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for key, colour in (("pearson", "tab:blue"), ("spearman", "tab:orange")):
        m, s = c[key].mean(0), c[key].std(0)
        ax.errorbar(sizes, m, yerr=s, marker="o", capsize=3, color=colour, label=f"{key.capitalize()} vs all")
        if c["split_ns"]:
            m, s = c["split_" + key].mean(0), c["split_" + key].std(0)
            ax.errorbar(c["split_ns"], m, yerr=s, marker="s", ls="--", capsize=3, color=colour,
                        label=f"{key.capitalize()}, disjoint halves")
    ax.set_xscale("log")
    ax.set_xlabel("images n in the CMS")
    ax.set_ylabel(f"correlation (whole set: {len(run.files)} images)")
    low = min([0.0] + [float(c[k].min()) for k in ("pearson", "spearman", "split_pearson", "split_spearman")
                       if c[k].size])
    ax.set_ylim(low - 0.05, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"Fig. 5: {run.summary['model']}, {orders} random orders (mean ± sd)", fontsize=9)
    fig.tight_layout()
    os.makedirs(out_dir, exist_ok=True)
    fig.savefig(os.path.join(out_dir, "fig05.png"), dpi=100, facecolor="white")
    plt.close(fig)
    common.panels([common.cms_tile(run, m) for m in c["maps"]], [f"n = {n}" for n in sizes],
                  os.path.join(out_dir, "fig05_maps.png"), suptitle="CMS of the first n images (one order)")
    table = [{"n": n, "pearson_mean": float(c["pearson"][:, j].mean()), "pearson_sd": float(c["pearson"][:, j].std()),
              "spearman_mean": float(c["spearman"][:, j].mean()),
              "spearman_sd": float(c["spearman"][:, j].std())} for j, n in enumerate(sizes)]
    split = [{"n": n, "pearson_mean": float(c["split_pearson"][:, j].mean()),
              "pearson_sd": float(c["split_pearson"][:, j].std()),
              "spearman_mean": float(c["split_spearman"][:, j].mean()),
              "spearman_sd": float(c["split_spearman"][:, j].std())} for j, n in enumerate(c["split_ns"])]
    return common.write_json(os.path.join(out_dir, "fig05.json"), {
        "model": run.summary["model"], "cms_dir": run.out_dir, "images": len(run.files), "orders": orders,
        "seed": seed, "curve": table, "split_half_curve": split, "pearson": c["pearson"], "spearman": c["spearman"]})
