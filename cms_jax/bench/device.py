"""One prepared benchmark for a lent accelerator: throughput and the whole job, fp32 and bf16, one JSON.

An accelerator is lent to a session for minutes, so everything worth knowing about it is measured
by one call of ``experiments/bench_device.py`` (under 5 minutes on a GPU):

* ``throughput``: `cms_jax.bench.throughput` on VGG-16 at 224 (dense and incremental, fp32 and
  bf16, against the paper's PyTorch procedure on the same device) with batches sized for a GPU;
* ``job_float32`` / ``job_bfloat16``: `cms_jax.bench.job` -- the main job end to end on real faces
  (gender model) with GPU-sized batches and chunks, faces/s, FLOPs done, share of the matmul rate,
  and (bf16) the fidelity of its drops to float32.

Dense float32 parity with PyTorch needs float32 matmuls: on a GPU XLA may otherwise use TF32, so
the whole benchmark runs under ``jax_default_matmul_precision='highest'`` (recorded in the JSON).
``smoke`` (seconds, on the CPU, tested in CI): the tiny twins on 4 faces.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time

import jax

from cms_jax.bench import job as job_bench
from cms_jax.bench import throughput
from cms_jax.bench.measure import device_info


@dataclasses.dataclass(frozen=True)
class DeviceBenchConfig:
    """The device benchmark (the flags of ``experiments/bench_device.py``)."""
    faces: int = 200          # real faces of the job runs
    batch_size: int = 4096    # job work items per device batch (all devices)
    chunk_images: int = 64    # job images scored together
    workers: int = 8          # job host workers (decode + MediaPipe)
    vertices: int = 468       # throughput: occluded copies per face
    chunk: int = 512          # throughput: copies per device batch
    seconds_per_method: float = 20.0
    smoke: bool = False


def _throughput(cfg: DeviceBenchConfig, out_dir: str, torch_port) -> dict:
    tcfg = throughput.ThroughputConfig(smoke=True) if cfg.smoke else throughput.ThroughputConfig(
        vertices=cfg.vertices, faces=4, chunk=cfg.chunk, torch_vertices=64,
        torch_device="cuda" if jax.devices()[0].platform == "gpu" else "cpu",
        seconds_per_method=cfg.seconds_per_method, small_models=("gender",), fidelity_faces=8)
    return throughput.run(tcfg, os.path.join(out_dir, "throughput"), torch_port=torch_port)


def _job(cfg: DeviceBenchConfig, dtype: str, out_dir: str) -> dict:
    jcfg = job_bench.JobBenchConfig(max_images=4 if cfg.smoke else cfg.faces, dtype=dtype, smoke=cfg.smoke,
                                    workers=2 if cfg.smoke else cfg.workers, keras=False,
                                    batch_size=0 if cfg.smoke else cfg.batch_size,
                                    chunk_images=16 if cfg.smoke else cfg.chunk_images)
    return job_bench.run(jcfg, os.path.join(out_dir, f"job_{dtype}"))


def run(cfg: DeviceBenchConfig, out_dir: str, *, torch_port=None) -> dict:
    """Every measurement of the module docstring; writes ``out_dir/bench_device.json`` and returns it.

    ``torch_port``: the Flax-to-torch VGG port for the PyTorch procedure (``converters.torchvision_vgg
    .to_torch``; the package never imports the converters), as `throughput.run`.
    """
    t0 = time.perf_counter()
    saved = jax.config.jax_default_matmul_precision
    jax.config.update("jax_default_matmul_precision", "highest")
    res = {"device": device_info(), "config": dataclasses.asdict(cfg), "jax": jax.__version__,
           "matmul_precision": "highest"}
    try:
        for name, fn in (("throughput", lambda: _throughput(cfg, out_dir, torch_port)),
                         ("job_float32", lambda: _job(cfg, "float32", out_dir)),
                         ("job_bfloat16", lambda: _job(cfg, "bfloat16", out_dir))):
            t = time.perf_counter()
            try:  # one failing part must not cost the others' figures (the device time is spent)
                res[name] = fn()
            except Exception as e:  # noqa: BLE001 - recorded, and the JSON says which part failed
                res[name] = {"error": f"{type(e).__name__}: {e}"}
            res.setdefault("seconds", {})[name] = round(time.perf_counter() - t, 1)
    finally:
        jax.config.update("jax_default_matmul_precision", saved)
    res["seconds"]["total"] = round(time.perf_counter() - t0, 1)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "bench_device.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=2, default=str)
    print(f"wrote {path} ({res['seconds']['total']:.0f} s)")
    return res
