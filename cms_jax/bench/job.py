"""The main job end to end, measured: faces/s, seconds per stage, FLOP/s, peak RSS, and Keras.

`bench_job` runs `run_job` twice: a warm-up on a couple of images, whose
compiled executables land in a JAX persistent compilation cache (a fresh
`Scorer` re-jits, so without it the timed run would compile again), then the
timed run over all the images with a cold landmark cache, as a first run over
a data set would be. It reads the run's ``summary.json`` (``stage_seconds``,
``host_seconds``) and ``drops.npz`` (passes scored), sets achieved FLOP/s
against a jitted 2048x2048 fp32 matmul timed in the same process, and, when
TensorFlow is importable, runs the same model file through the dense
procedure a Keras user would write (`keras_reference`) on the same faces,
after the job (JAX and TensorFlow share the cores: never concurrently).
`run` is ``experiments/bench_job.py``: the job's `RunConfig` from a
`JobBenchConfig`, the results printed and written to ``bench_job.json``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from cms_jax.bench import keras_reference
from cms_jax.bench.measure import device_info, matmul_rate
from cms_jax.pipeline import RunConfig, run_job


@dataclasses.dataclass(frozen=True)
class JobBenchConfig:
    """The job benchmark (the flags of ``experiments/bench_job.py``).

    ``smoke``: the tiny model on 4 CelebA samples, a 256x256 reference matmul; seconds.
    """
    images: str = ""              # folder, glob or list of images (default: faces/utkface_22k)
    max_images: int = 100         # use the first N images
    model: str = "gender"         # built-in model name or a model file
    incremental: bool = True      # the main job's default: incremental where the model allows ('auto')
    dtype: str = "float32"        # compute dtype of the scoring
    workers: int = 2              # host worker processes (decode + MediaPipe)
    warmup_images: int = 2        # images of the untimed warm-up run (0: none)
    keras: bool = True            # Keras side by side when TensorFlow is importable
    smoke: bool = False
    batch_size: int = 0           # work items per device batch (the job's --batch_size; 0: its default)
    chunk_images: int = 16        # images scored together (the job's --chunk_images)
    target: str = ""              # the job's --target (regression models, e.g. headpose: yaw)


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (``VmHWM``; see `progress.peak_rss_mb`)."""
    from cms_jax.data.progress import peak_rss_mb
    return peak_rss_mb()


def default_images() -> str:
    """``faces/utkface_22k`` under the first asset root that has it."""
    from cms_jax.assets import asset_roots

    for root in asset_roots():
        if (root / "faces" / "utkface_22k").is_dir():
            return str(root / "faces" / "utkface_22k")
    raise FileNotFoundError(f"no faces/utkface_22k under {[str(r) for r in asset_roots()]}; pass --images")


def _timed_job(cfg, out_dir: str, workers: int, chunk_images: int) -> tuple[dict, float]:
    t = time.perf_counter()
    summary = run_job(cfg, out_dir, workers=workers, chunk_images=chunk_images, show_progress=False)
    return summary, time.perf_counter() - t


def bench_job(cfg, *, workers: int = 2, warmup_images: int = 2, chunk_images: int = 16,
              matmul_n: int = 2048, keras: bool = True) -> dict:
    """Measure the main job over ``cfg.images`` (see the module docstring).

    Args:
      cfg: the job's `RunConfig` (``images`` already set).
      workers: host worker processes of the job.
      warmup_images: images of the warm-up run (0: none; compilation is then timed).
      chunk_images: images scored together.
      matmul_n: side of the reference matmul.
      keras: run the Keras side by side when TensorFlow is importable.

    Returns:
      The results dict (the keys of ``bench_job.json``).
    """
    res = {"device": device_info(), "model": cfg.model, "images": cfg.images, "workers": workers,
           "config": cfg.to_dict(), "matmul_fp32_flops_per_s": matmul_rate(matmul_n, jnp.float32)}
    cache_flags = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
                   "jax_persistent_cache_min_entry_size_bytes")
    saved = {k: getattr(jax.config, k) for k in cache_flags}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for k, v in zip(cache_flags, (os.path.join(tmp, "xla_cache"), 0.0, 0)):
                jax.config.update(k, v)
            _measure(cfg, tmp, res, workers, warmup_images, chunk_images, keras)
        finally:
            for k, v in saved.items():
                jax.config.update(k, v)
    res["peak_rss_mib_end"] = round(peak_rss_mib(), 1)
    return res


