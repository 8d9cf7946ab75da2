"""The experiment scripts not covered elsewhere run as a user would call them.

Each runs as ``python -m experiments.NAME --smoke`` (Fig. 9 also on its real path: real model,
faces and CMS run) in a fresh process (one device, like a user's machine), and its outputs are
checked for content.
"""
import json
import math
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(name, *args, smoke=True):
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("XLA_FLAGS", None)
    res = subprocess.run([sys.executable, "-m", f"experiments.{name}", *(["--smoke"] if smoke else []), *args], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def test_cms_main_job_smoke(tmp_path, shared_dir):
    out = _run("cms", f"--out_dir={tmp_path}", "--workers=0")
    assert "CMS of tiny over 4/4 images" in out
    s = json.load(open(tmp_path / "summary.json"))
    assert (s["images_total"], s["images_done"], s["vertices"]) == (4, 4, 468)
    stages = s["stage_seconds"]
    assert {"prepare_wait", "score", "accumulate", "write", "checkpoint"} <= set(stages)
    assert all(v >= 0 for v in stages.values())
    # The end-of-run gather and the final writes come after the loop that "seconds" times.
    assert sum(v for k, v in stages.items() if k not in ("write", "gather")) <= s["seconds"]
    assert s["host_seconds"]["decode_align"] > 0  # workers=0: host stages ran in this process
    assert np.isfinite(np.load(tmp_path / "cms.npy")).all()
    assert cv2.imread(str(tmp_path / "cms.png")).std() > 10


def test_fig09_metrics_smoke_writes_the_table_grid_and_heatmaps(tmp_path):
    """--smoke (tiny model, 6 synthetic crops, a centred Gaussian as every CMS): the printed table is the
    written one, and the heatmaps of all four methods are kept in the order of the (synthetic) files."""
    out = _run("fig09_metrics", f"--out_dir={tmp_path}")
    t = json.load(open(tmp_path / "fig09.json"))
    assert t["model"] == "tiny" and t["n"] == 6 and list(t["methods"]) == ["GradCAM", "GradCAM++", "ScoreCAM", "CMS"]
    assert t["s_rule"].startswith("s = mean over methods")
    assert abs(sum(r["win"] for r in t["methods"].values()) - 100.0) < 1e-6  # Eq. 11: Win % sums to 100
    md = (tmp_path / "fig09.md").read_text()
    assert md.startswith("**tiny: Fig. 9 metrics** (N = 6)") and md.strip() in out
    heat = np.load(tmp_path / "heatmaps.npz")
    assert [str(f) for f in heat["files"]] == [f"synthetic_{i}" for i in range(6)]
    assert all(heat[k].shape == (6, 32, 32) for k in ("GradCAM", "GradCAMpp", "ScoreCAM", "CMS"))
    c = heat["CMS"][0]
    assert c.argmax() == np.ravel_multi_index((16, 16), c.shape)  # the synthetic CMS, kept as given
    grid = cv2.imread(str(tmp_path / "fig09_grid.png"))
    assert grid is not None and grid.std() > 10
    # The CIs: each per-face record averages to its table cell, each CI brackets it, and the paired
    # difference is the difference of the two methods' means on the same faces.
    per, u = np.load(tmp_path / "per_face.npz"), t["uncertainty"]
    assert u["n"] == 6 and u["reference"] == "CMS" and set(u["vs_reference"]) == {"GradCAM", "GradCAM++", "ScoreCAM"}
    for m, key in (("GradCAM", "GradCAM"), ("GradCAM++", "GradCAMpp"), ("ScoreCAM", "ScoreCAM"), ("CMS", "CMS")):
        row, cis = t["methods"][m], u["methods"][m]
        assert per[f"{key}__average_drop"].mean() == pytest.approx(row["average_drop"], abs=1e-4)
        assert 100 * per[f"{key}__increase"].mean() == pytest.approx(row["increase_in_confidence"], abs=1e-9)
        assert per[f"{key}__win"].mean() == pytest.approx(row["win"], abs=1e-9)
        for k in ("average_drop", "increase", "win"):
            assert cis[k]["ci"][0] - 1e-9 <= cis[k]["mean"] <= cis[k]["ci"][1] + 1e-9 and cis[k]["n"] == 6
        if m != "CMS":
            d = u["vs_reference"][m]
            assert d["average_drop"]["diff"] == pytest.approx(t["methods"]["CMS"]["average_drop"] - row["average_drop"], abs=1e-4)
            assert d["increase"]["test"] == "mcnemar" and d["win"]["test"] == "wilcoxon"
    assert "95% bootstrap CIs over faces (n = 6" in md and "CMS − method on the same faces" in md


def test_fig09_metrics_real_path_reprojects_the_run_cms(tmp_path, shared_dir):
    """Fig. 9 as a user runs it (not --smoke, whose synthetic inputs skip all of this): the gender model
    on aligned UTKFace faces, a CMS job on them, the CMS reprojected onto each crop (Fig. 6d); the
    CMS heatmaps checked against a numpy reprojection."""
    from scipy import ndimage

    from cms_jax import models
    from cms_jax.align.canonical import CanonicalFace
    from cms_jax.align.visibility import visible_vertices
    from cms_jax.data.prepare import FacePreparer

    images = os.path.join(shared_dir, "faces", "utkface")
    _run("fig09_metrics", "--model=gender", f"--images={images}", "--max_images=2", "--workers=0",
         "--grid_faces=2", "--scorecam_batch=16", f"--out_dir={tmp_path}", smoke=False)
    t = json.load(open(tmp_path / "fig09.json"))
    assert t["model"] == "gender" and t["n"] == 2 and set(t["methods"]) == {"GradCAM", "GradCAM++", "ScoreCAM", "CMS"}
    assert abs(sum(r["win"] for r in t["methods"].values()) - 100.0) < 1e-6  # Eq. 11: Win % sums to 100
    for r in t["methods"].values():
        assert 0.0 <= r["average_drop"] <= 100.0 and 0.0 <= r["increase_in_confidence"] <= 100.0
        assert 0.0 <= r["clip_rate"] <= 1.0
    grid = cv2.imread(str(tmp_path / "fig09_grid.png"))
    assert grid is not None and grid.std() > 10
    assert "| CMS |" in (tmp_path / "fig09.md").read_text()
    s = json.load(open(tmp_path / "cms" / "summary.json"))  # the CMS job fig09 ran on the same faces
    assert s["images_done"] == 2 and s["model"] == "gender"
    heat = np.load(tmp_path / "heatmaps.npz")
    files = [str(f) for f in heat["files"]]
    assert files == sorted(os.path.join(images, f) for f in os.listdir(images))[:2]
    assert heat["CMS"].shape == heat["GradCAM"].shape == (2, 64, 64)

    cms = np.load(tmp_path / "cms" / "cms.npy").astype(np.float64)
    canon = CanonicalFace.mediapipe(canvas=cms.shape[0])
    # Fig. 6d by hand: the CMS read at each canonical vertex (bilinear), splatted with the occlusion
    # side at the face's own vertices in the crop, count-normalised.
    values = ndimage.map_coordinates(cms, [canon.vertices[:, 1], canon.vertices[:, 0]], order=1, mode="nearest")
    model = models.load("gender")
    sz = s["patch_size"]
    prep = FacePreparer(model, workers=0, cache_dir=str(tmp_path / "cms" / "align_cache"))
    try:
        faces = list(prep.imap(files))
    finally:
        prep.close()
    for face, got in zip(faces, heat["CMS"]):
        xy = face.xy.astype(np.float64)
        ok = visible_vertices(xy, canon.triangles, face.z) & (xy >= 0).all(1) & (xy < 64).all(1)
        p, n = np.zeros((64, 64)), np.zeros((64, 64))
        for (x, y), v in zip(xy[ok], values[ok]):
            x1, y1 = max(0, math.floor(x - sz / 2)), max(0, math.floor(y - sz / 2))
            p[y1:min(y1 + sz, 64), x1:min(x1 + sz, 64)] += v
            n[y1:min(y1 + sz, 64), x1:min(x1 + sz, 64)] += 1
        want = np.where(n > 0, p / np.maximum(n, 1), 0.0)
        assert np.abs(want).max() > 0
        np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max())


