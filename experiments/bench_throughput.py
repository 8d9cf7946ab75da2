r"""Throughput of occlusion saliency (Eq. 1): dense fp32/bf16, incremental, and the paper's procedure.

For VGG-16 at 224 (``cms_jax.models.load("vgg_face_random")``: random weights,
FLOPs are what matter; the tiny twin with ``--smoke``) every method scores the
same faces (random images, ``--vertices`` square centres each, 15x15 squares)
through the one occlusion engine (``cms_jax.engine.OcclusionEngine``): dense
fp32, dense bf16, exact incremental fp32 and bf16 (``forward="incremental"``),
and the official code's way -- PyTorch, one occluded copy per vertex, batches
of 16 through a DataLoader -- on a torch VGG-16 holding the same weights (its
drops are checked against JAX's). Small real models (``--small_models``) get
the four engine paths. Achieved FLOP/s (XLA cost analysis of the dense forward
and of the incremental step) is set against the device's measured dense matmul
rate. Prints a table, writes ``<out_dir>/bench_throughput.json``.

Methods are timed face by face in turn (round robin), so load from other
processes slows them alike and the ratios stay meaningful on a shared machine.

Reproduce (CPU, 2 cores: 4-7 minutes depending on load):
  CMS_JAX_ASSETS=../shared python -m experiments.bench_throughput --out_dir=/tmp/bench_cpu \
      --vertices=64 --faces=3 --seconds_per_method=60
  (2026-11-28, 2 shared EPYC cores at load 7-12: passes/s dense fp32 1.82, dense bf16 1.84,
  incremental 13.8, incremental bf16 12.0, torch reference 1.82 -- incremental 7.6x dense and torch;
  measured with the former VGG-only incremental module, before the generic engine forward.)
  (2026-12-02, quiet machine, the engine's generic incremental forward, --faces=1 --small_models=
  --methods=dense_fp32,incremental,torch_reference: dense 4.26, incremental 29.6, torch 4.91
  passes/s -- incremental 6.96x dense, 6.04x torch; drops Pearson 1.0.)
Smoke (seconds): python -m experiments.bench_throughput --out_dir=/tmp/bench --smoke
GPU: python -m experiments.bench_throughput --out_dir=/tmp/bench_gpu --vertices=468 --faces=8 \
      --chunk=128 --torch_vertices=64 --seconds_per_method=30

The logic is `cms_jax.bench.throughput`.
"""
from absl import app, flags

from cms_jax.bench import throughput
from converters.torchvision_vgg import to_torch

_OUT_DIR = flags.DEFINE_string("out_dir", None, "Folder for bench_throughput.json.")
_SMOKE = flags.DEFINE_bool("smoke", False, "The tiny VGG twin at 32 px, a few vertices: runs in seconds.")
_VERTICES = flags.DEFINE_integer("vertices", 64, "Occluded copies per face (468 = MediaPipe mesh).")
_FACES = flags.DEFINE_integer("faces", 2, "Faces timed per method (at most; see --seconds_per_method).")
_SECONDS = flags.DEFINE_float("seconds_per_method", 30.0, "Stop timing a method after this many seconds.")
_PATCH = flags.DEFINE_integer("patch_size", 15, "Side of the occluding square, pixels.")
_CHUNK = flags.DEFINE_integer("chunk", 32, "Occluded copies per device batch (the engine's batch_size).")
_TORCH_VERTICES = flags.DEFINE_integer("torch_vertices", 0, "Vertices for the torch reference (0: --vertices).")
_TORCH_DEVICE = flags.DEFINE_string("torch_device", "cpu", "Device of the torch reference ('cpu' as the paper).")
_SMALL = flags.DEFINE_list("small_models", ["gender", "expression"], "cms_jax.models names (engine paths).")
_FIDELITY = flags.DEFINE_integer("fidelity_faces", 20, "Real faces for the bf16 fidelity check (0: skip).")
_FIDELITY_MODEL = flags.DEFINE_string("fidelity_model", "gender", "cms_jax.models name for the fidelity check.")
_METHODS = flags.DEFINE_list("methods", list(throughput.ThroughputConfig.methods), "Methods to run.")
flags.mark_flag_as_required("out_dir")


def main(argv):
    del argv
    cfg = throughput.ThroughputConfig(
        vertices=_VERTICES.value, faces=_FACES.value, seconds_per_method=_SECONDS.value, patch_size=_PATCH.value,
        chunk=_CHUNK.value, torch_vertices=_TORCH_VERTICES.value, torch_device=_TORCH_DEVICE.value,
        small_models=tuple(_SMALL.value), fidelity_faces=_FIDELITY.value, fidelity_model=_FIDELITY_MODEL.value,
        methods=tuple(_METHODS.value), smoke=_SMOKE.value)
    throughput.run(cfg, _OUT_DIR.value, torch_port=to_torch)


if __name__ == "__main__":
    app.run(main)
