"""The run's report: header and command line, group differences with significance, faces per region, size."""
import json
import os
import re
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
    targets = np.where(np.arange(len(files)) < n_per_group, 0, 1)  # group A explains 'female', B 'male'
    clean = np.full(len(files), 0.9, np.float32)
    clean[n_per_group:n_per_group + 2] = 0.55  # two near-ties in B: never an example face
    np.savez(os.path.join(out, "drops.npz"), files=np.asarray(files), drops=drops, valid=valid,
             canonical_side=np.full(len(files), f, np.float32), canon_xy=canon.vertices, targets=targets,
             clean=clean)
    with open(os.path.join(out, "groups.csv"), "w") as fh:
        fh.writelines(f"{os.path.basename(p)},{'A' if i < n_per_group else 'B'}\n" for i, p in enumerate(files))
    return canon, files, eye, f


def test_report_of_a_grouped_run_shows_maps_differences_and_the_faces_behind_regions(tmp_path, shared_dir,
                                                                                    monkeypatch):
    from cms_jax.pipeline import analysis
    from cms_jax.pipeline.analysis import analyse
    scales = []  # every map panel's colour scale, in drawing order
    draw = analysis.panel.map_panel
    monkeypatch.setattr(analysis.panel, "map_panel", lambda *a, **k: scales.append(a[3]) or draw(*a, **k))
    from cms_jax.projection import splat
    canon, files, eye, f = _synthetic_run(str(tmp_path), shared_dir)
    coverage = splat(np.ones(468, np.float32), canon.vertices, canon.canvas_hw, f)[1] > 0
    s = {**SUMMARY, "images_done": len(files), "images_total": len(files), "images_skipped": [],
         "model_classes": ["female", "male"]}
    res = analyse(str(tmp_path), canon, coverage, s, grouping=f"csv:{tmp_path / 'groups.csv'}", permutations=200,
                  min_group=5, test_side=128, align_cache=str(tmp_path / "cache"))
    t = json.load(open(tmp_path / "regions.json"))["group_tests"]["A - B"]
    assert t["test_canvas"] == [128, 128] and t["images"] == [6, 6] and t["significant_pixels"] > 100
    assert t["compare"] == "normalised" and t["family"] == 128 * 128
    # the region test finds the planted eyes first (their squares spill into the cheeks beside them),
    # and no region where A's planted increase is a decrease
    reg = t["regions"]
    assert reg["eyes"]["significant"] and max(reg, key=lambda k: abs(reg[k]["effect"])) == "eyes"
    assert all(r["diff"] > 0 for r in reg.values() if r["significant"]), reg
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
                   "drop in probability", "mean drop", "How to read this page", "Per-pixel density",
                   "<figcaption>A (n=6)</figcaption>", "<figcaption>B (n=6)</figcaption>",
                   "<figcaption>all classes pooled (n=12)</figcaption>", "<figcaption>female (n=6)</figcaption>",
                   "<figcaption>male (n=6)</figcaption>",
                   f"A - B: {t['significant_pixels']} of {t['covered_pixels']} pixels significant (per-image-"
                   "normalised CIS; permutation test, 200 permutations, two-sided Welch t, max-T corrected over all "
                   "1 pair and pixels, alpha 0.05; 6 vs 6 images)",
                   "A - B: effect size (Cohen&#x27;s d; significant pixels outlined)",
                   "clean confidence &gt;= max(0.8, the run&#x27;s median 0.9) = 0.9 (10 of 12)",
                   "the class the model predicts for the clean image"):
        assert needle in text, needle
    # Only confident faces are shown, each naming its class and clean confidence.
    shown = {os.path.basename(p) for v in res["top_faces"].values() for p, _ in v}
    assert shown and not shown & {os.path.basename(p) for p in files[6:8]}
    captions = re.findall(r"<figcaption class='face'>(.*?)</figcaption>", text)
    n_faces = sum(len(v) for v in res["top_faces"].values())
    assert len(captions) == n_faces and all(
        re.search(r"explains <b>(female|male)</b>, clean confidence 0\.900<br>", c) for c in captions), captions
    eye_caps = captions[:6]  # the eyes row comes first: group A, class 'female'
    assert all("<b>female</b>" in c for c in eye_caps), eye_caps
    assert text.count("data:image/jpeg;base64,") == n_faces
    # cms, smooth, pooled + 2 classes, 2 groups, 1 difference and its effect size, one colour bar per region row
    assert text.count("data:image/png;base64,") == 9 + len(res["top_faces"])
    assert os.path.exists(tmp_path / "cms_smooth.png")
    # One colour range per kind of map: CMS + smooth; the 2 groups; (1 difference, 1 effect size); pooled + 2 classes.
    assert len(scales) == 9 and scales[0] == scales[1] and scales[2] == scales[3] and scales[6:] == [scales[6]] * 3
    assert scales[0] != scales[2] and all(sc.ticks()[1] == 0.0 for sc in scales if sc.lo < 0 < sc.hi)


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


