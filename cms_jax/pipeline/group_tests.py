"""The group tests of a run: where do groups' CIS maps differ, beyond what confidence alone explains?

From the stored drops (no rescoring), per group a seeded sample of at most
``test_images`` faces is rendered as CIS maps on a canvas of at most ``test_side``
px. Then, by default (``compare='normalised'``):

* each CIS is divided by its own mean |value| over the covered pixels
  (`groups.normalise_per_image`). Probability drops scale with the clean
  confidence, so a model sure of one group and unsure of another gives raw maps
  that differ "everywhere"; the normalised maps compare where each face's saliency
  lies. ``compare='raw'`` tests the drops themselves.
* with ``correct`` (the run's ``group_truth``), only faces whose explained class is
  their true class are tested, so a group's map is not a mix of right and wrong
  decisions in another proportion than the other group's.
* every pair of groups is tested at every pixel, and also on each facial region's
  mean, with one max-T family over all pairs and pixels (regions: all pairs and
  regions) of the run (`groups.pairwise_tests`), so 28 pair tests share one
  family-wise error rate instead of each being corrected only within itself.
* each difference also gets its effect-size map (Cohen's d per pixel).
"""
from __future__ import annotations

import cv2
import numpy as np

from cms_jax import groups as grp
from cms_jax import regions
from cms_jax.projection import square_coverage
from cms_jax.render import colours, panel

REPORT_PANEL = 360  # px: width of a group or difference panel in the report (three to a row)


def diff_panel(canon, diff, significant, coverage, unit: str) -> tuple[np.ndarray, colours.Scale]:
    """Difference map (no colour bar yet): diverging about zero; full colour and an outline where
    significant, faded elsewhere."""
    scale = colours.fit(diff, coverage, unit=unit, diverging=True)
    im = panel.map_panel(canon.image, diff, coverage, scale, alpha=np.where(significant, 0.8, 0.25), legend=False)
    if significant.any():
        contours, _ = cv2.findContours(significant.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        im = np.ascontiguousarray(im)
        cv2.drawContours(im, contours, -1, (0, 0, 0), 1)
    return im, scale


def _sample(idx: np.ndarray, k: int, rng) -> np.ndarray:
    return idx if len(idx) <= k else np.sort(rng.choice(idx, k, replace=False))


def scaled_grid(canon, sides: np.ndarray, side: int):
    """(vertices, canvas_hw, sides) of the canonical face scaled to at most ``side`` px (itself when smaller)."""
    s = min(1.0, side / max(canon.canvas_hw))
    hw = tuple(max(1, int(round(n * s))) for n in canon.canvas_hw)
    return canon.vertices * np.float32(s), hw, np.asarray(sides, np.float64) * s


def words(compare: str, permutations: int, alpha: float, pairs: int) -> str:
    """How the differences were tested, in the words of the captions."""
    what = "per-image-normalised CIS" if compare == "normalised" else "raw drops"
    return (f"{what}; permutation test, {permutations} permutations, two-sided Welch t, max-T corrected over "
            f"all {pairs} pair{'s' if pairs != 1 else ''} and pixels, alpha {alpha}")


def group_differences(canon, per, lab, drops, valid, sides, coverage, unit, *, permutations, alpha, test_images,
                      test_side, rng, compare: str = "normalised", correct: np.ndarray | None = None
                      ) -> tuple[dict, dict, dict, dict]:
    """All pairs of the groups ``per``: (difference panels, effect-size panels, tests, significance masks).

    Each dict is keyed 'A - B'; ``tests`` also holds each pair's region table.
    """
    groups = list(per)
    xy_t, hw_t, sides_t = scaled_grid(canon, sides, test_side)
    h, w = canon.canvas_hw
    eligible = np.ones(len(lab), bool) if correct is None else np.asarray(correct, bool)
    picked, maps, labels = [], [], []
    for g in groups:  # each group's sample is drawn and rendered once and used by every pair
        i = _sample(np.nonzero((lab == g) & eligible)[0], test_images, rng)
        picked.append(i)
        maps.append(grp.cis_maps(drops[i], valid[i], xy_t, hw_t, sides_t[i]))
        labels += [g] * len(i)
    maps, labels = np.concatenate(maps), np.asarray(labels)
    idx = np.concatenate(picked)
    cover_t = square_coverage(xy_t, hw_t, sides_t[idx])
    if compare == "normalised":
        maps, usable = grp.normalise_per_image(maps, cover_t)
        maps, labels = maps[usable], labels[usable]
    unit_d = "per-image-normalised CIS" if compare == "normalised" else unit
    pixel = grp.pairwise_tests(maps, labels, groups, permutations=permutations, alpha=alpha)
    masks_t = regions.region_masks(xy_t[:468], hw_t)
    table = grp.region_means(maps, masks_t, cover_t)
    region = grp.pairwise_tests(table, labels, groups, permutations=permutations, alpha=alpha)
    png, effect_png, tests, sig_masks = {}, {}, {}, {}
    for name, t in pixel["pairs"].items():
        sig = cv2.resize(t["significant"].astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
        sig &= coverage
        diff = cv2.resize(t["diff"], (w, h), interpolation=cv2.INTER_NEAREST)
        eff = cv2.resize(t["effect"], (w, h), interpolation=cv2.INTER_NEAREST)
        png[name] = panel.with_legend(*diff_panel(canon, diff, sig, coverage, f"{name}, {unit_d}"),
                                      width=REPORT_PANEL)
        effect_png[name] = panel.with_legend(*diff_panel(canon, eff, sig, coverage, f"{name}, Cohen's d"),
                                             width=REPORT_PANEL)
        sig_masks[name] = sig
        r = region["pairs"][name]
        tests[name] = {"significant_pixels": int(sig.sum()), "covered_pixels": int(coverage.sum()),
                       "images": t["images"], "max_abs_diff": float(np.abs(diff[coverage]).max()),
                       "max_abs_effect": float(np.abs(eff[coverage]).max()), "test_canvas": list(hw_t),
                       "compare": compare, "family": pixel["family"],
                       "regions": {k: {"diff": float(r["diff"][j]), "effect": float(r["effect"][j]),
                                       "p_fwer": float(r["p_fwer"][j]), "significant": bool(r["significant"][j])}
                                   for j, k in enumerate(masks_t)}}
    return png, effect_png, tests, sig_masks


def correct_faces(spec: str, files, targets, summary: dict) -> tuple[np.ndarray, str]:
    """bool (N,): the faces whose explained class is their true class under ``spec``; and a note line."""
    import types

    from cms_jax import sources
    from cms_jax.scoring.labels import class_indices

    model = types.SimpleNamespace(name=summary.get("model"), class_names=summary.get("model_classes") or (),
                                  output=summary.get("model_output", "classes"))
    index = class_indices(spec, model)
    truth = sources.read(spec, list(files))
    ok = np.asarray([t is not None and index.get(t) == int(c) for t, c in zip(truth, targets)])
    known = sum(t is not None for t in truth)
    return ok, (f"Group tests on correctly predicted faces only ({spec}): {int(ok.sum())} of {known} faces with a "
                f"true class ({len(truth) - known} without one left out).")