def test_bench_throughput_smoke(tmp_path):
    _run("bench_throughput", f"--out_dir={tmp_path}")
    b = json.load(open(tmp_path / "bench_throughput.json"))
    assert (b["device"]["platform"], b["device"]["count"], b["model"]) == ("cpu", 1, "tiny_vgg_32px")
    assert b["matmul_flops_per_s"] > 1e8
    methods = ("dense_fp32", "dense_bf16", "incremental", "incremental_bf16", "torch_reference")
    row = b["vgg"]
    assert row["model"] == "tiny_vgg_32px" and set(row["passes_per_s"]) == set(methods)
    for m in methods:  # a method that failed would record None (or be missing): every one ran
        assert isinstance(b[m], float) and b[m] > 0, (m, b.get(m))
        assert isinstance(row["passes_per_s"][m], float) and row["faces_per_s"][m] > 0, m
    assert set(row["pearson_vs_fp32"]) == set(methods)  # what each timed method computed is checked
    assert 0 < row["incremental_flops_per_pass"] < row["dense_flops_per_pass"]


def test_bench_throughput_methods_compute_eq1_by_brute_force():
    """What bench_throughput times, checked here rather than by its own verdict: each of its methods
    (`bench.methods`: the engine's four paths and the paper's torch procedure) on its tiny VGG gives
    Eq. 1 computed by brute force in numpy (one occluded copy per vertex, softmax, clean - occluded)."""
    from cms_jax import models
    from cms_jax.bench import methods
    from converters.torchvision_vgg import to_torch

    model, sz = models.load("tiny"), 5
    h, w = model.input_size
    rng = np.random.default_rng(0)
    image = rng.normal(0, 1, (h, w, model.channels)).astype(np.float32)
    xy = rng.uniform(0, w, (12, 2))

    def probs(x):
        z = np.asarray(model.apply_fn(model.params, x), np.float64)
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    copies = []
    for x, y in xy:
        x1, y1 = max(0, math.floor(x - sz / 2)), max(0, math.floor(y - sz / 2))
        copy = image.copy()
        copy[y1:y1 + sz, x1:x1 + sz] = 0.0
        copies.append(copy)
    clean = probs(image[None])[0]
    c = int(clean.argmax())
    want = clean[c] - probs(np.stack(copies))[:, c]
    assert np.abs(want).max() > 1e-4  # the squares matter: a zero drop would pass any check
    for name in methods.JAX_METHODS:
        res = methods.engine(model, name, 16, sz).run(image[None], xy, patch_size=sz)
        assert int(res.targets[0]) == c, name
        if name.endswith("bf16"):
            assert np.corrcoef(res.drops[0], want)[0, 1] > 0.9, name
        else:
            np.testing.assert_allclose(res.drops[0], want, atol=1e-5, err_msg=name)
    got = methods.torch_reference_drops(to_torch(model.params).eval(), image, xy, sz, c, "cpu")
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_bench_memory_smoke(tmp_path, shared_dir):
    _run("bench_memory", f"--out_dir={tmp_path}")
    b = json.load(open(tmp_path / "bench_memory.json"))
    assert [r["images"] for r in b["runs"]] == [4, 8]
    assert [r["images_done"] for r in b["runs"]] == [4, 8]
    assert all(r["main_peak_mib"] > 100 for r in b["runs"])
    # The target (memory flat in the number of images, within 10%), applied here to the measured peaks
    # themselves rather than to the bench's own ratio; peak memory does not depend on the load.
    ratio = b["runs"][1]["main_peak_mib"] / b["runs"][0]["main_peak_mib"]
    assert ratio <= 1.10 and b["peak_ratio"] == pytest.approx(ratio, rel=1e-9)


