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
"""
import json
import os
import statistics
import tempfile
import time

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import onnx
from absl import app, flags

from cms_jax import occlusion as occ
from cms_jax.assets import resolve, resolve_dir
from cms_jax.models import onnx_jax

_OUT_DIR = flags.DEFINE_string("out_dir", None, "Folder for bench_onnx.json.")
_BATCH = flags.DEFINE_integer("batch", 64, "Faces per forward pass.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs after the warm-up (median reported).")
_SMOKE = flags.DEFINE_bool("smoke", False, "fsanet-1x1 only, 2 faces, 1 repeat, no incremental; seconds.")
flags.mark_flag_as_required("out_dir")


def _median_ms(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # warm-up (and compilation)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return round(1000 * statistics.median(times), 1)


def _faces(n: int) -> np.ndarray:
    folder = os.path.join(resolve_dir("celeba_samples"), "images")
    files = sorted(os.listdir(folder))
    bgr = [cv2.resize(cv2.imread(os.path.join(folder, files[i % len(files)])), (64, 64)) for i in range(n)]
    return ((np.stack(bgr).astype(np.float32) - 127.5) / 128).astype(np.float32)


def _jaxort():
    """jaxonnxruntime's ``call_onnx`` module, or the reason it is not there."""
    try:
        from jaxonnxruntime import call_onnx
        from jaxonnxruntime.config_class import config
    except ImportError:
        return None, "n/a: not installed"
    # The FSA-Net Reshape targets come from Shape: refused under the default setting.
    config.update("jaxort_only_allow_initializers_as_static_args", False)
    return call_onnx, None


def _forward(path: str, x: np.ndarray, repeats: int) -> dict:
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def run_ort():
        return np.concatenate([sess.run(None, {name: xi[None]})[0].reshape(1, -1) for xi in nchw])

    ref = run_ort()
    res = {"onnxruntime_ms": _median_ms(run_ort, repeats)}
    for mode, native in (("onnx_jax", False), ("onnx_jax_native_batch", True)):
        t = time.perf_counter()
        apply_fn, params, _ = onnx_jax.convert(path, native_batch=native)
        fn, xj = jax.jit(apply_fn), jnp.asarray(x)
        jax.block_until_ready(fn(params, xj))
        res[f"{mode}_convert_and_compile_s"] = round(time.perf_counter() - t, 1)
        res[f"{mode}_ms"] = _median_ms(lambda: fn(params, xj), repeats)
        res[f"{mode}_max_abs_diff"] = float(np.abs(np.asarray(fn(params, xj)) - ref).max())
    call_onnx, why = _jaxort()
    if call_onnx is None:
        res["jaxonnxruntime"] = why
        return res
    t = time.perf_counter()
    model_fn, model_params = call_onnx.call_onnx_model(onnx.load(path), [nchw])
    fn = jax.jit(model_fn)
    jax.block_until_ready(fn(model_params, [nchw]))
    res["jaxonnxruntime_convert_and_compile_s"] = round(time.perf_counter() - t, 1)
    res["jaxonnxruntime_ms"] = _median_ms(lambda: fn(model_params, [nchw]), repeats)
    got = np.asarray(fn(model_params, [nchw])[0]).reshape(len(x), -1)
    res["jaxonnxruntime_max_abs_diff"] = float(np.abs(got - ref).max())
    return res


def _incremental(path: str, faces: np.ndarray, repeats: int) -> dict:
    """ms for 128 occluded copies (2 faces x 64 squares of 8 px): dense vs incremental, per batching mode."""
    from cms_jax.incremental import Incremental

    imgs = jnp.asarray(faces[:2])
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
            "dense_ms": _median_ms(lambda: dense(params, idx, boxes), repeats),
            "incremental_ms": _median_ms(lambda: items(params, stack, idx, boxes, jnp.float32(0)), repeats),
            "max_abs_diff": float(jnp.abs(items(params, stack, idx, boxes, jnp.float32(0))
                                          - dense(params, idx, boxes)).max())}
    return res


