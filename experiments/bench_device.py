r"""Everything to measure on a lent GPU or TPU, in one run under 5 minutes, into one JSON file.

  CMS_JAX_ASSETS=../shared python -m experiments.bench_device --out=out/bench_device

`cms_jax.bench.device`: VGG-16 throughput (dense/incremental x fp32/bf16 against the paper's
PyTorch procedure on the same device) and the main job on --faces real faces (gender model) in
fp32 and bf16 with GPU-sized batches (--batch_size, --chunk_images), under the highest matmul
precision so fp32 parity holds. Writes ``<out>/bench_device.json`` (and each part's own JSON).

Not run on a GPU yet: no device was lent to the sessions so far.
Smoke (seconds, CPU): python -m experiments.bench_device --smoke --out=/tmp/bench_device
"""
from absl import app, flags, logging

_OUT = flags.DEFINE_string("out", "out/bench_device", "Folder for bench_device.json.")
_FACES = flags.DEFINE_integer("faces", 200, "Real faces of the job runs.")
_BATCH = flags.DEFINE_integer("batch_size", 4096, "Job work items per device batch (all devices).")
_CHUNK = flags.DEFINE_integer("chunk_images", 64, "Job images scored together.")
_WORKERS = flags.DEFINE_integer("workers", 8, "Job host workers (decode + MediaPipe).")
_SECONDS = flags.DEFINE_float("seconds_per_method", 20.0, "Throughput: seconds per method at most.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Seconds-long run on the CPU: the tiny twins, 4 faces.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from cms_jax.bench import device
    from converters.torchvision_vgg import to_torch

    device.run(device.DeviceBenchConfig(faces=_FACES.value, batch_size=_BATCH.value, chunk_images=_CHUNK.value,
                                        workers=_WORKERS.value, seconds_per_method=_SECONDS.value,
                                        smoke=_SMOKE.value), _OUT.value, torch_port=to_torch)


if __name__ == "__main__":
    app.run(main)
