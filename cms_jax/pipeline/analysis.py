"""After a run: region table, per-group CMS, differences with significance, and the report.

Everything here reads the run's outputs (``cms.npy``, ``drops.npz``): no
rescoring. Group CMSs come from the run's own group sums when given (the
main job accumulates them, reduced across processes), else from the stored
drops, streamed in batches, so 20,000 images never become 20,000 maps in
memory. The permutation test of each group difference renders the CIS maps
of at most ``test_images`` images per group (a fixed random sample; the
note in the report says how many).
"""
from __future__ import annotations

import itertools

import cv2
import numpy as np

from cms_jax import groups as grp
from cms_jax import regions, viz
from cms_jax.accumulate import cms_from_drops
from cms_jax import storage
from cms_jax.pipeline import outputs
from cms_jax.report import write_report


def _diff_png(canon, diff: np.ndarray, significant: np.ndarray, coverage: np.ndarray) -> np.ndarray:
    lim = float(np.abs(diff[coverage]).max()) if coverage.any() else 0.0
    # Symmetric scale: no difference is the middle of the colour map (green).
    im = viz.overlay(canon.image, diff, coverage, vrange=(-lim, lim) if lim > 0 else (-1.0, 1.0))
    if significant.any():
        contours, _ = cv2.findContours(significant.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        im = np.ascontiguousarray(im)
        cv2.drawContours(im, contours, -1, (255, 255, 255), 1)
    return im


def _sample(idx: np.ndarray, k: int, rng) -> np.ndarray:
    return idx if len(idx) <= k else np.sort(rng.choice(idx, k, replace=False))


def analyse(out_dir, canon, coverage: np.ndarray, summary: dict, *, grouping: str = "",
            group_maps: dict[str, np.ndarray] | None = None, permutations: int = 1000, alpha: float = 0.05,
            min_group: int = 5, test_images: int = 500, seed: int = 0) -> dict:
    """Write regions.json/.md, per-group maps and differences, and report.html into ``out_dir``.

    Args:
      group_maps: each group's CMS from the run's accumulator; None computes them from drops.npz.
      test_images: images per group (a seeded random sample) in each permutation test.
    """
    out = storage.path(out_dir)
    cms = storage.load_npy(out / "cms.npy")
    masks = regions.region_masks(canon.vertices[:468], canon.canvas_hw)
    maps = {"all images": cms}
    group_png, diff_png, notes, tests = {}, {}, [], {}
    if grouping:
        z = storage.load_npz(out / "drops.npz")
        files, drops, valid, f = z["files"], z["drops"], z["valid"], float(z["canonical_patch_size"])
        lab = np.asarray([g or "" for g in grp.parse_grouping(grouping, files)])
        sizes = {g: int((lab == g).sum()) for g in sorted(set(lab) - {""})}
        if group_maps is None:
            group_maps = {g: cms_from_drops(drops[lab == g], valid[lab == g], canon.vertices, canon.canvas_hw, f,
                                            reduce=summary.get("reduce", "mean")) for g in sizes}
        per = {g: m for g, m in sorted(group_maps.items()) if sizes.get(g, 0) >= min_group}
        notes.append(f"Grouping {grouping}: " + ", ".join(f"{g} ({sizes[g]})" for g in per)
                     + f"; groups under {min_group} images left out.")
        for g, m in per.items():
            maps[g] = m
            group_png[g] = viz.overlay(canon.image, m, coverage)
            storage.save_npy(out / f"cms_group_{g}.npy", m.astype(np.float32))
        rng = np.random.default_rng(seed)
        for a, b in itertools.combinations(per, 2):
            ia, ib = (_sample(np.nonzero(lab == g)[0], test_images, rng) for g in (a, b))
            cis_a, cis_b = (grp.cis_maps(drops[i], valid[i], canon.vertices, canon.canvas_hw, f) for i in (ia, ib))
            t = grp.permutation_test(cis_a, cis_b, permutations=permutations, alpha=alpha)
            name = f"{a} - {b}"
            diff_png[name] = _diff_png(canon, t["diff"], t["significant"] & coverage, coverage)
            tests[name] = {"significant_pixels": int((t["significant"] & coverage).sum()),
                           "covered_pixels": int(coverage.sum()), "images": [len(ia), len(ib)],
                           "max_abs_diff": float(np.abs(t["diff"][coverage]).max())}
        notes.append(f"Permutation test: {permutations} permutations, two-sided Welch t, max-T corrected, "
                     f"alpha {alpha}, on at most {test_images} images per group (seeded random sample).")
    table, md = regions.shares_table(maps, masks, coverage)
    storage.write_json(out / "regions.json", {"regions": table, "group_tests": tests})
    storage.write_text(out / "regions.md", md)
    for g, im in group_png.items():
        outputs.save_png(out / f"cms_group_{g}.png", im)
    write_report(out / "report.html", summary=summary,
                 cms_png=viz.overlay(canon.image, cms, coverage),
                 regions={k: v["share"] for k, v in table.items()},
                 densities={k: v["density"] for k, v in table.items()}, groups=group_png,
                 diffs=diff_png, notes=notes)
    return {"regions": table, "group_tests": tests, "markdown": md}
