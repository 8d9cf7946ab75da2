"""Engine overhead: occlusion work items/s vs bare forward passes/s at the same batch.

For a VGG-16-shaped model at 224 px (random weights) and a tiny model, this
times (a) the bare jitted model on a device-resident, batch-sharded input and
(b) :class:`cms_jax.engine.OcclusionEngine` scoring the same number of work
items (gather + occlusion mask + model + confidence, plus its clean pass), and
reports their ratio (target >= 0.9).  Compile time is excluded (warm-up runs);
the two are timed in interleaved repeats and the best of each is kept.

Reproduce (2-core CPU: VGG-16 at 224 runs at a few images/s, so a few batches):
  python experiments/bench_engine.py --out_dir=/tmp/bench_engine
Seconds-long check:
  python experiments/bench_engine.py --smoke --out_dir=/tmp/bench_engine
"""
from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from cms_jax import sharding as shd
from cms_jax.engine import OcclusionEngine

_OUT_DIR = flags.DEFINE_string("out_dir", None, "Folder for bench_engine.json.", required=True)
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny sizes: runs in seconds (tests).")
_VGG_BATCH = flags.DEFINE_integer("vgg_batch", 8, "Work items per device batch for VGG-16.")
_VGG_BATCHES = flags.DEFINE_integer("vgg_batches", 4, "Timed batches for VGG-16.")
_TINY_BATCH = flags.DEFINE_integer("tiny_batch", 256, "Work items per device batch for the tiny model.")
_TINY_BATCHES = flags.DEFINE_integer("tiny_batches", 32, "Timed batches for the tiny model.")
_VGG_REPEATS = flags.DEFINE_integer("vgg_repeats", 2, "Interleaved timing repeats for VGG-16 (best kept).")
_TINY_REPEATS = flags.DEFINE_integer("tiny_repeats", 5, "Interleaved timing repeats for the tiny model.")


def _conv(x, w, stride=1):
    return jax.lax.conv_general_dilated(x, w, (stride, stride), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _pool(x):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def vgg16(input_hw=224, widths=(64, 128, 256, 512, 512), fc=4096, classes=2, seed=0):
    """A VGG-16-shaped model (13 3x3 convs, 5 pools, 3 dense) with random He weights."""
    rng = np.random.default_rng(seed)
    he = lambda *s: (rng.standard_normal(s, np.float32) * np.sqrt(2.0 / np.prod(s[:-1]))).astype(np.float32)
    convs, c_in = [], 3
    for width, n in zip(widths, (2, 2, 3, 3, 3)):
        block = []
        for _ in range(n):
            block.append((he(3, 3, c_in, width), np.zeros(width, np.float32)))
            c_in = width
        convs.append(block)
    flat = (input_hw // 32) ** 2 * c_in
    dense = [(he(flat, fc), np.zeros(fc, np.float32)), (he(fc, fc), np.zeros(fc, np.float32)),
             (he(fc, classes), np.zeros(classes, np.float32))]
    params = {"convs": convs, "dense": dense}

    def apply_fn(p, x):
        for block in p["convs"]:
            for w, b in block:
                x = jax.nn.relu(_conv(x, w) + b)
            x = _pool(x)
        x = x.reshape(x.shape[0], -1)
        for i, (w, b) in enumerate(p["dense"]):
            x = x @ w + b
            x = jax.nn.relu(x) if i < 2 else x
        return x
    return apply_fn, params, (input_hw, input_hw, 3)


def tiny(input_hw=64, seed=0):
    """The tiny test model: two strided convs and a dense head on a 64x64 grey input."""
    rng = np.random.default_rng(seed)
    params = {"c1": rng.normal(0, 0.3, (3, 3, 1, 8)).astype(np.float32),
              "c2": rng.normal(0, 0.3, (3, 3, 8, 16)).astype(np.float32),
              "d": rng.normal(0, 0.3, (16, 2)).astype(np.float32)}

    def apply_fn(p, x):
        x = jax.nn.relu(_conv(x, p["c1"], 2))
        x = jax.nn.relu(_conv(x, p["c2"], 2))
        return x.mean(axis=(1, 2)) @ p["d"]
    return apply_fn, params, (input_hw, input_hw, 1)


def bench(apply_fn, params, shape, batch, batches, images, repeats):
    """Times bare forwards and engine work items; returns a dict of figures."""
    mesh = shd.data_mesh()
    batch = shd.round_up(batch, shd.num_shards(mesh))
    model = type("M", (), {"apply_fn": staticmethod(apply_fn), "params": params})()
    rng = np.random.default_rng(0)
    p_dev = shd.replicate(params, mesh)
    bare = jax.jit(apply_fn, in_shardings=(shd.replicated(mesh), shd.data_sharding(mesh)),
                   out_shardings=shd.data_sharding(mesh))
    x = jax.device_put(rng.normal(size=(batch,) + shape).astype(np.float32), shd.data_sharding(mesh))
    jax.block_until_ready(bare(p_dev, x))  # compile

    items = batches * batch  # same forward work: `images` images x (items / images) vertices
    verts = items // images
    imgs = rng.normal(size=(images,) + shape).astype(np.float32)
    xy = rng.uniform(0, shape[1], size=(images, verts, 2))
    eng = OcclusionEngine(model, batch_size=batch, images_per_group=images, mesh=mesh)
    eng.run(imgs, xy)  # compile the clean-pass and work-batch shapes
    traces = eng.trace_count
    # Interleaved repeats, best of each: the machine may be shared, and load
    # only ever slows a run down.
    bare_t, eng_t = np.inf, np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready([bare(p_dev, x) for _ in range(batches)])
        bare_t = min(bare_t, time.perf_counter() - t)
        t = time.perf_counter()
        eng.run(imgs, xy)
        eng_t = min(eng_t, time.perf_counter() - t)
    bare_rate, eng_rate = batches * batch / bare_t, images * verts / eng_t
    return {"batch_size": batch, "input_shape": list(shape), "work_items": images * verts,
            "images": images, "bare_forwards_per_s": bare_rate, "engine_items_per_s": eng_rate,
            "ratio": eng_rate / bare_rate, "repeats": repeats,
            "retraces_after_warmup": eng.trace_count - traces}


def main(argv):
    del argv
    smoke = _SMOKE.value
    vgg = vgg16(32, (4, 8, 8, 16, 16), 32) if smoke else vgg16()
    runs = {
        "vgg16": (vgg, _VGG_BATCH.value, 2 if smoke else _VGG_BATCHES.value, 1, _VGG_REPEATS.value),
        "tiny": (tiny(), 64 if smoke else _TINY_BATCH.value, 2 if smoke else _TINY_BATCHES.value, 8,
                 _TINY_REPEATS.value),
    }
    report = {"devices": jax.device_count(), "platform": jax.devices()[0].platform, "smoke": smoke,
              "command": " ".join([os.path.basename(sys.executable)] + sys.argv), "models": {}}
    for name, ((fn, params, shape), batch, batches, images, repeats) in runs.items():
        r = bench(fn, params, shape, batch, batches, images, 1 if smoke else repeats)
        report["models"][name] = r
        print(f"{name:7s} input {shape} batch {r['batch_size']}: bare {r['bare_forwards_per_s']:.1f} fwd/s, "
              f"engine {r['engine_items_per_s']:.1f} items/s, ratio {r['ratio']:.3f}", flush=True)
    os.makedirs(_OUT_DIR.value, exist_ok=True)
    with open(os.path.join(_OUT_DIR.value, "bench_engine.json"), "w") as fh:
        json.dump(report, fh, indent=2)


if __name__ == "__main__":
    app.run(main)
