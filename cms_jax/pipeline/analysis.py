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

import numpy as np

from cms_jax import groups as grp
from cms_jax import regions, storage
from cms_jax.accumulate import cms_from_drops
from cms_jax.pipeline import writers
from cms_jax.pipeline.group_tests import REPORT_PANEL, correct_faces, group_differences, words
from cms_jax.pipeline.reader import landmark_cache, read_run
from cms_jax.pipeline.report import write_report
from cms_jax.pipeline.top_faces import top_faces
from cms_jax.projection import square_coverage
from cms_jax.render import colours, panel, smooth

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
            align_cache=None, top_k: int = 6, compare: str = "normalised", truth: str = "") -> dict:
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
      compare, truth: how groups are compared (`group_tests`): 'normalised' or 'raw' CIS, and a
        ``SOURCE:FIELD`` of true classes restricting the tests to correctly predicted faces.
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
        correct = None
        if truth:
            correct, line = correct_faces(truth, files, z["targets"], summary)
            notes.append(line)
        testable = [g for g in per if int(((lab == g) & (True if correct is None else correct)).sum()) >= 2]
        if len(testable) >= 2:
            diff_png, effect_png, tests, significant = group_differences(
                canon, {g: per[g] for g in testable}, lab, drops, valid, sides, coverage, unit,
                permutations=permutations, alpha=alpha, test_images=test_images, test_side=test_side,
                rng=np.random.default_rng(seed), compare=compare, correct=correct)
        else:
            effect_png = {}
            notes.append(f"No group test: fewer than two groups have 2 faces to test ({', '.join(per) or 'none'}).")
        test_words = words(compare, permutations, alpha, len(tests))
        notes.append(f"Group differences: {test_words}, on at most {test_images} images per group (seeded "
                     f"random sample), maps at most {test_side} px; the effect-size maps are Cohen's d per pixel. "
                     + ("Each image's CIS is divided by its own mean |value|, so a group the model is less sure "
                        "of cannot differ everywhere by magnitude alone (--group_compare=raw tests the drops)."
                        if compare == "normalised" else "Raw drops: a difference in the model's confidence "
                        "between groups shows as a difference of magnitude everywhere."))
        captions = {name: f"{name}: {tests[name]['significant_pixels']} of {tests[name]['covered_pixels']} pixels "
                          f"significant ({test_words}; {tests[name]['images'][0]} vs {tests[name]['images'][1]} "
                          f"images)" for name in diff_png}
        diff_png = {**{captions[k]: im for k, im in diff_png.items()},
                    **{f"{k}: effect size (Cohen's d; significant pixels outlined)": im
                       for k, im in effect_png.items()}}
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
