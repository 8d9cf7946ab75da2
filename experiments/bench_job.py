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
run by the dense procedure a Keras user would write (`cms_jax.bench.
keras_reference`: numpy occluded copies, ``predict_on_batch`` in batches of
1024) on the same faces, after the job; its drops are checked against the
job's. For that side by side, a scratch venv with TensorFlow:
``pip install tensorflow-cpu tf_keras && pip install -e .``, then the same command.

Measured 2026-12-02, gender model, first 100 UTKFace-22k faces, 2 workers, 2-core CPU, quiet machine,
after the engine work of issue 12 (one run each, minutes apart):
  --incremental (TensorFlow venv): 4.67 faces/s (score 15.1 s of 21.4 s wall; 45.8 GFLOP/s dense-
    equivalent = 23% of the fp32 matmul rate); Keras dense procedure on the same faces 3.98 faces/s
    with host prep, 4.22 predict only: job/Keras 1.17x. Drops Pearson 1.00000, max |diff| 1.4e-6.
  dense (project venv): 1.57 faces/s (score 61.4 s of 63.6 s): incremental/dense 2.97x.
  Peak RSS about 1.5 GiB. Before the engine work the dense job was 0.31x Keras.

Smoke (seconds): python -m experiments.bench_job --smoke --out=/tmp/bench_job

The logic is `cms_jax.bench.job`.
"""
from absl import app, flags, logging

from cms_jax.forward import DTYPES

_IMAGES = flags.DEFINE_string("images", "", "Folder, glob or list of images (default: faces/utkface_22k).")
_MAX_IMAGES = flags.DEFINE_integer("max_images", 100, "Use the first N images.")
_MODEL = flags.DEFINE_string("model", "gender", "Built-in model name or a model file.")
_INCREMENTAL = flags.DEFINE_bool("incremental", True, "Exact incremental inference where the model allows "
                                  "(the main job's default); --noincremental scores densely.")
_BATCH = flags.DEFINE_integer("batch_size", 0, "Work items per device batch (the job's --batch_size; 0: its "
                             "default).")
_CHUNK = flags.DEFINE_integer("chunk_images", 16, "Images scored together (the job's --chunk_images).")
_TARGET = flags.DEFINE_string("target", "", "The job's --target (regression models: headpose needs yaw|pitch|roll).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", list(DTYPES), "Compute dtype of the scoring.")
_WORKERS = flags.DEFINE_integer("workers", 2, "Host worker processes (decode + MediaPipe).")
_WARMUP = flags.DEFINE_integer("warmup_images", 2, "Images of the untimed warm-up run (0: none).")
_KERAS = flags.DEFINE_bool("keras", True, "Keras side by side when TensorFlow is importable.")
_OUT = flags.DEFINE_string("out", "out/bench_job", "Folder for bench_job.json.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Seconds-long run: tiny model, 4 CelebA samples.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from cms_jax.bench import job

    cfg = job.JobBenchConfig(images=_IMAGES.value, max_images=_MAX_IMAGES.value, model=_MODEL.value,
                             incremental=_INCREMENTAL.value, dtype=_DTYPE.value, workers=_WORKERS.value,
                             warmup_images=_WARMUP.value, keras=_KERAS.value, smoke=_SMOKE.value,
                             batch_size=_BATCH.value, chunk_images=_CHUNK.value, target=_TARGET.value)
    job.run(cfg, _OUT.value)


if __name__ == "__main__":
    app.run(main)