def _measure(cfg, tmp, res, workers, warmup_images, chunk_images, keras) -> None:
    """The warm-up and timed runs, FLOPs and the Keras side by side, into ``res``."""
    from cms_jax.models import flops, load

    if warmup_images:
        warm, warm_s = _timed_job(dataclasses.replace(cfg, max_images=warmup_images),
                                  os.path.join(tmp, "warmup"), workers, chunk_images)
        res["warmup"] = {"images": warm["images_done"], "seconds": round(warm_s, 3),
                         "score_seconds_incl_compile": warm["stage_seconds"].get("score", 0.0)}
    run_dir = os.path.join(tmp, "run")
    summary, wall = _timed_job(cfg, run_dir, workers, chunk_images)
    res["peak_rss_mib"] = round(peak_rss_mib(), 1)
    with np.load(os.path.join(run_dir, "drops.npz")) as z:
        files, drops, valid, targets = list(z["files"]), z["drops"], z["valid"], z["targets"]
    n = int(summary["images_done"])
    stages = summary["stage_seconds"]
    res.update({
        "images_total": summary["images_total"], "images_done": n,
        "images_skipped": len(summary["images_skipped"]),
        "forward": summary.get("forward"), "dtype": summary.get("dtype"),
        "bf16_fidelity": summary.get("bf16_fidelity"), "work_items": summary.get("work_items"),
        "onnx_backend_probe": summary.get("onnx_backend_probe"),
        "wall_seconds": round(wall, 3), "faces_per_s": n / wall,
        "loop_seconds": summary["seconds"], "faces_per_s_loop": summary["faces_per_second"],
        "stage_seconds": stages, "host_seconds": summary["host_seconds"],
        "outside_stages_seconds": round(wall - sum(stages.values()), 3),
    })
    # One clean pass per image and one per scored vertex (batch padding not counted), each at the
    # dense forward's FLOPs: for the incremental forward this is the dense-equivalent rate.
    passes = int(valid.sum()) + n
    flops_per_pass = flops(load(cfg.model))
    res.update({"passes": passes, "dense_flops_per_pass": flops_per_pass,
                "achieved_flops_per_s": flops_per_pass * passes / wall,
                "achieved_flops_per_s_in_score": flops_per_pass * passes / max(stages.get("score", 0), 1e-9)})
    res["fraction_of_matmul"] = res["achieved_flops_per_s"] / res["matmul_fp32_flops_per_s"]
    res["fraction_of_matmul_in_score"] = res["achieved_flops_per_s_in_score"] / res["matmul_fp32_flops_per_s"]
    done = flops_done(cfg, summary)
    if done is not None:  # what the devices really computed (deduplicated, padded, incremental)
        res["flops_done_per_face"] = done / max(n, 1)
        res["flops_done_fraction_of_matmul_in_score"] = (
            done / max(stages.get("score", 0), 1e-9) / res["matmul_fp32_flops_per_s"])
    res["keras"] = (_keras_side_by_side(cfg, files, drops, valid, targets, res) if keras
                    else "n/a: not requested")
    res["onnxruntime"] = _onnxruntime_side_by_side(cfg, tmp, res, workers, chunk_images)


def flops_done(cfg, summary: dict) -> float | None:
    """FLOPs the run's devices computed: XLA's count of its programs times the copies they scored.

    Computed copies (``summary["work_items"]["computed"]``: distinct squares plus padding) at the
    FLOPs per copy of the step the run used (incremental or dense), plus one clean pass per image;
    None for a host black box (no XLA program to count).
    """
    from cms_jax.bench.methods import incremental_flops
    from cms_jax.engine import OcclusionEngine
    from cms_jax.models import flops, load

    items = summary.get("work_items") or {}
    model = load(cfg.model, onnx_backend=(summary.get("onnx_backend_probe") or {}).get("chosen", "jax"))
    if not items or not model.jittable:
        return None
    clean = flops(model)
    per_copy = clean
    if summary.get("forward") == "incremental":
        eng = OcclusionEngine(model, batch_size=128, images_per_block=1, forward="incremental",
                              patch_size=int(summary["patch_size"]))
        per_copy = incremental_flops(eng, model, 128, int(summary["patch_size"]))
    return per_copy * items["computed"] + clean * summary["images_done"]


