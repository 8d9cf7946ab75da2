"""Pair maps on the canonical face: genuine and impostor CMSs, similarity / dissimilarity parts, the test.

Each pair's CIS (Eqs. 4-5) is rendered from its drops; with ``symmetric`` it is
the mean of the two directions' CIS maps (probe occluded against the clean
gallery, and the reverse), which is possible only because both live on the
same canonical face. A CMS is the mean of its pairs' CIS maps (Eq. 6):

* ``genuine`` / ``impostor``: signed, over the same-person / different-person pairs;
* ``*_similarity``: the positive part of each drop (regions whose hiding lowers
  the similarity: they make the pair match) and ``*_dissimilarity`` the negative
  part (hiding them raises it: they argue against the match), kept apart as
  CorrRISE keeps its similarity and dissimilarity maps;
* per group of the probe (``groups``): ``genuine/<group>``, ``impostor/<group>``.

`split_half` says how stable the maps are: the pairs are split in two by the
probe's person (no person's photos on both sides), each half gets its own
CMSs, and the Pearson r of the two halves' maps over the covered pixels is
reported for the genuine map, the impostor map and their difference.

The genuine - impostor difference is tested per pixel by `groups.permutation_test`
(Welch t, max-T family-wise correction) on seeded samples of the pairs' CIS maps.
"""
from __future__ import annotations

import numpy as np

from cms_jax import groups as grp
from cms_jax.accumulate import CMSAccumulator
from cms_jax.projection import canonical_map, square_coverage

PARTS = {"": lambda d: d, "_similarity": lambda d: np.maximum(d, 0), "_dissimilarity": lambda d: np.minimum(d, 0)}


def pair_cis(scores, canon_xy, canvas_hw, rows=None, part=PARTS[""]) -> np.ndarray:
    """float32 (n, H, W): the CIS of each pair (the mean of both directions when scored symmetrically)."""
    rows = np.arange(len(scores.pairs)) if rows is None else np.asarray(rows)
    out = []
    for k in rows:
        dirs = [scores.forward] + ([scores.reverse] if scores.reverse is not None else [])
        maps = [canonical_map(part(d.drops[k]), canon_xy, canvas_hw, d.sides[k], d.valid[k]) for d in dirs]
        out.append(np.mean(maps, axis=0))
    return np.asarray(out, np.float32).reshape((len(rows),) + tuple(canvas_hw))


def pair_maps(scores, canon, *, probe_groups=None) -> dict[str, np.ndarray]:
    """Every CMS of the module docstring, keyed by name (with ``" (n=...)"`` left to the caller)."""
    same = np.asarray(scores.pairs.same, bool)
    kinds = {"genuine": np.nonzero(same)[0], "impostor": np.nonzero(~same)[0]}
    if probe_groups is not None:
        for g in sorted({x for x in probe_groups if x is not None}):
            member = np.asarray([x == g for x in probe_groups])
            kinds[f"genuine/{g}"] = np.nonzero(same & member)[0]
            kinds[f"impostor/{g}"] = np.nonzero(~same & member)[0]
    out = {}
    dirs = [scores.forward] + ([scores.reverse] if scores.reverse is not None else [])
    acc = CMSAccumulator(canon.canvas_hw, reduce="mean")
    for name, rows in kinds.items():
        if not len(rows):
            continue
        for suffix, part in PARTS.items():
            if suffix and "/" in name:
                continue  # per group: the signed maps only
            # Both directions of every pair, each one CIS: their mean over 2n rows is the mean of the
            # pairs' two-direction means (Eq. 6), without holding n maps.
            state = acc.empty_state()
            for d in dirs:
                state = acc.add_drops(state, part(d.drops[rows]), d.valid[rows], canon.vertices, d.sides[rows])
            out[name + suffix] = acc.result(state)
    return out


def coverage(scores, canon) -> np.ndarray:
    """bool (H, W): the canvas pixels some scored square reaches."""
    sides = np.concatenate([scores.forward.sides] + ([scores.reverse.sides] if scores.reverse is not None else []))
    return square_coverage(canon.vertices, canon.canvas_hw, sides)


