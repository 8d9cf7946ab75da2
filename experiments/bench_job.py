r"""The main job end to end: faces/s, seconds per stage, FLOP/s vs matmul, peak RSS, vs Keras.

  CMS_JAX_ASSETS=../shared python -m experiments.bench_job --max_images=100 --out=out/bench_job

Runs `cms_jax.pipeline.run_job` on the first --max_images of --images (default
``faces/utkface_22k`` of the assets) after a 2-image warm-up (compilation is
reported there, not in the timed run), and writes ``<out>/bench_job.json``:
faces/s of the whole job, its ``stage_seconds`` (main process: waiting on the
host workers, scoring, splat + accumulate, writes, checkpoints) and
``host_seconds`` (decode + MediaPipe, crop: summed over the workers), achieved
FLOP/s against a jitted 2048x2048 fp32 matmul timed in the same run, and peak
RSS. When TensorFlow is importable (never a dependency) the same Keras file is
run by the dense procedure a Keras user would write (`cms_jax.pipeline.
keras_reference`: numpy occluded copies, ``predict_on_batch`` in batches of
1024) on the same faces, after the job; its drops are checked against the
job's. For that side by side, a scratch venv with TensorFlow:
``pip install tensorflow-cpu tf_keras && pip install -e .``, then the same command.

Measured 2026-12-02, gender model, first 100 UTKFace-22k faces, 2 workers, CPU (2 shared cores,
load average 4-5 from other work, so absolute figures are noisy; ratios come from one run):
  project venv: 0.62 faces/s (160.8 s wall). Main process: score 156.0 s, prepare_wait 2.2,
    accumulate 0.7, checkpoint 0.6, pool 0.7, write 0.04, outside the stages 0.6. Workers (summed):
    decode_align 3.7, read 0.4, crop 0.3. 46,028 passes x 21.3 MFLOP = 6.1 GFLOP/s, 8.8% of the
    fp32 matmul (69.5 GFLOP/s). Warm-up 2 faces 13.7 s (scoring incl. compilation 6.5 s).
    Peak RSS 1440 MiB.
  TensorFlow venv (tensorflow-cpu 2.21, tf_keras): job 0.73 faces/s (score 118.6 s of 137.6 s;
    6.5% of matmul); Keras dense procedure on the same 100 faces 2.47 faces/s predict only, 2.46
    with numpy occlusion, 2.37 with host prep: job/Keras 0.31x. Drops: Pearson 1.00000, max |diff|
    1.4e-6, same valid vertices. Device scoring is the job's whole cost on this CPU: XLA:CPU runs
    mini-XCEPTION at roughly half TensorFlow's oneDNN rate (bare forward, batch 1024: ~730 vs
    ~1450 passes/s), and the job's scoring reached ~390 passes/s.

Smoke (seconds): python -m experiments.bench_job --smoke --out=/tmp/bench_job
"""
import dataclasses
import json
import os

from absl import app, flags, logging

_IMAGES = flags.DEFINE_string("images", "", "Folder, glob or list of images (default: faces/utkface_22k).")
_MAX_IMAGES = flags.DEFINE_integer("max_images", 100, "Use the first N images.")
_MODEL = flags.DEFINE_string("model", "gender", "Built-in model name or a model file.")
_INCREMENTAL = flags.DEFINE_bool("incremental", False, "Exact incremental inference (not black boxes).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype of the scoring.")
_WORKERS = flags.DEFINE_integer("workers", 2, "Host worker processes (decode + MediaPipe).")
_WARMUP = flags.DEFINE_integer("warmup_images", 2, "Images of the untimed warm-up run (0: none).")
_KERAS = flags.DEFINE_bool("keras", True, "Keras side by side when TensorFlow is importable.")
_OUT = flags.DEFINE_string("out", "out/bench_job", "Folder for bench_job.json.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Seconds-long run: tiny model, 4 CelebA samples.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from cms_jax.pipeline import RunConfig, bench, default_images

    smoke = _SMOKE.value
    kw = {}
    if _DTYPE.value != "float32" or any(f.name == "dtype" for f in dataclasses.fields(RunConfig)):
        kw["dtype"] = _DTYPE.value  # a RunConfig without the field refuses bfloat16 here
    cfg = RunConfig(model="tiny" if smoke else _MODEL.value,
                    images=default_images() if smoke else (_IMAGES.value or bench.default_images()),
                    max_images=4 if smoke else _MAX_IMAGES.value, incremental=_INCREMENTAL.value, **kw)
    res = bench.bench_job(cfg, workers=_WORKERS.value, warmup_images=_WARMUP.value,
                          matmul_n=256 if smoke else 2048, keras=_KERAS.value)
    os.makedirs(_OUT.value, exist_ok=True)
    path = os.path.join(_OUT.value, "bench_job.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=2)
    bench.print_report(res)
    print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
