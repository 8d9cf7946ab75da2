"""Engine overhead: occlusion work items/s (Eq. 1) vs bare forward passes/s at the same batch.

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
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from cms_jax import sharding as shd
from cms_jax.bench.measure import xla_flops
from cms_jax.engine import OcclusionEngine
from cms_jax.models import vgg


@dataclasses.dataclass(frozen=True)
class EngineBenchConfig:
    """Sizes of the engine benchmark (the flags of ``experiments/bench_engine.py``).

    ``smoke``: the tiny VGG twin, 2 batches each (64 items for the tiny model), one repeat.
    """
    vgg_batch: int = 8           # work items per device batch for VGG-16
    vgg_batches: int = 4         # timed batches for VGG-16
    tiny_batch: int = 256        # work items per device batch for the tiny model
    tiny_batches: int = 32       # timed batches for the tiny model
    vgg_repeats: int = 2         # interleaved timing repeats for VGG-16 (best kept)
    tiny_repeats: int = 5        # interleaved timing repeats for the tiny model
    smoke: bool = False


def _conv(x, w, stride=1):
    return jax.lax.conv_general_dilated(x, w, (stride, stride), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def vgg16(config: vgg.VGGConfig):
    """The package's VGG-16 (`cms_jax.models.vgg`) with random weights: (apply_fn, params, input shape)."""
    model = vgg.vgg_face_model(vgg.init_vgg(config), config)
    return model.apply_fn, model.params, (*config.input_size, config.in_channels)


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


def engine_flops(eng: OcclusionEngine, shape, images: int, items: int) -> tuple[float, float]:
    """(FLOPs of one work batch, FLOPs of the whole run) of a dense engine, from XLA's cost analysis.

    A run is one clean pass per image block (a step over the block's copies with empty squares)
    and ``ceil(items / batch)`` work batches.
    """
    f = eng.strategy
    params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), f._params)
    block, b = f.block_size(eng.block, shape, 1), eng.batch_size
    slab = jax.ShapeDtypeStruct((block,) + tuple(shape), jnp.float32)

    def step(n):
        i32 = jax.ShapeDtypeStruct((n,), jnp.int32)
        return xla_flops(f._step.lower(params, slab, i32, jax.ShapeDtypeStruct((n, 4), jnp.int32), i32,
                                       jax.ShapeDtypeStruct((), jnp.float32)))

    batch = step(b)
    return batch, -(-images // block) * step(block) + -(-items // b) * batch


def bench_model(apply_fn, params, shape, batch, batches, images, repeats) -> dict:
    """Times bare forwards and engine work items of one model; returns a dict of figures."""
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
    eng = OcclusionEngine(model, batch_size=batch, images_per_block=images, mesh=mesh)
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
    retraces = eng.trace_count - traces  # before the cost analysis below, which traces again
    bare_flops = xla_flops(bare.lower(p_dev, x)) / batch
    batch_flops, run_flops = engine_flops(eng, shape, images, images * verts)
    return {"batch_size": batch, "input_shape": list(shape), "work_items": images * verts,
            "images": images, "bare_forwards_per_s": bare_rate, "engine_items_per_s": eng_rate,
            "ratio": eng_rate / bare_rate, "repeats": repeats,
            "retraces_after_warmup": retraces,
            "bare_flops_per_forward": bare_flops, "engine_flops_per_item": batch_flops / batch,
            "flop_ratio": bare_flops * batch / batch_flops,
            "flop_ratio_with_clean_pass": bare_flops * images * verts / run_flops}


def run(cfg: EngineBenchConfig, out_dir: str) -> dict:
    """Benchmark VGG-16 and the tiny model, print a line each, write ``out_dir/bench_engine.json``."""
    smoke = cfg.smoke
    vgg16_model = vgg16(vgg.TINY if smoke else vgg.VGGConfig(num_classes=2))
    runs = {
        "vgg16": (vgg16_model, cfg.vgg_batch, 2 if smoke else cfg.vgg_batches, 1, cfg.vgg_repeats),
        "tiny": (tiny(), 64 if smoke else cfg.tiny_batch, 2 if smoke else cfg.tiny_batches, 8, cfg.tiny_repeats),
    }
    report = {"devices": jax.device_count(), "platform": jax.devices()[0].platform, "smoke": smoke,
              "command": " ".join([os.path.basename(sys.executable)] + sys.argv), "models": {}}
    for name, ((fn, params, shape), batch, batches, images, repeats) in runs.items():
        r = bench_model(fn, params, shape, batch, batches, images, 1 if smoke else repeats)
        report["models"][name] = r
        print(f"{name:7s} input {shape} batch {r['batch_size']}: bare {r['bare_forwards_per_s']:.1f} fwd/s, "
              f"engine {r['engine_items_per_s']:.1f} items/s, ratio {r['ratio']:.3f} "
              f"(FLOPs: {r['flop_ratio']:.3f} per item, {r['flop_ratio_with_clean_pass']:.3f} with the clean pass)",
              flush=True)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "bench_engine.json"), "w") as fh:
        json.dump(report, fh, indent=2)
    return report
