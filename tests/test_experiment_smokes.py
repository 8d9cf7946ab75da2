"""The experiment scripts not covered elsewhere run in --smoke mode, as a user would call them.

Each runs as ``python -m experiments.NAME --smoke`` in a fresh process (one device, like a user's
machine), and its outputs are checked for content.
"""
import json
import os
import subprocess
import sys

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(name, *args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("XLA_FLAGS", None)
    res = subprocess.run([sys.executable, "-m", f"experiments.{name}", "--smoke", *args], cwd=ROOT,
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


def test_fig09_metrics_smoke(tmp_path):
    _run("fig09_metrics", f"--out_dir={tmp_path}")
    t = json.load(open(tmp_path / "fig09.json"))
    methods = ("GradCAM", "GradCAM++", "ScoreCAM", "CMS")
    rows = t["methods"]
    assert set(rows) == set(methods) and t["n"] == 6
    assert abs(sum(r["win"] for r in rows.values()) - 100.0) < 1e-6  # Eq. 11: Win % sums to 100
    for r in rows.values():
        assert 0.0 <= r["average_drop"] <= 100.0 and 0.0 <= r["increase_in_confidence"] <= 100.0
        assert 0.0 <= r["clip_rate"] <= 1.0
    grid = cv2.imread(str(tmp_path / "fig09_grid.png"))
    assert grid is not None and grid.std() > 10
    assert "| CMS |" in (tmp_path / "fig09.md").read_text()


def test_bench_throughput_smoke(tmp_path):
    _run("bench_throughput", f"--out_dir={tmp_path}")
    b = json.load(open(tmp_path / "bench_throughput.json"))
    for key in ("device", "model", "matmul_flops_per_s"):
        assert key in b
    assert b["matmul_flops_per_s"] > 1e8
    methods = ("dense_fp32", "dense_bf16", "incremental", "incremental_bf16", "torch_reference")
    row = b["vgg"]
    assert row["model"] == "tiny_vgg_32px" and set(row["passes_per_s"]) == set(methods)
    assert all(b[m] > 0 for m in methods)  # top-level passes/s
    # One engine, two forwards: incremental and torch give fp32 JAX's drops; bf16 follows them.
    assert row["max_abs_drop_diff_vs_fp32"]["incremental"] < 1e-6
    assert row["pearson_vs_fp32"]["torch_reference"] > 0.999
    assert min(row["pearson_vs_fp32"][m] for m in ("dense_bf16", "incremental_bf16")) > 0.9
    assert 0 < row["incremental_flops_per_pass"] < row["dense_flops_per_pass"]


def test_bench_memory_smoke(tmp_path, shared_dir):
    _run("bench_memory", f"--out_dir={tmp_path}")
    b = json.load(open(tmp_path / "bench_memory.json"))
    assert [r["images"] for r in b["runs"]] == [4, 8]
    assert all(r["main_peak_mib"] > 100 for r in b["runs"]) and 0.5 < b["peak_ratio"] < 2.0


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


def test_bench_input_smoke(tmp_path, shared_dir):
    """The Grain loader alone: 24 files, cold and warm cache, and a restored state continues exactly."""
    _run("bench_input", f"--out_dir={tmp_path}", "--workers=2")
    r = json.load(open(tmp_path / "bench_input.json"))
    assert r["images"] == 24 and r["resume_continues_at_the_exact_image"] is True
    assert r["warm_images_per_s"] > r["cold_images_per_s"] > 0  # steady state: the cache skips MediaPipe
    assert r["startup_s"] > 0


def test_bench_onnx_smoke(tmp_path, shared_dir):
    """The converter against onnxruntime on FSA-Net: figures present and the values agree."""
    _run("bench_onnx", f"--out_dir={tmp_path}")
    r = json.load(open(tmp_path / "bench_onnx.json"))
    f = r["fsanet_1x1"]
    assert f["onnx_jax_max_abs_diff"] < 1e-4 and f["onnx_jax_native_batch_max_abs_diff"] < 1e-4
    assert f["onnxruntime_ms"] > 0 and f["onnx_jax_ms"] > 0
    assert r["coverage"]["mobilefacenet_style"]["onnx_jax_lacks"] == []
