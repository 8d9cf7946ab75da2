"""95% bootstrap CIs over faces for what a verdict reads off a CMS: region densities and shares, map correlations.

A CMS is the mean of its faces' CIS maps (Eq. 6), so its sampling error is the
faces'. A bootstrap draw resamples the faces with replacement (multinomial counts
w over N faces); its CMS is ``sum_b w_b P_b / N``, formed for every draw in one
pass over the stored drops (`accumulate.weighted_cis_sums`, no rescoring). Runs on
the same faces (several models, or several occluders of one model) are resampled
*together*, the same counts for each, so the CI of their Pearson is paired and
carries out the faces they share. Reported per run:

* each region's saliency per pixel relative to the face average
  (`regions.region_density`) and its share of the positive saliency
  (`regions.region_shares`), of the CMS and, with ``raw``, of the mean raw splat
  P* (Eq. 4, Fig. 4's unnormalised map);
* for every pair of runs, Pearson over the pixels both cover (as
  `task_models.pairwise`);
* with ``single``, Spearman of each face's own CIS with the run's CMS (Fig. 14):
  its mean with a CI, and the 5th-95th percentile over faces.

The value printed is the full-sample statistic; its 95% interval is the normal
bootstrap interval, value ± 1.96 × the standard deviation over draws (clipped to the
statistic's range), and each cell keeps the bootstrap bias (mean draw − value). Not
the percentile interval: a resampled CMS carries its draw's own noise on top of the
sample's, so the draws of a correlation between two noisy CMSs sit systematically
below the full-sample value (on 60 synthetic faces the whole percentile interval lies
below it; `tests/test_map_ci.py`), and a percentile interval would not contain the
number it qualifies.
"""
from __future__ import annotations

import numpy as np

from cms_jax import regions
from cms_jax.accumulate import weighted_cis_sums
from cms_jax.figures import common, stats


def common_rows(runs: dict[str, common.Run]) -> dict[str, np.ndarray]:
    """Each run's rows of the faces every run scored, in one order (the first run's).

    Raises:
      ValueError: the runs share no face, or use different canonical canvases.
    """
    names = list(runs)
    hw = {tuple(r.canon.canvas_hw) for r in runs.values()}
    if len(hw) != 1:
        raise ValueError(f"map CIs: the runs' canvases differ ({sorted(hw)}); compare runs of one canvas")
    shared = set(map(str, runs[names[0]].files))
    for r in runs.values():
        shared &= set(map(str, r.files))
    order = [str(f) for f in runs[names[0]].files if str(f) in shared]
    if not order:
        raise ValueError(f"map CIs: runs {names} share no scored face")
    out = {}
    for n, r in runs.items():
        where = {str(f): i for i, f in enumerate(r.files)}
        out[n] = np.asarray([where[f] for f in order])
    return out


def draw_weights(n: int, draws: int, seed: int = 0) -> np.ndarray:
    """(n, 1 + draws): column 0 all ones (the full sample), then each draw's multinomial counts."""
    rng = np.random.default_rng(seed)
    w = rng.multinomial(n, np.full(n, 1.0 / n), size=draws).T.astype(np.float32)
    return np.concatenate([np.ones((n, 1), np.float32), w], axis=1)


def cms_draws(run: common.Run, rows: np.ndarray, weights: np.ndarray, *, normalise: bool = True) -> np.ndarray:
    """(G, H, W) CMS of each weighting of ``rows`` (Eq. 6 with the run's reduce; P* with ``normalise`` off)."""
    sums, cover = weighted_cis_sums(run.drops[rows], run.valid[rows], run.canon.vertices, run.sides[rows],
                                    run.canon.canvas_hw, weights, normalise=normalise)
    reduce = run.summary.get("reduce", "mean")
    if reduce == "sum":
        return sums
    if reduce == "covered" and normalise:
        return np.where(cover > 0, sums / np.maximum(cover, 1.0), 0.0).astype(np.float32)
    return sums / np.float32(len(rows))


def _cell(values, lo: float = -np.inf, hi: float = np.inf) -> dict:
    """Column 0 is the full sample, the rest the draws: the value, its normal bootstrap 95% interval
    (clipped to [lo, hi]), the draws' standard deviation and their bias (module docstring)."""
    v = np.asarray(values, np.float64)
    sd = float(v[1:].std(ddof=1)) if len(v) > 2 else 0.0
    return {"value": float(v[0]), "ci": [float(max(lo, v[0] - 1.96 * sd)), float(min(hi, v[0] + 1.96 * sd))],
            "sd": sd, "bias": float(v[1:].mean() - v[0]) if len(v) > 1 else 0.0}


def region_cis(maps: np.ndarray, masks: dict[str, np.ndarray], coverage: np.ndarray) -> dict:
    """``{"density": {region: cell}, "share": {region: cell}}`` of (G, H, W) maps (row 0 the full sample)."""
    dens = [regions.region_density(m, masks, coverage) for m in maps]
    share = [regions.region_shares(m, masks) for m in maps]
    return {"density": {k: _cell([d[k] for d in dens], lo=0.0) for k in masks},
            "share": {k: _cell([s[k] for s in share], lo=0.0, hi=100.0) for k in masks}}