def test_report_words_name_the_target_the_confident_faces_and_the_card():
    from cms_jax.pipeline.report_explain import card_banner, confident, explained_name, reproduce, target_rule
    s = {"model_output": "classes", "score": "prob", "model_classes": ["female", "male"], "config": {}}
    assert (explained_name(s, 1), explained_name(s, 5)) == ("male", "output 5")
    assert target_rule(s) == "the class the model predicts for the clean image"
    assert target_rule({**s, "config": {"label_from": "utkface:gender"}}) == \
        "each image's label from --label_from=utkface:gender"
    assert explained_name({"model_output": "regression", "config": {"target": "age"}}, None) == "age"
    emb = {"model_output": "embedding", "config": {}}
    assert explained_name(emb, 0) == "own clean embedding"
    assert explained_name({**emb, "config": {"reference": "csv:ids.csv"}}, 0) == "identity reference"
    # Probabilities: >= max(0.8, median); too few: the k most confident, said so.
    ok, rule = confident(np.array([0.95, 0.9, 0.85, 0.55, 0.52, 0.99]), s, 2)
    assert ok.tolist() == [True, True, False, False, False, True] and "(3 of 6)" in rule  # median 0.875
    ok, rule = confident(np.array([0.51, 0.58, 0.52, 0.6]), s, 2)
    assert ok.tolist() == [False, True, False, True] and "Too few qualify: the 2 most confident" in rule
    ok, rule = confident(np.array([3.0, -1.0, 5.0]), {**s, "score": "logit"}, 1)
    assert ok.tolist() == [True, False, True] and "the run's median 3" in rule
    assert reproduce({"assets": "/a b"}, "cd /src && python -m experiments.cms --smoke") == \
        "cd /src && CMS_JAX_ASSETS='/a b' python -m experiments.cms --smoke"
    assert reproduce({}, "cd /src && python x") == "cd /src && python x"
    banner = card_banner({"model": "/m/age.onnx", "model_card": "no card; from the graph or defaults: colour=RGB"})
    assert "/m/age.card.json" in banner and "normalisation" in banner and "colour=RGB" in banner
    assert card_banner({"model_card": "card /m/age.card.json"}) == ""


def test_header_title_is_the_model_name_with_the_path_and_the_no_card_banner(tmp_path):
    s = {**SUMMARY, "model": "/models/gender_net.onnx", "model_name": "gender_net", "images_done": 1,
         "images_total": 1, "images_skipped": [], "model_card": "no card; from the graph or defaults: crop_policy=tight",
         "assets": "/work/shared", "argv": ["/src/experiments/cms.py", "--model=/models/gender_net.onnx"],
         "cwd": "/src"}
    text = open(write_report(str(tmp_path / "r.html"), summary=s, cms_png=np.zeros((8, 8, 3), np.uint8),
                             regions={"all": {"eyes": 60.0}}, densities={"all": {"eyes": 1.5}})).read()
    assert "<h1>Canonical Model Saliency: gender_net</h1>" in text and "<b>/models/gender_net.onnx</b>" in text
    assert "<div class='banner'><b>No model card:</b>" in text and "/models/gender_net.card.json" in text
    assert ("cd /src &amp;&amp; CMS_JAX_ASSETS=/work/shared python -m experiments.cms "
            "--model=/models/gender_net.onnx") in text
    assert "1.5×" in text and "60.0%" in text  # density bars beside share bars


def test_group_tests_on_correctly_predicted_faces_only(tmp_path, shared_dir):
    from cms_jax.pipeline.analysis import analyse
    canon, files, eye, f = _synthetic_run(str(tmp_path), shared_dir)
    # the run explained 'female' on A's 6 faces and 'male' on B's; two of A are truly men, one of B has no label
    truth = ["male" if i in (0, 1) else ("female" if i < 6 else "male") for i in range(len(files))]
    rows = [f"{os.path.basename(p)},{t}\n" for i, (p, t) in enumerate(zip(files, truth)) if i != 11]
    (tmp_path / "truth.csv").write_text("".join(rows))
    s = {**SUMMARY, "images_done": len(files), "images_total": len(files), "images_skipped": [],
         "model_classes": ["female", "male"]}
    analyse(str(tmp_path), canon, None, s, grouping=f"csv:{tmp_path / 'groups.csv'}", permutations=50,
            min_group=5, test_side=64, align_cache=str(tmp_path / "cache"), truth=f"csv:{tmp_path / 'truth.csv'}",
            compare="raw")
    t = json.load(open(tmp_path / "regions.json"))["group_tests"]["A - B"]
    assert t["images"] == [4, 5] and t["compare"] == "raw"
    text = open(tmp_path / "report.html").read()
    assert "correctly predicted faces only" in text and "9 of 11 faces with a true class (1 without one left out)" in text
