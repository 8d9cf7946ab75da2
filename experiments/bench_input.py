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
"""
import json
import os
import tempfile
import time

from absl import app, flags

from cms_jax import models
from cms_jax.pipeline.inputs import expand_images
from cms_jax.pipeline.prepare import FacePreparer

_IMAGES = flags.DEFINE_string("images", "", "Image folder (default: utkface_22k of the assets).")
_MAX = flags.DEFINE_integer("max_images", 1000, "Use the first N images.")
_WORKERS = flags.DEFINE_integer("workers", 2, "Grain worker processes.")
_MODEL = flags.DEFINE_string("model", "gender", "Model whose crop policy and input size are used.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Folder for bench_input.json.")
_SMOKE = flags.DEFINE_bool("smoke", False, "24 images, seconds.")
flags.mark_flag_as_required("out_dir")


def _rate(preparer, files, state=None) -> tuple[float, list[str], float]:
    """Steady-state images/s (after the first item), the paths in order, and the start-up seconds."""
    t0 = time.perf_counter()
    it = preparer.loader(files, state=state)
    got = [next(it).path]
    t1 = time.perf_counter()
    got += [p.path for p in it]
    return (len(got) - 1) / max(time.perf_counter() - t1, 1e-9), got, t1 - t0


def main(argv):
    del argv
    from cms_jax.assets import resolve_dir
    folder = _IMAGES.value or str(resolve_dir("utkface_22k"))
    files = expand_images(folder, 24 if _SMOKE.value else _MAX.value)
    model = models.load(_MODEL.value)
    res = {"images": len(files), "workers": _WORKERS.value, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as cache:
        prep = FacePreparer(model, workers=_WORKERS.value, cache_dir=cache)
        try:
            res["cold_images_per_s"], _, res["startup_s"] = _rate(prep, files)
            res["warm_images_per_s"], order, _ = _rate(prep, files)
            it = prep.loader(files)
            half = len(files) // 2
            for _ in range(half):
                next(it)
            state = it.get_state()
            _, rest, _ = _rate(prep, files, state)
            res["resume_continues_at_the_exact_image"] = rest == order[half:]
        finally:
            prep.close()
    res = {k: round(v, 1) if isinstance(v, float) else v for k, v in res.items()}
    os.makedirs(_OUT_DIR.value, exist_ok=True)
    with open(os.path.join(_OUT_DIR.value, "bench_input.json"), "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps(res, indent=2))
    if not res["resume_continues_at_the_exact_image"]:
        raise SystemExit("the loader's restored state did not continue at the exact image")


if __name__ == "__main__":
    app.run(main)
