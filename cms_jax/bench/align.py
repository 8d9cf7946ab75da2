"""Alignment throughput (Section 3.1): images/s of MediaPipe face alignment with worker processes.

Aligns the 588 UTKFace chips (200x200; or ``images``) into an empty cache, end
to end: reading, hashing, decoding, MediaPipe, cache writes and the worker
pool's start-up (each worker loads its own FaceLandmarker). Then runs again to
time the cache hits (no MediaPipe call). On a shared machine the wall-clock
rate drops with the load; the CPU seconds used (this process and its workers)
give a load-independent rate, reported too. Target: >= 100 images/s on 2 cores.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import platform
import tempfile

from cms_jax.align import align_files
from cms_jax.bench.measure import cpu_seconds


@dataclasses.dataclass(frozen=True)
class AlignBenchConfig:
    """The alignment benchmark (the flags of ``experiments/bench_align.py``).

    ``smoke``: 16 images, seconds.
    """
    images: str = ""      # image folder (default: the UTKFace chips of the assets)
    workers: int = 2      # worker processes (0: in this process)
    max_images: int = 0   # use the first N images (0 = all)
    smoke: bool = False


def run(cfg: AlignBenchConfig, out_dir: str) -> dict:
    """Align cold and cached, print a line, write ``out_dir/bench_align.json``; returns its dict."""
    folder = cfg.images
    if not folder:
        from cms_jax.assets import resolve_dir
        folder = str(resolve_dir("utkface", verify=False))
    paths = sorted(p for p in glob.glob(os.path.join(folder, "*"))
                   if p.lower().endswith((".jpg", ".jpeg", ".png")))
    n = 16 if cfg.smoke else (cfg.max_images or len(paths))
    paths = paths[:n]
    workers = cfg.workers
    load_before = os.getloadavg()[0]  # other processes on the machine depress the rate
    cold, warm = {}, {}
    cpu0 = cpu_seconds()
    with tempfile.TemporaryDirectory() as cache:
        res = align_files(paths, workers=workers, cache_dir=cache, stats=cold)
        cpu = cpu_seconds() - cpu0  # workers are joined, so their time is counted
        align_files(paths, workers=workers, cache_dir=cache, stats=warm)
    report = {
        "images": len(paths), "folder": folder, "workers": workers,
        "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
        "aligned": cold["aligned"], "align_rate": cold["aligned"] / max(len(paths), 1),
        "detect_calls": cold["detect_calls"],
        "seconds": cold["seconds"], "images_per_s": len(paths) / cold["seconds"],
        "cached_seconds": warm["seconds"], "cached_images_per_s": len(paths) / warm["seconds"],
        "cached_detect_calls": warm["detect_calls"],
        # Load-independent: CPU seconds spent (this process and its workers),
        # and the rate that implies with max(workers, 1) cores to ourselves.
        "cpu_seconds": cpu, "images_per_cpu_s": len(paths) / cpu,
        "projected_images_per_s_free_cores": max(workers, 1) * len(paths) / cpu,
        "failures": {r.path: r.reason for r in res if not r.ok},
        "target_images_per_s": 100.0, "load_avg_1min_before": load_before,
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "bench_align.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(f"aligned {report['aligned']}/{len(paths)} in {report['seconds']:.2f}s: "
          f"{report['images_per_s']:.1f} images/s with {workers} workers "
          f"(cached: {report['cached_images_per_s']:.0f} images/s, "
          f"{warm['detect_calls']} MediaPipe calls); {report['images_per_cpu_s']:.1f} images per "
          f"CPU-second -> {report['projected_images_per_s_free_cores']:.0f} images/s on "
          f"{max(workers, 1)} free cores (load before: {load_before:.1f})")
    return report
