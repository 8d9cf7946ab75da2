"""The main job's input pipeline alone: images/s of the Grain loader (decode, MediaPipe, crop).

  CMS_JAX_ASSETS=../shared python -m experiments.bench_input --max_images=1000 --out_dir=out/bench_input

Reads the first N UTKFace faces of ``utkface_22k`` (or --images) through
`FacePreparer.loader` exactly as the job does, twice: into an empty landmark
cache (MediaPipe on every file) and again from the filled cache (decode and
crop only; what a resumed or repeated run does). Also times a resume: the
iterator state after half the files, restored into a fresh loader, must yield
the second half. Rates are steady state (after the first image); ``startup_s`` is the time to
the first image (worker processes start, each loading its landmarker). The job's scoring is
not involved. Writes bench_input.json.
--smoke runs 24 images.

The logic is `cms_jax.bench.loader`.
"""
from absl import app, flags

from cms_jax.bench import loader

_IMAGES = flags.DEFINE_string("images", "", "Image folder (default: utkface_22k of the assets).")
_MAX = flags.DEFINE_integer("max_images", 1000, "Use the first N images.")
_WORKERS = flags.DEFINE_integer("workers", 2, "Grain worker processes.")
_MODEL = flags.DEFINE_string("model", "gender", "Model whose crop policy and input size are used.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Folder for bench_input.json.")
_SMOKE = flags.DEFINE_bool("smoke", False, "24 images, seconds.")
flags.mark_flag_as_required("out_dir")


def main(argv):
    del argv
    cfg = loader.InputBenchConfig(images=_IMAGES.value, max_images=_MAX.value, workers=_WORKERS.value,
                                  model=_MODEL.value, smoke=_SMOKE.value)
    loader.run(cfg, _OUT_DIR.value)


if __name__ == "__main__":
    app.run(main)