def test_bench_job_smoke(tmp_path, shared_dir):
    out = _run("bench_job", f"--out={tmp_path}")
    assert "faces/s" in out
    b = json.load(open(tmp_path / "bench_job.json"))
    assert b["images_done"] == 4 and b["faces_per_s"] > 0 and b["wall_seconds"] > 0
    stages = b["stage_seconds"]
    assert {"pool", "prepare_wait", "score", "accumulate", "write", "checkpoint"} <= set(stages)
    assert all(v >= 0 for v in stages.values())
    assert sum(stages.values()) <= b["wall_seconds"]  # main-process stages are disjoint
    assert {"read", "decode_align", "crop"} <= set(b["host_seconds"])
    assert all(v >= 0 for v in b["host_seconds"].values())
    assert b["matmul_fp32_flops_per_s"] > 0 and b["dense_flops_per_pass"] > 0
    assert b["passes"] > 4 and 0 < b["fraction_of_matmul"] <= b["fraction_of_matmul_in_score"]
    assert b["peak_rss_mib"] > 0 and b["peak_rss_mib_end"] >= b["peak_rss_mib"]
    assert b["warmup"]["images"] == 2
    k = b["keras"]
    assert (isinstance(k, dict) and k["faces_per_s_with_host_prep"] > 0) or k.startswith("n/a: ")
    items = b["work_items"]  # each distinct square scored once; every valid vertex counted
    assert items["vertices"] == b["passes"] - b["images_done"]  # passes = valid vertices + clean passes
    assert 0 < items["unique"] <= items["computed"] and b["forward"] == "incremental"
    # FLOPs done: XLA's count of the incremental step per copy times the copies computed, plus the
    # clean passes; fewer than the dense-equivalent count of every vertex.
    assert 0 < b["flops_done_per_face"] * 4 < b["passes"] * b["dense_flops_per_pass"]
    assert b["onnxruntime"].startswith("n/a: ")


