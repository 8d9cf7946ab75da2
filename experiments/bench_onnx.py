"""ONNX -> JAX: cms_jax.models.onnx_jax against onnxruntime and jaxonnxruntime on the FSA-Net files.

  CMS_JAX_ASSETS=../shared PYTHONPATH=/tmp/joxlib python -m experiments.bench_onnx --out_dir=out/bench_onnx

(``PYTHONPATH`` only where jaxonnxruntime 0.3.0 was installed apart, e.g.
``pip install --no-deps --target /tmp/joxlib jaxonnxruntime==0.3.0``; without
it its figures read "n/a: not installed".)

For fsanet-1x1 and fsanet-var, on --batch real CelebA faces (BGR, 64x64,
(x - 127.5) / 128): forward time (jit, after warm-up, median of --repeats) of
the converter (vmap over batch-1 graphs, and native_batch), of jaxonnxruntime
and of onnxruntime (fixed batch 1, image by image), and each max |difference|
from onnxruntime.  Then incremental occlusion inference on fsanet-1x1 (ms for
128 occluded copies, dense vs incremental, both batching modes), and operator
coverage: which operators of a torch-exported ResNet-18-style and
MobileFaceNet-style net (opset 17) each converter lacks.  Writes
bench_onnx.json.  --smoke: fsanet-1x1 only, 2 faces, 1 repeat, no incremental.

The logic is `cms_jax.bench.onnx_forward`.
"""
from absl import app, flags

from cms_jax.bench import onnx_forward

_OUT_DIR = flags.DEFINE_string("out_dir", None, "Folder for bench_onnx.json.")
_BATCH = flags.DEFINE_integer("batch", 64, "Faces per forward pass.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs after the warm-up (median reported).")
_SMOKE = flags.DEFINE_bool("smoke", False, "fsanet-1x1 only, 2 faces, 1 repeat, no incremental; seconds.")
flags.mark_flag_as_required("out_dir")


def main(argv):
    del argv
    cfg = onnx_forward.OnnxBenchConfig(batch=_BATCH.value, repeats=_REPEATS.value, smoke=_SMOKE.value)
    onnx_forward.run(cfg, _OUT_DIR.value)


if __name__ == "__main__":
    app.run(main)
