"""Alignment throughput: images/s of MediaPipe face alignment with worker processes.

  CMS_JAX_ASSETS=../shared python experiments/bench_align.py --workers=2 --out_dir=out/bench_align

Aligns the 588 UTKFace chips (200x200; or --images) into an empty cache, end
to end: reading, hashing, decoding, MediaPipe, cache writes and the worker
pool's start-up (each worker loads its own FaceLandmarker). Then runs again to
time the cache hits (no MediaPipe call). On a shared machine the wall-clock
rate drops with the load; the CPU seconds used (this process and its workers)
give a load-independent rate, reported too. Target: >= 100 images/s on 2 cores. Writes bench_align.json.
--smoke aligns 16 images with 2 workers in a few seconds.

The logic is `cms_jax.bench.align`.
"""
from absl import app, flags

from cms_jax.bench import align

_IMAGES = flags.DEFINE_string("images", "", "Image folder (default: the UTKFace chips of the assets).")
_WORKERS = flags.DEFINE_integer("workers", 2, "Worker processes (0: in this process).")
_MAX = flags.DEFINE_integer("max_images", 0, "Use the first N images (0 = all).")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Folder for bench_align.json.")
_SMOKE = flags.DEFINE_bool("smoke", False, "16 images, seconds.")
flags.mark_flag_as_required("out_dir")


def main(argv):
    del argv
    cfg = align.AlignBenchConfig(images=_IMAGES.value, workers=_WORKERS.value, max_images=_MAX.value,
                                 smoke=_SMOKE.value)
    align.run(cfg, _OUT_DIR.value)


if __name__ == "__main__":
    app.run(main)