def test_bench_input_smoke(tmp_path, shared_dir):
    """The Grain loader alone: 24 files, cold and warm cache, and a restored state continues exactly."""
    _run("bench_input", f"--out_dir={tmp_path}", "--workers=2")
    r = json.load(open(tmp_path / "bench_input.json"))
    assert r["images"] == 24 and "resume_continues_at_the_exact_image" in r  # checked independently below
    # Cold: MediaPipe ran on every file and cached it; warm: every file came from the cache.
    assert r["cache_entries_after_cold"] == 24 and r["cache_entries_written_warm"] == 0
    assert r["warm_images_per_s"] > 0 and r["cold_images_per_s"] > 0
    assert r["startup_s"] > 0


def test_a_loader_restored_from_its_state_continues_at_the_exact_image(shared_dir):
    """What bench_input reports as ``resume_continues_at_the_exact_image``, checked against the input
    list itself: a fresh loader built from the state after k images yields files[k:] (bench_input's form,
    ``loader(files, state=...)``), not the bench's own comparison of two loader passes."""
    from cms_jax import models
    from cms_jax.data.prepare import FacePreparer

    src = os.path.join(shared_dir, "faces", "celeba_samples", "images")
    files = [os.path.join(src, n) for n in sorted(os.listdir(src))[:7]]
    prep = FacePreparer(models.load("tiny"), workers=2)
    try:
        it = prep.loader(files)
        assert [next(it).path for _ in range(3)] == files[:3]
        state = it.get_state()
        assert [p.path for p in prep.loader(files, state=state)] == files[3:]
    finally:
        prep.close()


def test_bench_onnx_smoke(tmp_path, shared_dir):
    """The converter against onnxruntime on FSA-Net: figures present and the values agree."""
    _run("bench_onnx", f"--out_dir={tmp_path}")
    r = json.load(open(tmp_path / "bench_onnx.json"))
    f = r["fsanet_1x1"]
    assert f["onnx_jax_max_abs_diff"] < 1e-4 and f["onnx_jax_native_batch_max_abs_diff"] < 1e-4
    assert f["onnxruntime_ms"] > 0 and f["onnx_jax_ms"] > 0
    assert r["coverage"]["mobilefacenet_style"]["onnx_jax_lacks"] == []


