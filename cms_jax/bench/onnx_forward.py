"""ONNX -> JAX: `cms_jax.models.onnx_jax` against onnxruntime and jaxonnxruntime on the FSA-Net files.

For fsanet-1x1 and fsanet-var, on ``batch`` real CelebA faces (BGR, 64x64,
(x - 127.5) / 128): forward time (jit, after warm-up, median of ``repeats``) of
the converter (vmap over batch-1 graphs, and native_batch), of jaxonnxruntime
and of onnxruntime (fixed batch 1, image by image), and each max |difference|
from onnxruntime.  Then incremental occlusion inference (Eq. 1) on fsanet-1x1
(ms for 128 occluded copies, dense vs incremental, both batching modes), and
operator coverage (`cms_jax.bench.onnx_coverage`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import onnx

from cms_jax import occlusion as occ
from cms_jax.assets import resolve, sample_images
from cms_jax.bench.measure import median_ms
from cms_jax.bench.onnx_coverage import coverage, jaxort
from cms_jax.models import onnx_jax


@dataclasses.dataclass(frozen=True)
class OnnxBenchConfig:
    """The ONNX benchmark (the flags of ``experiments/bench_onnx.py``).

    ``smoke``: fsanet-1x1 only, 2 faces, 1 repeat, no incremental; seconds.
    """
    batch: int = 64     # faces per forward pass
    repeats: int = 5    # timed runs after the warm-up (median reported)
    smoke: bool = False


def faces(n: int) -> np.ndarray:
    """``n`` CelebA samples as FSA-Net reads them: BGR, 64x64, (x - 127.5) / 128, float32 NHWC."""
    folder = str(sample_images())
    files = sorted(os.listdir(folder))
    bgr = [cv2.resize(cv2.imread(os.path.join(folder, files[i % len(files)])), (64, 64)) for i in range(n)]
    return ((np.stack(bgr).astype(np.float32) - 127.5) / 128).astype(np.float32)


def forward(path: str, x: np.ndarray, repeats: int) -> dict:
    """Forward ms and max |difference| from onnxruntime of both converter modes and jaxonnxruntime."""
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def run_ort():
        return np.concatenate([sess.run(None, {name: xi[None]})[0].reshape(1, -1) for xi in nchw])

    ref = run_ort()
    res = {"onnxruntime_ms": median_ms(run_ort, repeats)}
    for mode, native in (("onnx_jax", False), ("onnx_jax_native_batch", True)):
        t = time.perf_counter()
        apply_fn, params, _ = onnx_jax.convert(path, native_batch=native)
        fn, xj = jax.jit(apply_fn), jnp.asarray(x)
        jax.block_until_ready(fn(params, xj))
        res[f"{mode}_convert_and_compile_s"] = round(time.perf_counter() - t, 1)
        res[f"{mode}_ms"] = median_ms(lambda: fn(params, xj), repeats)
        res[f"{mode}_max_abs_diff"] = float(np.abs(np.asarray(fn(params, xj)) - ref).max())
    call_onnx, why = jaxort()
    if call_onnx is None:
        res["jaxonnxruntime"] = why
        return res
    t = time.perf_counter()
    model_fn, model_params = call_onnx.call_onnx_model(onnx.load(path), [nchw])
    fn = jax.jit(model_fn)
    jax.block_until_ready(fn(model_params, [nchw]))
    res["jaxonnxruntime_convert_and_compile_s"] = round(time.perf_counter() - t, 1)
    res["jaxonnxruntime_ms"] = median_ms(lambda: fn(model_params, [nchw]), repeats)
    got = np.asarray(fn(model_params, [nchw])[0]).reshape(len(x), -1)
    res["jaxonnxruntime_max_abs_diff"] = float(np.abs(got - ref).max())
    return res


def incremental(path: str, imgs: np.ndarray, repeats: int) -> dict:
    """ms for 128 occluded copies (2 faces x 64 squares of 8 px): dense vs incremental, per batching mode."""
    from cms_jax.incremental import Incremental

    imgs = jnp.asarray(imgs[:2])
    xy = np.random.default_rng(0).uniform(0, 64, (64, 2))
    boxes = jnp.asarray(np.concatenate([occ.square_bounds(xy, 8, (64, 64))] * 2))
    idx = jnp.asarray(np.repeat(np.arange(2), 64).astype(np.int32))
    res = {}
    for mode, native in (("vmap", False), ("native_batch", True)):
        apply_fn, params, _ = onnx_jax.convert(path, native_batch=native)
        inc = Incremental(apply_fn, params, (64, 64, 3), 8)
        _, stack = jax.jit(inc.clean)(params, imgs)
        items = jax.jit(inc.items)
        dense = jax.jit(lambda p, i, b: apply_fn(p, occ.occlude_batch(imgs[i], b, 0.0)))
        res[mode] = {
            "windowed_layers": sum(how.startswith("win") for _, how in inc.plan), "layers": len(inc.plan),
            "dense_ms": median_ms(lambda: dense(params, idx, boxes), repeats),
            "incremental_ms": median_ms(lambda: items(params, stack, idx, boxes, jnp.float32(0)), repeats),
            "max_abs_diff": float(jnp.abs(items(params, stack, idx, boxes, jnp.float32(0))
                                          - dense(params, idx, boxes)).max())}
    return res


def run(cfg: OnnxBenchConfig, out_dir: str) -> dict:
    """Forward, incremental and coverage figures; prints and writes ``out_dir/bench_onnx.json``."""
    n, repeats = (2, 1) if cfg.smoke else (cfg.batch, cfg.repeats)
    imgs = faces(n)
    res = {"batch": n, "repeats": repeats, "cpus": os.cpu_count(), "backend": jax.default_backend(),
           "load_average": os.getloadavg()[0]}
    for name in ["fsanet_1x1"] + ([] if cfg.smoke else ["fsanet_var"]):
        res[name] = forward(str(resolve(name)), imgs, repeats)
        print(name, json.dumps(res[name]), flush=True)
    if not cfg.smoke:
        res["incremental_fsanet_1x1"] = incremental(str(resolve("fsanet_1x1")), imgs, repeats)
    res["coverage"] = coverage()
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "bench_onnx.json"), "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps(res, indent=2))
    return res
