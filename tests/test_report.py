"""The run's report: header and command line, group differences with significance, faces per region, size."""
import json
import os
import shlex
import time

import cv2
import numpy as np

from cms_jax import regions
from cms_jax.pipeline.report import write_report
from cms_jax.pipeline.report_parts import command_line, header

SUMMARY = {"model": "tiny", "model_name": "tiny", "model_input": [32, 32], "model_output": "classes",
           "crop_policy": "tight", "crop_margin": 0.1, "patch_size": 2,
           "canonical_side": {"min": 14.08, "median": 14.08, "max": 14.08},
           "score": "prob", "reduce": "mean", "vertices": 468, "canvas": [256, 256], "seconds": 2.0,
           "faces_per_second": 6.0, "forward": "dense", "dtype": "float32"}


def test_command_line_is_the_runs_own_argv_in_its_folder():
    s = {"argv": ["/src/experiments/cms.py", "--smoke", "--out_dir=out dir"], "cwd": "/src"}
    assert command_line(s) == "cd /src && python -m experiments.cms --smoke '--out_dir=out dir'"
    fig = {"argv": ["/src/experiments/fig01_tasks.py", "--smoke"], "cwd": "/src"}  # any script, as a module
    assert command_line(fig) == "cd /src && python -m experiments.fig01_tasks --smoke"
    assert command_line({"argv": ["/elsewhere/x.py", "--a=b c"], "cwd": "/src"}) == \
        "cd /src && python /elsewhere/x.py '--a=b c'"
    cmd = command_line({"argv": ["/usr/bin/pytest", "-q"], "cwd": "/src"})  # a library call: marked as such
    assert shlex.split(cmd.split("&&", 1)[1].split("#")[0]) == ["/usr/bin/pytest", "-q"] and "from Python" in cmd
    assert command_line({}) == "(not recorded)"


def test_header_counts_skipped_images_by_reason_and_the_list_is_capped(tmp_path):
    skipped = [{"file": f"f{i}.jpg", "reason": "no face" if i % 3 else "truncated"} for i in range(300)]
    s = {**SUMMARY, "images_done": 10, "images_total": 310, "images_skipped": skipped,
         "argv": ["/src/experiments/cms.py", "--images=x"], "cwd": "/src"}
    head = header(s, "drop in probability")
    assert "300 skipped (no face: 200, truncated: 100)" in head and "python -m experiments.cms --images=x" in head
    text = open(write_report(str(tmp_path / "r.html"), summary=s, cms_png=np.zeros((8, 8, 3), np.uint8),
                             regions={"all": {"eyes": 60.0, "nose": 40.0}})).read()
    assert text.count("<tr><td style='text-align:left'>f") == 200 and "100 more (all in summary.json)" in text
    assert "<script" not in text and "http" not in text.replace("http-equiv", "")


def _synthetic_run(out, shared_dir, n_per_group=6, canvas=256):
    """A run folder: two groups of real CelebA photos, group A with a planted eye saliency."""
    from cms_jax.accumulate import cms_from_drops
    from cms_jax.align import CanonicalFace
    canon = CanonicalFace.mediapipe(canvas=canvas)
    src = os.path.join(shared_dir, "faces", "celeba_samples", "images")
    files = [os.path.join(src, f) for f in sorted(os.listdir(src))[:2 * n_per_group]]
    masks = regions.region_masks(canon.vertices, canon.canvas_hw)
    eye = regions.vertex_regions(canon.vertices, masks)[:, list(masks).index("eyes")]
    rng = np.random.default_rng(0)
    drops = rng.normal(0.0, 0.002, (len(files), 468)).astype(np.float32)
    drops[:n_per_group, eye] += 0.05
    valid = np.ones(drops.shape, bool)
    f = 14.08 * canvas / 256
    np.save(os.path.join(out, "cms.npy"), cms_from_drops(drops, valid, canon.vertices, canon.canvas_hw, f))
    np.savez(os.path.join(out, "drops.npz"), files=np.asarray(files), drops=drops, valid=valid,
             canonical_side=np.full(len(files), f, np.float32), canon_xy=canon.vertices)
    with open(os.path.join(out, "groups.csv"), "w") as fh:
        fh.writelines(f"{os.path.basename(p)},{'A' if i < n_per_group else 'B'}\n" for i, p in enumerate(files))
    return canon, files, eye, f


