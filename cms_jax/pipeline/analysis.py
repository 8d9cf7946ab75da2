"""After a run: region table, smooth CMS, per-group CMS, differences with significance, top faces, report.

Everything here reads the run's outputs (``cms.npy``, ``drops.npz``): no
rescoring. Group CMSs come from the run's own group sums when given (the
main job accumulates them, reduced across processes), else from the stored
drops, streamed in batches, so 20,000 images never become 20,000 maps in
memory. The permutation test of each group difference renders the CIS maps
of at most ``test_images`` images per group (a fixed random sample; the
note in the report says how many) on a canvas of at most ``test_side`` px
(the canonical face scaled down, each image's canonical side f_i with it), so its memory and time do not
grow with the display canvas; the difference it measures and its
significance mask are shown scaled up to the canvas (nearest pixel).
"""
from __future__ import annotations

import itertools

import cv2
import numpy as np

from cms_jax import groups as grp
from cms_jax import regions, storage
from cms_jax.accumulate import cms_from_drops
from cms_jax.pipeline import writers
from cms_jax.pipeline.reader import landmark_cache, read_run
from cms_jax.pipeline.report import write_report
from cms_jax.pipeline.top_faces import top_faces
from cms_jax.projection import square_coverage
from cms_jax.render import colours, panel, smooth

REPORT_PANEL = 360  # px: width of a group or difference panel in the report (three to a row)


def _diff_panel(canon, diff, significant, coverage, unit: str) -> tuple[np.ndarray, colours.Scale]:
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


def _test_grid(canon, sides: np.ndarray, side: int):
    """(vertices, canvas_hw, sides) of the canonical face scaled to at most ``side`` px (itself when smaller)."""
    s = min(1.0, side / max(canon.canvas_hw))
    hw = tuple(max(1, int(round(n * s))) for n in canon.canvas_hw)
    return canon.vertices * np.float32(s), hw, np.asarray(sides, np.float64) * s


