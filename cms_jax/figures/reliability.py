"""Fig. 5 at scale: split-half reliability of the CMS against n, for all faces and per group.

"How many images does a CMS need?" is answered without a reference map:
each random order of a group's images is cut into two disjoint halves, and
the CMS (Eq. 6) of the first n images of one half is correlated (Pearson and
Spearman over the covered canonical face) with the CMS of the first n of the
other. The n at which the mean split-half Pearson first reaches 0.9 and 0.95
is read off the curve (linear interpolation in log n between the measured
sizes; None when it is never reached). Everything comes from a run's stored
drops (no rescoring), streamed through one `CMSAccumulator` per half.
"""
from __future__ import annotations

import numpy as np

from cms_jax import sources
from cms_jax.accumulate import CMSAccumulator
from cms_jax.figures import common, stats

SPLIT_NS = (10, 20, 50, 100, 200, 300, 500, 700, 1000, 1500, 2000, 3000, 5000, 7000, 10000)
THRESHOLDS = (0.9, 0.95)


def rows_by_group(files, spec: str) -> dict[str, np.ndarray]:
    """``{'all': every row}`` plus the rows of each group of a ``SOURCE:FIELD[+FIELD]`` spec."""
    out = {"all": np.arange(len(files))}
    names = np.asarray([n or "" for n in sources.read(spec, files)]) if spec else np.zeros(0)
    for g in sorted(set(names) - {""}):
        out[g] = np.flatnonzero(names == g)
    return out


def split_half(run: common.Run, idx: np.ndarray, ns=SPLIT_NS, orders: int = 5, seed: int = 0) -> dict:
    """Split-half Pearson and Spearman of the images ``idx`` of ``run`` at each n up to half of them.

    Returns:
      ``{"images", "ns", "pearson" (orders, len(ns)), "spearman" (same)}``.
    """
    acc = CMSAccumulator(run.canon.canvas_hw)
    rng = np.random.default_rng(seed)
    idx = np.asarray(idx)
    ns = [n for n in ns if n <= len(idx) // 2]
    pear, spear = np.zeros((orders, len(ns))), np.zeros((orders, len(ns)))

    def add(state, rows):
        return acc.add_drops(state, run.drops[rows], run.valid[rows], run.canon.vertices, run.sides[rows])

    for o in range(orders):
        order = idx[rng.permutation(len(idx))]
        half_a, half_b = order[:len(idx) // 2], order[len(idx) // 2:]
        sa, sb, done = acc.empty_state(), acc.empty_state(), 0
        for j, n in enumerate(ns):
            sa, sb, done = add(sa, half_a[done:n]), add(sb, half_b[done:n]), n
            a, b = acc.result(sa), acc.result(sb)
            pear[o, j] = stats.pearson(a, b, run.coverage)
            spear[o, j] = stats.spearman(a, b, run.coverage)
    return {"images": int(len(idx)), "ns": ns, "pearson": pear, "spearman": spear}


def n_reaching(ns, values, level: float) -> float | None:
    """The n where the curve ``values`` (mean over orders) first reaches ``level``, interpolated in log n."""
    ns, values = np.asarray(ns, float), np.asarray(values, float)
    hit = np.nonzero(values >= level)[0]
    if hit.size == 0:
        return None
    j = int(hit[0])
    if j == 0:
        return float(ns[0])
    t = (level - values[j - 1]) / (values[j] - values[j - 1])
    return float(np.exp(np.log(ns[j - 1]) + t * (np.log(ns[j]) - np.log(ns[j - 1]))))


def table(run: common.Run, groups: dict[str, np.ndarray], *, ns=SPLIT_NS, orders: int = 5, seed: int = 0,
          min_images: int = 40) -> dict:
    """Split-half curves and threshold n for each named group of row indices (groups under
    ``min_images`` images are listed with their size only)."""
    out = {}
    for name, idx in groups.items():
        if len(idx) < min_images:
            out[name] = {"images": int(len(idx)), "note": f"fewer than {min_images} images"}
            continue
        c = split_half(run, idx, ns, orders, seed)
        pm, sm = c["pearson"].mean(0), c["spearman"].mean(0)
        out[name] = {"images": c["images"], "ns": c["ns"], "orders": orders,
                     "pearson_mean": pm.tolist(), "pearson_sd": c["pearson"].std(0).tolist(),
                     "pearson_range": _range(c["pearson"]),
                     "spearman_mean": sm.tolist(), "spearman_sd": c["spearman"].std(0).tolist(),
                     "spearman_range": _range(c["spearman"]),
                     **{f"n_pearson_{lv}": n_reaching(c["ns"], pm, lv) for lv in THRESHOLDS},
                     **{f"n_spearman_{lv}": n_reaching(c["ns"], sm, lv) for lv in THRESHOLDS},
                     **{f"n_pearson_{lv}_range": _n_range(c["ns"], c["pearson"], lv) for lv in THRESHOLDS}}
    return out


def _range(curves: np.ndarray) -> list[list[float]]:
    """Per n, the 2.5th and 97.5th percentile over the random orders (each order one split into halves)."""
    return np.percentile(curves, [2.5, 97.5], axis=0).T.tolist() if len(curves) else []


def _n_range(ns, curves: np.ndarray, level: float) -> list[float] | None:
    """The 2.5th-97.5th percentile over orders of the n at which each order's own curve reaches
    ``level``; None when some order never reaches it."""
    hits = [n_reaching(ns, c, level) for c in curves]
    if not hits or any(h is None for h in hits):
        return None
    return np.percentile(hits, [2.5, 97.5]).tolist()


def markdown(result: dict) -> str:
    """The threshold table: images, split-half Pearson at the largest n, n reaching 0.9 / 0.95."""
    def fmt(v):
        return "not reached" if v is None else f"{v:,.0f}"

    def span(r, key):
        v = r.get(key)
        return "" if not v else f" [{v[0]:,.0f}, {v[1]:,.0f}]"

    orders = next((r["orders"] for r in result.values() if "orders" in r), None)
    lines = ["| group | images | largest n per half | Pearson there | n for Pearson 0.9 | n for 0.95 "
             "| n for Spearman 0.9 | n for 0.95 |", "|---|---|---|---|---|---|---|---|"]
    for name, r in result.items():
        if "ns" not in r or not r["ns"]:
            lines.append(f"| {name} | {r['images']} | - | - | - | - | - | - |")
            continue
        there = f"{r['pearson_mean'][-1]:.3f}"
        if r.get("pearson_range"):
            lo, hi = r["pearson_range"][-1]
            there += f" [{lo:.3f}, {hi:.3f}]"
        lines.append(f"| {name} | {r['images']:,} | {r['ns'][-1]:,} | {there} | "
                     f"{fmt(r['n_pearson_0.9'])}{span(r, 'n_pearson_0.9_range')} | "
                     f"{fmt(r['n_pearson_0.95'])}{span(r, 'n_pearson_0.95_range')} | {fmt(r['n_spearman_0.9'])} | "
                     f"{fmt(r['n_spearman_0.95'])} |")
    if orders:
        lines += ["", f"Means over {orders} random splits into halves; in brackets the 2.5th-97.5th percentile over "
                      f"the splits (of the Pearson, and of the n at which each split's own curve reaches the level)."]
    return "\n".join(lines) + "\n"
