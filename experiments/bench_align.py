"""Alignment throughput: images/s of MediaPipe face alignment with worker processes.

  CMS_JAX_ASSETS=../shared python experiments/bench_align.py --workers=2 --out_dir=out/bench_align

Aligns the 588 UTKFace chips (200x200; or --images) into an empty cache, end
to end: reading, hashing, decoding, MediaPipe, cache writes and the worker
pool's start-up (each worker loads its own FaceLandmarker). Then runs again to
time the cache hits (no MediaPipe call). On a shared machine the wall-clock
rate drops with the load; the CPU seconds used (this process and its workers)
give a load-independent rate, reported too. Target: >= 100 images/s on 2 cores. Writes bench_align.json.
--smoke aligns 16 images with 2 workers in a few seconds.
"""
import glob
import json
import os
import platform
import resource
import tempfile

from absl import app, flags

from cms_jax.align import align_files

_IMAGES = flags.DEFINE_string("images", "", "Image folder (default: the UTKFace chips of the assets).")
_WORKERS = flags.DEFINE_integer("workers", 2, "Worker processes (0: in this process).")
_MAX = flags.DEFINE_integer("max_images", 0, "Use the first N images (0 = all).")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Folder for bench_align.json.")
_SMOKE = flags.DEFINE_bool("smoke", False, "16 images, seconds.")
flags.mark_flag_as_required("out_dir")


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv):
    del argv
    folder = _IMAGES.value
    if not folder:
        from cms_jax.assets import resolve_dir
        folder = str(resolve_dir("utkface", verify=False))
    paths = sorted(p for p in glob.glob(os.path.join(folder, "*"))
                   if p.lower().endswith((".jpg", ".jpeg", ".png")))
    n = 16 if _SMOKE.value else (_MAX.value or len(paths))
    paths = paths[:n]
    load_before = os.getloadavg()[0]  # other processes on the machine depress the rate
    cold, warm = {}, {}
    cpu0 = _cpu_seconds()
    with tempfile.TemporaryDirectory() as cache:
        res = align_files(paths, workers=_WORKERS.value, cache_dir=cache, stats=cold)
        cpu = _cpu_seconds() - cpu0  # workers are joined, so their time is counted
        align_files(paths, workers=_WORKERS.value, cache_dir=cache, stats=warm)
    report = {
        "images": len(paths), "folder": folder, "workers": _WORKERS.value,
        "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
        "aligned": cold["aligned"], "align_rate": cold["aligned"] / max(len(paths), 1),
        "detect_calls": cold["detect_calls"],
        "seconds": cold["seconds"], "images_per_s": len(paths) / cold["seconds"],
        "cached_seconds": warm["seconds"], "cached_images_per_s": len(paths) / warm["seconds"],
        "cached_detect_calls": warm["detect_calls"],
        # Load-independent: CPU seconds spent (this process and its workers),
        # and the rate that implies with max(workers, 1) cores to ourselves.
        "cpu_seconds": cpu, "images_per_cpu_s": len(paths) / cpu,
        "projected_images_per_s_free_cores": max(_WORKERS.value, 1) * len(paths) / cpu,
        "failures": {r.path: r.reason for r in res if not r.ok},
        "target_images_per_s": 100.0, "load_avg_1min_before": load_before,
    }
    os.makedirs(_OUT_DIR.value, exist_ok=True)
    with open(os.path.join(_OUT_DIR.value, "bench_align.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(f"aligned {report['aligned']}/{len(paths)} in {report['seconds']:.2f}s: "
          f"{report['images_per_s']:.1f} images/s with {_WORKERS.value} workers "
          f"(cached: {report['cached_images_per_s']:.0f} images/s, "
          f"{warm['detect_calls']} MediaPipe calls); {report['images_per_cpu_s']:.1f} images per "
          f"CPU-second -> {report['projected_images_per_s_free_cores']:.0f} images/s on "
          f"{max(_WORKERS.value, 1)} free cores (load before: {load_before:.1f})")


if __name__ == "__main__":
    app.run(main)