def test_fig10_runs_one_table_per_model_and_puts_them_side_by_side(tmp_path, shared_dir):
    """Fig. 10 (``models``): a sub-folder and table per model, named after the model, and fig10.md
    holding the tables in order; the same model twice on the same faces gives the same table."""
    from cms_jax.figures import common, metrics_table

    cfg = metrics_table.MetricsConfig(models=("tiny", "tiny"), images=common.smoke_images(2), max_images=0,
                                      workers=0, grid_faces=2, scorecam_batch=16)
    tables = metrics_table.run(cfg, str(tmp_path))
    assert len(tables) == 2 and tables[0]["n"] == 2
    assert tables[0]["methods"] == tables[1]["methods"]
    mds = [(tmp_path / f"{i}_tiny" / "fig09.md").read_text() for i in range(2)]
    assert json.load(open(tmp_path / "1_tiny" / "fig09.json"))["methods"] == tables[1]["methods"]
    text = (tmp_path / "fig10.md").read_text()
    assert text.count("**tiny: Fig. 9 metrics** (N = 2)") == 2 and all(m.strip() in text for m in mds)
    # Every number of fig10.md read back against the tables' JSON, and the bold cell of each column
    # at the best value (Average Drop % and Win %: highest; % Increase in Confidence: lowest).
    rows = [line.split("|")[1:-1] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| Method")]
    rows = [r for r in rows if len(r) == 5]  # the tables themselves (their CI tables have 4 columns)
    assert text.count("95% bootstrap CIs over faces (n = 2") == 2
    assert len(rows) == sum(len(t["methods"]) for t in tables)
    keys = ("average_drop", "increase_in_confidence", "win")
    higher = {"average_drop": True, "increase_in_confidence": False, "win": True}
    i = 0
    for t in tables:
        for name, r in t["methods"].items():
            cells = [c.strip() for c in rows[i]]
            i += 1
            assert cells[0] == name
            for key, cell in zip(keys, cells[1:4]):
                assert float(cell.strip("*")) == pytest.approx(round(r[key], 2), abs=0.0051), (name, key)
                vals = [m[key] for m in t["methods"].values()]
                assert cell.startswith("**") == (r[key] == (max(vals) if higher[key] else min(vals))), (name, key)
            assert float(cells[4]) == pytest.approx(100 * r["clip_rate"], abs=0.0051)
    assert json.load(open(tmp_path / "0_tiny" / "cms" / "summary.json"))["images_done"] == 2  # in-sample CMS


def test_fig10_folder_names():
    from cms_jax.figures.metrics_table import folder_label
    assert folder_label("gender") == "gender"
    assert folder_label("/runs/five/task_gender/model") == "task_gender"
    assert folder_label("out/ft/model/") == "ft"
    assert folder_label("/models/gender_mini_XCEPTION.hdf5") == "gender_mini_XCEPTION.hdf5"


def test_bench_device_smoke(tmp_path, shared_dir):
    """The one script a lent accelerator runs: every part present, none failed, parity precision set."""
    _run("bench_device", f"--out={tmp_path}")
    b = json.load(open(tmp_path / "bench_device.json"))
    assert b["matmul_precision"] == "highest" and b["device"]["count"] >= 1
    for part in ("throughput", "job_float32", "job_bfloat16"):
        assert "error" not in b[part], b[part]
    assert b["throughput"]["incremental"] > 0 and b["throughput"]["dense_fp32"] > 0
    assert b["job_float32"]["dtype"] == "float32" and b["job_bfloat16"]["dtype"] == "bfloat16"
    assert b["job_float32"]["images_done"] == 4 and 0.5 < b["job_bfloat16"]["bf16_fidelity"] <= 1.0
    assert b["seconds"]["total"] >= sum(v for k, v in b["seconds"].items() if k != "total") - 1


def test_map_ci_smoke_compares_two_occluders_on_the_same_faces(tmp_path):
    """--smoke: two tiny-model runs (patch 3 and 5) on 3 faces; every cell has an interval around its
    value, the Pearson is the two CMSs' own, and the written table is the printed one."""
    from cms_jax.figures import common, stats

    out = _run("map_ci", f"--out_dir={tmp_path}")
    r = json.load(open(tmp_path / "map_ci.json"))
    assert r["faces"] == 3 and list(r["runs"]) == ["patch 3", "patch 5"]
    a, b = common.load_run(str(tmp_path / "cms_patch3")), common.load_run(str(tmp_path / "cms_patch5"))
    p = r["pearson"]["patch 3 vs patch 5"]
    assert p["value"] == pytest.approx(stats.pearson(a.cms, b.cms, a.coverage & b.coverage), abs=1e-6)
    for run in r["runs"].values():
        for kind in ("cms", "raw"):
            for cell in run[kind]["share"].values():
                assert cell["ci"][0] <= cell["value"] <= cell["ci"][1]
        assert run["single"]["n"] == 3
    assert (tmp_path / "map_ci.md").read_text().strip() in out