def _onnxruntime_side_by_side(cfg, tmp, res, workers, chunk_images) -> dict | str:
    """The same job with ``--onnx_backend=onnxruntime`` on the same faces (ONNX models only)."""
    from cms_jax.scoring.backend_probe import is_onnx

    if not is_onnx(cfg.model):
        return f"n/a: {cfg.model} is not an ONNX model"
    peer = dataclasses.replace(cfg, onnx_backend="onnxruntime", incremental="auto")
    summary, wall = _timed_job(peer, os.path.join(tmp, "onnxruntime"), workers, chunk_images)
    with np.load(os.path.join(tmp, "run", "drops.npz")) as a, \
            np.load(os.path.join(tmp, "onnxruntime", "drops.npz")) as b:
        keep = a["valid"] & b["valid"]
        x, y = a["drops"][keep], b["drops"][keep]
    n = int(summary["images_done"])
    return {"faces": n, "wall_seconds": round(wall, 3), "faces_per_s": n / wall,
            "score_seconds": summary["stage_seconds"].get("score", 0.0),
            "job_over_onnxruntime": res["faces_per_s"] / (n / wall),
            "drops_pearson": float(np.corrcoef(x, y)[0, 1]) if x.size > 1 else float("nan"),
            "drops_max_abs_diff": float(np.abs(x - y).max()) if x.size else 0.0}


def _keras_side_by_side(cfg, files, drops, valid, targets, res) -> dict | str:
    """The Keras dense procedure on the job's scored faces; an "n/a: ..." string when it cannot run."""
    from cms_jax.data.prepare import FacePreparer
    from cms_jax.scoring.scorer import Scorer

    path = keras_reference.keras_file(cfg.model)
    if path is None:
        return f"n/a: {cfg.model} is not a Keras HDF5 model"
    try:
        model = keras_reference.load(path)
    except ImportError:
        return keras_reference.TF_MISSING
    scorer = Scorer(cfg)
    # The same host prep as the job (decode, MediaPipe, crop; no landmark cache), in this process.
    preparer = FacePreparer(scorer.model, workers=0, cache_dir=None)
    try:
        prepared = [p for p in preparer.imap(files) if p.reason is None]
    finally:
        preparer.close()
    model.predict_on_batch(np.zeros((2,) + tuple(model.input_shape[1:]), np.float32))  # build the TF graph
    out, secs = keras_reference.run_reference(model.predict_on_batch, scorer,
                                              prepared, dict(zip(files, targets.tolist())))
    row = {f: i for i, f in enumerate(files)}
    both = {f: valid[row[f]] & v for f, (_, v) in out.items()}  # landmarks are recomputed here
    a = np.concatenate([drops[row[f]][m] for f, m in both.items()])
    b = np.concatenate([out[f][0][m] for f, m in both.items()])
    same_valid = all(np.array_equal(valid[row[f]], v) for f, (_, v) in out.items())
    n = len(out)
    device, procedure = secs["predict"], secs["predict"] + secs["occlude"]
    total = procedure + secs["host"]
    return {
        "model_file": path, "faces": n, "batch": keras_reference.BATCH,
        "seconds": {k: round(v, 3) for k, v in secs.items()},
        "faces_per_s_predict_only": n / device, "faces_per_s_procedure": n / procedure,
        "faces_per_s_with_host_prep": n / total,
        "job_over_keras_with_host_prep": res["faces_per_s"] / (n / total),
        "job_over_keras_predict_only": res["faces_per_s"] / (n / device),
        "drops_pearson": float(np.corrcoef(a, b)[0, 1]) if a.size > 1 else float("nan"),
        "drops_max_abs_diff": float(np.abs(a - b).max()) if a.size else 0.0,
        "same_valid_vertices": bool(same_valid),
    }