def single_cis(run: common.Run, rows: np.ndarray, *, draws: int, seed: int = 0) -> dict:
    """Spearman of each face's CIS with the CMS of ``rows`` (Fig. 14): mean with CI, 5-95% range, n."""
    from cms_jax.figures.paired import bootstrap_mean
    from cms_jax.projection import count_normalise, splat

    cms = cms_draws(run, rows, np.ones((len(rows), 1), np.float32))[0]
    rho = []
    for i in rows:
        p_star, count = splat(run.drops[i], run.canon.vertices, run.canon.canvas_hw, float(run.sides[i]),
                              run.valid[i])
        rho.append(stats.spearman(np.asarray(count_normalise(p_star, count)), cms, run.coverage & (count > 0)))
    rho = np.asarray(rho)
    b = bootstrap_mean(rho, draws=draws, seed=seed)
    return {"mean": b["mean"], "ci": b["ci"], "n": b["n"],
            "range_5_95": [float(np.percentile(rho, 5)), float(np.percentile(rho, 95))]}


def report(runs: dict[str, common.Run], *, draws: int = 200, seed: int = 0, raw: bool = False,
           single: bool = False) -> dict:
    """Region and correlation CIs of several runs on their shared faces (module docstring).

    Returns:
      ``{"faces", "draws", "seed", "runs": {name: {"out_dir", "cms": region cells, "raw"?, "single"?}},
      "pearson": {"a vs b": cell + "pixels"}}``.
    """
    rows = common_rows(runs)
    n = len(next(iter(rows.values())))
    w = draw_weights(n, draws, seed)
    first = next(iter(runs.values()))
    masks = regions.region_masks(first.canon.vertices[:468], first.canon.canvas_hw)
    out = {"faces": n, "draws": draws, "seed": seed, "runs": {}, "pearson": {}}
    maps = {}
    for name, r in runs.items():
        maps[name] = cms_draws(r, rows[name], w)
        entry = {"out_dir": r.out_dir, "model": r.summary.get("model"), "cms": region_cis(maps[name], masks, r.coverage)}
        if raw:
            entry["raw"] = region_cis(cms_draws(r, rows[name], w, normalise=False), masks, r.coverage)
        if single:
            entry["single"] = single_cis(r, rows[name], draws=draws * 5, seed=seed)
        out["runs"][name] = entry
    names = list(runs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = runs[a].coverage & runs[b].coverage
            cell = _cell([stats.pearson(x, y, both) for x, y in zip(maps[a], maps[b])], lo=-1.0, hi=1.0)
            out["pearson"][f"{a} vs {b}"] = {**cell, "pixels": int(both.sum())}
    return out


def _fmt(c: dict, f: str = "{:.2f}") -> str:
    return f"{f.format(c['value'])} [{f.format(c['ci'][0])}, {f.format(c['ci'][1])}]"


def markdown(result: dict) -> str:
    """The region and correlation tables of `report`, every cell with its 95% CI."""
    lines = [f"95% bootstrap CIs over the {result['faces']} faces every run scored ({result['draws']} draws, "
             f"the same faces resampled for every run).", ""]
    some = next(iter(result["runs"].values()))
    regs = list(some["cms"]["density"])
    for key, title, f in (("density", "Saliency per pixel relative to the face average", "{:.2f}"),
                          ("share", "Share of the positive saliency (%)", "{:.1f}")):
        lines += [f"**{title}**", "", "| run | map | " + " | ".join(regs) + " |", "|---|---|" + "---:|" * len(regs)]
        for name, r in result["runs"].items():
            for kind in ("cms", "raw"):
                if kind in r:
                    label = "CMS (P, Eq. 5)" if kind == "cms" else "mean P* (Eq. 4)"
                    lines.append(f"| {name} | {label} | " + " | ".join(_fmt(r[kind][key][g], f) for g in regs) + " |")
        lines.append("")
    if result["pearson"]:
        lines += ["**Pearson between the CMSs (pixels both cover)**", "", "| pair | Pearson | pixels |", "|---|---:|---:|"]
        lines += [f"| {k} | {_fmt(c, '{:.3f}')} | {c['pixels']} |" for k, c in result["pearson"].items()]
        lines.append("")
    singles = {k: r["single"] for k, r in result["runs"].items() if "single" in r}
    if singles:
        lines += ["**Spearman of each face's CIS with the CMS (Fig. 14)**", "",
                  "| run | faces | mean [95% CI] | 5th-95th percentile over faces |", "|---|---:|---|---|"]
        lines += [f"| {k} | {s['n']} | {s['mean']:.3f} [{s['ci'][0]:.3f}, {s['ci'][1]:.3f}] | "
                  f"{s['range_5_95'][0]:.3f} to {s['range_5_95'][1]:.3f} |" for k, s in singles.items()]
    return "\n".join(lines) + "\n"
