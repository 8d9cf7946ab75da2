"""After a run: region table, per-group CMS, differences with significance, and the report.

Everything here reads ``drops.npz`` (per-image vertex drops): no rescoring.
"""
from __future__ import annotations

import itertools
import json
import os

import cv2
import numpy as np

from cms_jax import groups as grp
from cms_jax import regions, viz
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


def analyse(out_dir: str, canon, coverage: np.ndarray, summary: dict, *, grouping: str = "",
            permutations: int = 1000, alpha: float = 0.05, min_group: int = 5) -> dict:
    """Write regions.json/.md, per-group maps and differences, and report.html into ``out_dir``."""
    cms = np.load(os.path.join(out_dir, "cms.npy"))
    masks = regions.region_masks(canon.vertices[:468], canon.canvas_hw)
    maps = {"all images": cms}
    group_png, diff_png, notes, tests = {}, {}, [], {}
    if grouping:
        with np.load(os.path.join(out_dir, "drops.npz")) as z:
            files, drops, valid = z["files"], z["drops"], z["valid"]
            f = float(z["canonical_patch_size"])
        labels = grp.parse_grouping(grouping, files)
        cis = grp.cis_maps(drops, valid, canon.vertices, canon.canvas_hw, f)
        per = grp.group_cms(cis, labels, min_size=min_group)
        sizes = {g: int(sum(1 for l in labels if l == g)) for g in per}
        notes.append(f"Grouping {grouping}: " + ", ".join(f"{g} ({n})" for g, n in sizes.items())
                     + f"; groups under {min_group} images left out.")
        for g, m in per.items():
            maps[g] = m
            group_png[g] = viz.overlay(canon.image, m, coverage)
            np.save(os.path.join(out_dir, f"cms_group_{g}.npy"), m.astype(np.float32))
        lab = np.asarray([l or "" for l in labels])
        for a, b in itertools.combinations(per, 2):
            t = grp.permutation_test(cis[lab == a], cis[lab == b], permutations=permutations, alpha=alpha)
            name = f"{a} - {b}"
            diff_png[name] = _diff_png(canon, t["diff"], t["significant"] & coverage, coverage)
            tests[name] = {"significant_pixels": int((t["significant"] & coverage).sum()),
                           "covered_pixels": int(coverage.sum()),
                           "max_abs_diff": float(np.abs(t["diff"][coverage]).max())}
        notes.append(f"Permutation test: {permutations} permutations, two-sided Welch t, max-T corrected, alpha {alpha}.")
    table, md = regions.shares_table(maps, masks, coverage)
    with open(os.path.join(out_dir, "regions.json"), "w") as fh:
        json.dump({"regions": table, "group_tests": tests}, fh, indent=2)
    with open(os.path.join(out_dir, "regions.md"), "w") as fh:
        fh.write(md)
    for g, im in group_png.items():
        viz.save_png(os.path.join(out_dir, f"cms_group_{g}.png"), im)
    write_report(os.path.join(out_dir, "report.html"), summary=summary,
                 cms_png=viz.overlay(canon.image, cms, coverage),
                 regions={k: v["share"] for k, v in table.items()},
                 densities={k: v["density"] for k, v in table.items()}, groups=group_png,
                 diffs=diff_png, notes=notes)
    return {"regions": table, "group_tests": tests, "markdown": md}