def print_report(res: dict) -> None:
    """The results of `bench_job` as a few lines of text."""
    print(f"{res['model']} ({res['forward']}, {res['dtype']}) on {res['images_done']}/{res['images_total']} faces, "
          f"{res['workers']} workers, "
          f"{res['device']['kind']} x{res['device']['count']}")
    if "warmup" in res:
        w = res["warmup"]
        print(f"  warm-up: {w['images']} faces in {w['seconds']:.1f} s "
              f"(scoring incl. compilation {w['score_seconds_incl_compile']:.1f} s)")
    print(f"  job: {res['faces_per_s']:.2f} faces/s ({res['wall_seconds']:.1f} s wall; "
          f"{res['faces_per_s_loop']:.2f} faces/s in the streaming loop)")
    print("  main-process seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in res["stage_seconds"].items())
          + f", outside the stages {res['outside_stages_seconds']:.2f}")
    print("  worker seconds (summed): " + ", ".join(f"{k} {v:.2f}" for k, v in res["host_seconds"].items()))
    print(f"  {res['passes']} passes x {res['dense_flops_per_pass'] / 1e6:.1f} MFLOP: "
          f"{res['achieved_flops_per_s'] / 1e9:.2f} GFLOP/s = {100 * res['fraction_of_matmul']:.1f}% of the "
          f"fp32 matmul rate ({res['matmul_fp32_flops_per_s'] / 1e9:.1f} GFLOP/s); "
          f"{100 * res['fraction_of_matmul_in_score']:.1f}% while scoring")
    items = res.get("work_items") or {}
    if items:
        print(f"  work items: {items['vertices']} vertices, {items['unique']} distinct squares "
              f"({100 * items['dedup_share']:.1f}% removed by deduplication), {items['computed']} computed "
              f"({100 * items['padding_share']:.1f}% padding)")
    if "flops_done_per_face" in res:
        print(f"  FLOPs done: {res['flops_done_per_face'] / 1e9:.2f} GFLOP per face, "
              f"{100 * res['flops_done_fraction_of_matmul_in_score']:.1f}% of the matmul rate while scoring")
    if res.get("onnx_backend_probe"):
        p = res["onnx_backend_probe"]
        print(f"  backend probe: jax {p.get('jax')} vs onnxruntime {p.get('onnxruntime')} copies/s -> {p['chosen']}")
    print(f"  peak RSS {res['peak_rss_mib']:.0f} MiB after the job, {res['peak_rss_mib_end']:.0f} MiB at the end")
    o = res.get("onnxruntime")
    if isinstance(o, dict):
        print(f"  onnxruntime job ({o['faces']} faces): {o['faces_per_s']:.2f} faces/s; job/onnxruntime "
              f"{o['job_over_onnxruntime']:.2f}x; drops Pearson {o['drops_pearson']:.5f}, "
              f"max |diff| {o['drops_max_abs_diff']:.2e}")
    k = res["keras"]
    if isinstance(k, str):
        print(f"  keras: {k}")
    else:
        print(f"  keras ({k['faces']} faces): {k['faces_per_s_predict_only']:.2f} faces/s predict only, "
              f"{k['faces_per_s_procedure']:.2f} with numpy occlusion, {k['faces_per_s_with_host_prep']:.2f} "
              f"with host prep; job/keras {k['job_over_keras_with_host_prep']:.2f}x (with host prep), "
              f"{k['job_over_keras_predict_only']:.2f}x (predict only); drops Pearson "
              f"{k['drops_pearson']:.5f}, max |diff| {k['drops_max_abs_diff']:.2e}")


def run(cfg: JobBenchConfig, out_dir: str) -> dict:
    """Measure the job of ``cfg``, print the report, write ``out_dir/bench_job.json``; returns its dict."""
    from cms_jax.pipeline import default_images as celeba_samples

    smoke = cfg.smoke
    job = RunConfig(model="tiny" if smoke else cfg.model,
                    images=celeba_samples() if smoke else (cfg.images or default_images()),
                    max_images=4 if smoke else cfg.max_images, incremental="auto" if cfg.incremental else False,
                    dtype=cfg.dtype, batch_size=cfg.batch_size, target="" if smoke else cfg.target)
    res = bench_job(job, workers=cfg.workers, warmup_images=cfg.warmup_images, chunk_images=cfg.chunk_images,
                    matmul_n=256 if smoke else 2048, keras=cfg.keras)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "bench_job.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=2)
    print_report(res)
    print(f"wrote {path}")
    return res
