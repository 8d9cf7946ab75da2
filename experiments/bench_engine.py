"""Engine overhead: occlusion work items/s vs bare forward passes/s at the same batch.

For a VGG-16-shaped model at 224 px (random weights) and a tiny model, this
times (a) the bare jitted model on a device-resident, batch-sharded input and
(b) :class:`cms_jax.engine.OcclusionEngine` scoring the same number of work
items (gather + occlusion mask + model + confidence, plus its clean pass), and
reports their ratio (target >= 0.9).  Compile time is excluded (warm-up runs);
the two are timed in interleaved repeats and the best of each is kept.

The timed ratio depends on the machine's load; the arithmetic does not. XLA's
cost analysis of the two compiled programs gives the FLOPs of a bare forward
and of one engine work item (gather + mask + forward + confidence), and their
ratio ``flop_ratio`` (the same >= 0.9 target, met whatever the load), beside
``flop_ratio_with_clean_pass``, which also counts the engine's clean pass.

Reproduce (2-core CPU: VGG-16 at 224 runs at a few images/s, so a few batches):
  python experiments/bench_engine.py --out_dir=/tmp/bench_engine
Seconds-long check:
  python experiments/bench_engine.py --smoke --out_dir=/tmp/bench_engine

The logic is `cms_jax.bench.engine`.
"""
from absl import app, flags

from cms_jax.bench import engine

_OUT_DIR = flags.DEFINE_string("out_dir", None, "Folder for bench_engine.json.", required=True)
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny sizes: runs in seconds (tests).")
_VGG_BATCH = flags.DEFINE_integer("vgg_batch", 8, "Work items per device batch for VGG-16.")
_VGG_BATCHES = flags.DEFINE_integer("vgg_batches", 4, "Timed batches for VGG-16.")
_TINY_BATCH = flags.DEFINE_integer("tiny_batch", 256, "Work items per device batch for the tiny model.")
_TINY_BATCHES = flags.DEFINE_integer("tiny_batches", 32, "Timed batches for the tiny model.")
_VGG_REPEATS = flags.DEFINE_integer("vgg_repeats", 2, "Interleaved timing repeats for VGG-16 (best kept).")
_TINY_REPEATS = flags.DEFINE_integer("tiny_repeats", 5, "Interleaved timing repeats for the tiny model.")


def main(argv):
    del argv
    cfg = engine.EngineBenchConfig(vgg_batch=_VGG_BATCH.value, vgg_batches=_VGG_BATCHES.value,
                                   tiny_batch=_TINY_BATCH.value, tiny_batches=_TINY_BATCHES.value,
                                   vgg_repeats=_VGG_REPEATS.value, tiny_repeats=_TINY_REPEATS.value,
                                   smoke=_SMOKE.value)
    engine.run(cfg, _OUT_DIR.value)


if __name__ == "__main__":
    app.run(main)