def _torch_models():
    """A ResNet-18-style and a MobileFaceNet-style torch net (random weights, eval mode)."""
    import torch
    from torch import nn

    def cbr(cin, cout, k, s, groups=1, act=nn.ReLU):
        return [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)] + (
            [act(cout) if act is nn.PReLU else act()] if act else [])

    class Res(nn.Module):
        def __init__(self, cin, cout, s):
            super().__init__()
            self.body = nn.Sequential(*cbr(cin, cout, 3, s), *cbr(cout, cout, 3, 1, act=None))
            self.short = nn.Sequential(*cbr(cin, cout, 1, s, act=None)) if s > 1 else nn.Identity()

        def forward(self, x):
            return torch.relu(self.body(x) + self.short(x))

    resnet = nn.Sequential(*cbr(3, 8, 7, 2), nn.MaxPool2d(3, 2, 1), Res(8, 8, 1), Res(8, 16, 2),
                           nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))

    class Embed(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(*cbr(3, 16, 3, 2, act=nn.PReLU), *cbr(16, 16, 3, 1, 16, nn.PReLU),
                                      *cbr(16, 32, 1, 1, act=nn.PReLU), *cbr(32, 32, 3, 2, 32, nn.PReLU),
                                      *cbr(32, 16, 1, 1, act=None), nn.Conv2d(16, 16, 28, groups=16), nn.Flatten(),
                                      nn.Linear(16, 128))

        def forward(self, x):
            return nn.functional.normalize(self.body(x), dim=1)

    return {"resnet18_style": (resnet.eval(), 48), "mobilefacenet_style": (Embed().eval(), 112)}


def _coverage() -> dict:
    """Operators of torch exports (opset 17) that each converter lacks, and the difference of the op tables."""
    try:
        import torch
    except ImportError:
        return {"skipped": "torch not installed"}
    from cms_jax.models.onnx_ops import OPS

    call_onnx, why = _jaxort()
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model, size) in _torch_models().items():
            path = os.path.join(tmp, f"{name}.onnx")
            with torch.no_grad():
                torch.onnx.export(model, torch.zeros(1, 3, size, size), path, opset_version=17, dynamo=False)
            m = onnx.load(path)
            res[name] = {"ops": sorted({n.op_type for n in m.graph.node}),
                         "onnx_jax_lacks": onnx_jax.unsupported_ops(path)}
            if call_onnx is not None:
                have = call_onnx._get_all_handlers(m.opset_import).get("", {})
                res[name]["jaxonnxruntime_lacks"] = sorted({n.op_type for n in m.graph.node} - set(have))
    if call_onnx is not None:
        have = set(call_onnx._get_all_handlers([onnx.helper.make_opsetid("", 17)]).get("", {}))
        res["opset17_in_onnx_jax_not_jaxonnxruntime"] = sorted(set(OPS) - have)
        res["opset17_in_jaxonnxruntime_not_onnx_jax"] = sorted(have - set(OPS))
    else:
        res["jaxonnxruntime"] = why
    return res


def main(argv):
    del argv
    smoke = _SMOKE.value
    n, repeats = (2, 1) if smoke else (_BATCH.value, _REPEATS.value)
    faces = _faces(n)
    res = {"batch": n, "repeats": repeats, "cpus": os.cpu_count(), "backend": jax.default_backend(),
           "load_average": os.getloadavg()[0]}
    for name in ["fsanet_1x1"] + ([] if smoke else ["fsanet_var"]):
        res[name] = _forward(str(resolve(name)), faces, repeats)
        print(name, json.dumps(res[name]), flush=True)
    if not smoke:
        res["incremental_fsanet_1x1"] = _incremental(str(resolve("fsanet_1x1")), faces, repeats)
    res["coverage"] = _coverage()
    os.makedirs(_OUT_DIR.value, exist_ok=True)
    with open(os.path.join(_OUT_DIR.value, "bench_onnx.json"), "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    app.run(main)