def difference_test(scores, canon, *, test_images: int = 300, test_side: int = 128, permutations: int = 1000,
                    alpha: float = 0.05, seed: int = 0) -> dict:
    """genuine - impostor, per pixel, on a ``test_side`` canvas: the significant pixels and the n of each side."""
    same = np.asarray(scores.pairs.same, bool)
    rng = np.random.default_rng(seed)
    rows = {}
    for name, idx in (("genuine", np.nonzero(same)[0]), ("impostor", np.nonzero(~same)[0])):
        rows[name] = np.sort(rng.choice(idx, min(len(idx), test_images), replace=False)) if len(idx) else idx
    if min(len(r) for r in rows.values()) < 2:
        return {"tested": False, "reason": f"needs >= 2 pairs of each kind, got {len(rows['genuine'])} genuine "
                                           f"and {len(rows['impostor'])} impostor", "images": [len(r) for r in rows.values()]}
    f = test_side / max(canon.canvas_hw)
    hw = (max(1, round(canon.canvas_hw[0] * f)), max(1, round(canon.canvas_hw[1] * f)))
    xy = canon.vertices * f

    def scaled(d):
        return type(d)(d.drops, d.valid, d.sides * np.float32(f), d.clean)

    small = type(scores)(scores.pairs, scores.similarity, scaled(scores.forward),
                         scaled(scores.reverse) if scores.reverse is not None else None, scores.skipped)
    a, b = (pair_cis(small, xy, hw, rows[k]) for k in ("genuine", "impostor"))
    t = grp.permutation_test(a, b, permutations=permutations, alpha=alpha, seed=seed)
    return {"tested": True, "test": f"per-pixel Welch t, {permutations} label permutations, max-T family-wise "
                                    f"correction, alpha {alpha}",
            "images": [len(a), len(b)], "test_canvas": list(hw), "significant_pixels": int(t["significant"].sum()),
            "max_abs_diff": float(np.abs(t["diff"]).max()), "significant": t["significant"], "diff": t["diff"]}


def split_half(scores, canon, identities, cover: np.ndarray, *, seed: int = 0) -> dict:
    """Pearson r of each CMS between two halves of the pairs split by the probe's person (module docstring).

    Args:
      scores: the pair scores.
      canon: the canonical face.
      identities: the probe's person of each scored pair (None: not known; such pairs are left out).
      cover: bool (H, W), the pixels compared.
      seed: which people fall in which half (a seeded permutation of the sorted people).
    """
    people = sorted({p for p in identities if p is not None})
    if len(people) < 2:
        return {"tested": False, "reason": f"needs probes of >= 2 people, got {len(people)}"}
    order = np.random.default_rng(seed).permutation(len(people))
    half = {people[k]: "A" if pos < len(people) // 2 else "B" for pos, k in enumerate(order)}
    labels = [half.get(p) if p is not None else None for p in identities]
    maps = pair_maps(scores, canon, probe_groups=labels)
    out = {"tested": True, "rule": f"pairs split by the probe's person (seed {seed}); Pearson r over the "
                                   f"{int(cover.sum())} covered canvas pixels",
           "people": [sum(v == h for v in half.values()) for h in "AB"]}
    same = np.asarray(scores.pairs.same, bool)
    lab = np.asarray([x or "" for x in labels])
    out["pairs"] = {k: [int(np.sum((same == (k == "genuine")) & (lab == h))) for h in "AB"]
                    for k in ("genuine", "impostor")}

    def r(a, b):
        a, b = a[cover].astype(np.float64), b[cover].astype(np.float64)
        return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")

    for kind in ("genuine", "impostor"):
        a, b = maps.get(f"{kind}/A"), maps.get(f"{kind}/B")
        out[kind] = r(a, b) if a is not None and b is not None else float("nan")
    if all(f"{k}/{h}" in maps for k in ("genuine", "impostor") for h in "AB"):
        out["difference"] = r(maps["genuine/A"] - maps["impostor/A"], maps["genuine/B"] - maps["impostor/B"])
    return out
