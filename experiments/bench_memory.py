"""Peak memory of the main job against the number of images (it must stay flat).

  CMS_JAX_ASSETS=../shared python -m experiments.bench_memory --model=gender \
      --images=../shared/faces/utkface --counts=100,500 --out_dir=out/bench_memory

Runs ``experiments.cms`` once per count in a fresh process and reads the peak
resident set size of its main process (``VmHWM``, `cms_jax.data.progress.peak_rss_mb`:
``ru_maxrss`` would carry the launching process's peak over fork and exec). Worker
processes are not reported. Prints a table and writes ``bench_memory.json``: the ratio
of the largest count's peak to the smallest's (target: within 10%).

The logic is `cms_jax.bench.memory`.
"""
from absl import app, flags

from cms_jax.bench import memory

_MODEL = flags.DEFINE_string("model", "gender", "Model name or path.")
_IMAGES = flags.DEFINE_string("images", "", "Images (default: UTKFace from the assets).")
_COUNTS = flags.DEFINE_list("counts", ["100", "500"], "Numbers of images to compare.")
_OUT_DIR = flags.DEFINE_string("out_dir", "out/bench_memory", "Output folder.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny model, 4 and 8 images.")


def main(argv):
    del argv
    cfg = memory.MemoryBenchConfig(model=_MODEL.value, images=_IMAGES.value,
                                   counts=tuple(int(c) for c in _COUNTS.value), smoke=_SMOKE.value)
    memory.run(cfg, _OUT_DIR.value)


if __name__ == "__main__":
    app.run(main)