def test_report_of_a_grouped_run_shows_maps_differences_and_the_faces_behind_regions(tmp_path, shared_dir):
    from cms_jax.pipeline.analysis import analyse
    from cms_jax.projection import splat
    canon, files, eye, f = _synthetic_run(str(tmp_path), shared_dir)
    coverage = splat(np.ones(468, np.float32), canon.vertices, canon.canvas_hw, f)[1] > 0
    s = {**SUMMARY, "images_done": len(files), "images_total": len(files), "images_skipped": []}
    res = analyse(str(tmp_path), canon, coverage, s, grouping=f"csv:{tmp_path / 'groups.csv'}", permutations=200,
                  min_group=5, test_side=128, align_cache=str(tmp_path / "cache"))
    t = json.load(open(tmp_path / "regions.json"))["group_tests"]["A - B"]
    assert t["test_canvas"] == [128, 128] and t["images"] == [6, 6] and t["significant_pixels"] > 100
    # Significance (tested at half the canvas, scaled back) lies where the planted eye drops reach.
    sig = res["significant"]["A - B"]
    assert sig.shape == (256, 256) and sig.sum() == t["significant_pixels"]
    support = splat(eye.astype(np.float32), canon.vertices, canon.canvas_hw, f, eye)[1] > 0
    near = cv2.dilate(support.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0  # the half-size grid's 2 px
    assert sig[near].sum() >= 0.99 * sig.sum() and sig[support].sum() >= 0.5 * support.sum()
    assert cv2.imread(str(tmp_path / "cms_group_A.png")).shape == (256, 256, 3)
    # The eyes' top faces are group A's images, brightest first; every region shows at most 6.
    eyes = [os.path.basename(p) for p, _ in res["top_faces"]["eyes"]]
    assert len(eyes) == 6 and set(eyes) == {os.path.basename(p) for p in files[:6]}
    assert all(len(v) <= 6 for v in res["top_faces"].values())
    text = open(tmp_path / "report.html").read()
    for needle in ("Per group", "Differences", "A - B", "Faces behind each region", "Share of positive saliency",
                   "drop in probability", "mean drop"):
        assert needle in text, needle
    n_faces = sum(len(v) for v in res["top_faces"].values())
    assert text.count("data:image/jpeg;base64,") == n_faces
    # cms, smooth, 2 groups, 1 difference, one colour bar per region row
    assert text.count("data:image/png;base64,") == 5 + len(res["top_faces"])
    assert os.path.exists(tmp_path / "cms_smooth.png")


def test_report_size_does_not_grow_with_the_number_of_images(tmp_path, shared_dir):
    """20,000 images: thumbnails only for the faces shown, a one-pass ranking, a report of a few MB."""
    from cms_jax.align import CanonicalFace
    from cms_jax.pipeline.analysis import analyse
    from cms_jax.projection import splat
    canon = CanonicalFace.mediapipe(canvas=256)
    src = os.path.join(shared_dir, "faces", "celeba_samples", "images")
    pool = [os.path.join(src, f) for f in sorted(os.listdir(src))[:30]]
    n = 20_000
    rng = np.random.default_rng(1)
    drops = rng.normal(0.0, 0.01, (n, 468)).astype(np.float32)
    valid = rng.random((n, 468)) > 0.1
    f = 14.08
    np.save(tmp_path / "cms.npy", rng.normal(0, 0.01, (256, 256)).astype(np.float32))
    np.savez(tmp_path / "drops.npz", files=np.asarray([pool[i % len(pool)] for i in range(n)]), drops=drops,
             valid=valid, canonical_side=np.full(n, f, np.float32), canon_xy=canon.vertices)
    coverage = splat(np.ones(468, np.float32), canon.vertices, canon.canvas_hw, f)[1] > 0
    skipped = [{"file": f"/data/skip_{i}.jpg", "reason": "no face"} for i in range(2000)]
    s = {**SUMMARY, "images_done": n, "images_total": n + len(skipped), "images_skipped": skipped}
    t0 = time.perf_counter()
    res = analyse(str(tmp_path), canon, coverage, s, align_cache=str(tmp_path / "cache"))
    seconds = time.perf_counter() - t0
    size = os.path.getsize(tmp_path / "report.html")
    text = open(tmp_path / "report.html").read()
    shown = sum(len(v) for v in res["top_faces"].values())
    assert 0 < shown <= 6 * len(regions.REGIONS) and text.count("<img") <= 2 + 2 * len(regions.REGIONS) + shown
    assert size < 3e6, size
    print(f"20,000 images: report {size / 1e6:.2f} MB, analyse {seconds:.1f} s, {shown} faces shown")