def _group_differences(canon, per, lab, drops, valid, sides, coverage, unit, *, permutations, alpha, test_images,
                       test_side, rng) -> tuple[dict, dict, dict]:
    """For each pair of groups: (panel, test summary, significance mask on the canvas), keyed 'A - B'."""
    png, tests, masks = {}, {}, {}
    xy_t, hw_t, sides_t = _test_grid(canon, sides, test_side)
    h, w = canon.canvas_hw
    # Each group's sample is drawn and rendered once and reused by every pair it is in.
    rendered = {}
    for g in per:
        i = _sample(np.nonzero(lab == g)[0], test_images, rng)
        rendered[g] = (i, grp.cis_maps(drops[i], valid[i], xy_t, hw_t, sides_t[i]))
    for a, b in itertools.combinations(per, 2):
        (ia, cis_a), (ib, cis_b) = rendered[a], rendered[b]
        t = grp.permutation_test(cis_a, cis_b, permutations=permutations, alpha=alpha)
        sig = cv2.resize(t["significant"].astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
        sig &= coverage
        diff = cv2.resize(t["diff"], (w, h), interpolation=cv2.INTER_NEAREST)
        name = f"{a} - {b}"
        png[name], masks[name] = panel.with_legend(*_diff_panel(canon, diff, sig, coverage, f"{name}, {unit}"),
                                                   width=REPORT_PANEL), sig
        tests[name] = {"significant_pixels": int(sig.sum()), "covered_pixels": int(coverage.sum()),
                       "images": [len(ia), len(ib)], "max_abs_diff": float(np.abs(diff[coverage]).max()),
                       "test_canvas": list(hw_t)}
    return png, tests, masks


def _class_panels(canon, z, sides, coverage, summary, cms, edges, reduce, unit) -> dict[str, np.ndarray]:
    """A model with classes: the pooled CMS and one CMS per explained class (from drops.npz, as the
    group maps are), all in one colour range, captioned with their n; {} otherwise."""
    targets = z.get("targets")
    if summary.get("model_output", "classes") != "classes" or targets is None or not len(targets):
        return {}
    targets = np.asarray(targets).astype(np.int64)
    names = summary.get("model_classes") or []
    per = {}
    for t in np.unique(targets):
        i = targets == t
        name = names[t] if 0 <= t < len(names) else f"output {t}"
        per[f"{name} (n={int(i.sum())})"] = cms_from_drops(z["drops"][i], z["valid"][i], canon.vertices,
                                                         canon.canvas_hw, sides[i], reduce=reduce)
    maps = {f"all classes pooled (n={len(targets)})": cms, **per}
    shared = colours.joint([colours.fit(m, coverage, unit=unit) for m in maps.values()])
    return {k: panel.with_legend(panel.map_panel(canon.image, m, coverage, shared, edges=edges, legend=False),
                                 shared, width=REPORT_PANEL) for k, m in maps.items()}


def analyse(out_dir, canon, coverage: np.ndarray | None, summary: dict, *, grouping: str = "",
            group_maps: dict[str, np.ndarray] | None = None, permutations: int = 1000, alpha: float = 0.05,
            min_group: int = 5, test_images: int = 500, seed: int = 0, test_side: int = 256,
            align_cache=None, top_k: int = 6) -> dict:
    """Write regions.json/.md, cms_smooth.png, per-group maps and differences, and report.html into ``out_dir``.

    Returns:
      ``regions`` and ``group_tests`` (as in regions.json), ``markdown``, ``significant`` (difference
      name -> bool (H, W) mask on the canvas) and ``top_faces`` (region -> [(file, saliency)]).

    Args:
      coverage: bool (H_F, W_F), the canvas pixels some vertex square reaches; None: at the run's
        canonical sides (drops.npz).
      group_maps: each group's CMS from the run's accumulator; None computes them from drops.npz.
      test_images: images per group (a seeded random sample) in each permutation test.
      test_side: largest canvas side of the permutation test's maps.
      align_cache: the run's landmark cache (for the faces shown; None runs MediaPipe on them).
      top_k: faces shown per region.
    """
    out = storage.path(out_dir)
    run = read_run(out_dir, summary)
    cms, z, sides = run.cms, run.drops, run.sides
    unit = colours.score_unit(summary)
    masks = regions.region_masks(canon.vertices[:468], canon.canvas_hw)
    edges = panel.label_edges(masks)
    files, drops, valid = z["files"], z["drops"], z["valid"]
    if coverage is None:
        coverage = square_coverage(canon.vertices, canon.canvas_hw, sides)
    reduce = summary.get("reduce", "mean")
    maps = {"all images": cms}
    values, seen = smooth.vertex_values(drops, valid, reduce)
    sm, sm_mask = smooth.smooth_map(values, canon.vertices, canon.triangles, canon.canvas_hw, canon.depth, seen)
    one = colours.joint([colours.fit(cms, coverage, unit=unit), colours.fit(sm, sm_mask, unit=unit)])
    cms_png = panel.map_panel(canon.image, cms, coverage, one, edges=edges)  # one range: the same values
    smooth_png = panel.map_panel(canon.image, sm, sm_mask, one, edges=edges)
    writers.save_png(out / "cms_smooth.png", smooth_png)
    group_png, diff_png, notes, tests, significant = {}, {}, [], {}, {}
    if grouping:
        lab = np.asarray([g or "" for g in grp.parse_grouping(grouping, files)])
        sizes = {g: int((lab == g).sum()) for g in sorted(set(lab) - {""})}
        if group_maps is None:
            group_maps = {g: cms_from_drops(drops[lab == g], valid[lab == g], canon.vertices, canon.canvas_hw,
                                            sides[lab == g], reduce=reduce) for g in sizes}
        per = {g: m for g, m in sorted(group_maps.items()) if sizes.get(g, 0) >= min_group}
        notes.append(f"Grouping {grouping}: " + ", ".join(f"{g} ({sizes[g]})" for g in per)
                     + f"; groups under {min_group} images left out. One colour scale for all groups.")
        if per:
            shared = colours.joint([colours.fit(m, coverage, unit=unit) for m in per.values()])
        for g, m in per.items():
            maps[g] = m
            body = panel.map_panel(canon.image, m, coverage, shared, edges=edges, legend=False)
            writers.save_png(out / f"cms_group_{g}.png", panel.with_legend(body, shared))
            group_png[f"{g} (n={sizes[g]})"] = panel.with_legend(body, shared, width=REPORT_PANEL)
            storage.save_npy(out / f"cms_group_{g}.npy", m.astype(np.float32))
        diff_png, tests, significant = _group_differences(
            canon, per, lab, drops, valid, sides, coverage, unit, permutations=permutations, alpha=alpha,
            test_images=test_images, test_side=test_side, rng=np.random.default_rng(seed))
        test_words = (f"permutation test, {permutations} permutations, two-sided Welch t, max-T corrected, "
                      f"alpha {alpha}")
        notes.append(f"Permutation test: {permutations} permutations, two-sided Welch t, max-T corrected, "
                     f"alpha {alpha}, on at most {test_images} images per group (seeded random sample), "
                     f"maps at most {test_side} px.")
        diff_png = {f"{name}: {tests[name]['significant_pixels']} of {tests[name]['covered_pixels']} pixels "
                    f"significant ({test_words}; {tests[name]['images'][0]} vs {tests[name]['images'][1]} images)": im
                    for name, im in diff_png.items()}
    class_png = _class_panels(canon, z, sides, coverage, summary, cms, edges, reduce, unit)
    table, md = regions.shares_table(maps, masks, coverage)
    storage.write_json(out / "regions.json", {"regions": table, "group_tests": tests})
    storage.write_text(out / "regions.md", md)
    cache = landmark_cache(out_dir, align_cache)
    try:
        faces, face_notes = top_faces(files, drops, valid, canon, masks, summary, k=top_k, cache_dir=cache,
                                      targets=z.get("targets"), clean=z.get("clean"))
    except Exception as e:  # the example faces are an illustration: never lose the report to them
        faces, face_notes = {}, [f"No example faces: {type(e).__name__}: {e}"]
    write_report(out / "report.html", summary=summary, cms_png=cms_png, smooth_png=smooth_png,
                 regions={k: v["share"] for k, v in table.items()},
                 densities={k: v["density"] for k, v in table.items()}, groups=group_png,
                 diffs=diff_png, notes=notes, top_faces=faces, face_notes=face_notes, classes=class_png)
    return {"regions": table, "group_tests": tests, "markdown": md, "significant": significant, "top_faces": {
        r: [(x["file"], x["value"]) for x in v["faces"]] for r, v in faces.items()}}
