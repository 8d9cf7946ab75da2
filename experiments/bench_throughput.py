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
"""
import json
import os
import time

from absl import app, flags

import jax
import jax.numpy as jnp
import numpy as np

from cms_jax import models
from cms_jax.engine import OcclusionEngine
from cms_jax.figures.stats import pearson

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
_METHODS = flags.DEFINE_list("methods", ["dense_fp32", "dense_bf16", "incremental", "incremental_bf16",
                                         "torch_reference"], "Methods to run.")
flags.mark_flag_as_required("out_dir")


def matmul_rate(n, dtype):
    """Measured dense matmul FLOP/s of the default device (best of 3)."""
    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
    f(a, a).block_until_ready()
    best = min(_timed(lambda: f(a, a).block_until_ready()) for _ in range(3))
    return 2.0 * n ** 3 / best


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def time_round_robin(runners, faces, seconds, warm_vertices):
    """Times methods face by face in turn, so load from other processes hits them all alike.

    Each method first warms up (compiles) on a few vertices of face 0; a method
    stops once it has used ``seconds`` (after at least one face).

    Returns:
      ({method: per-face outputs}, {method: seconds timed}).
    """
    for name, run in runners.items():
        run((faces[0][0], faces[0][1][:warm_vertices[name]]))
    outs, secs = {k: [] for k in runners}, {k: 0.0 for k in runners}
    for face in faces:
        for name, run in runners.items():
            if secs[name] > seconds:
                continue
            t = time.perf_counter()
            outs[name].append(run(face))
            secs[name] += time.perf_counter() - t
    return outs, secs


JAX_METHODS = {"dense_fp32": ("dense", "float32"), "dense_bf16": ("dense", "bfloat16"),
               "incremental": ("incremental", "float32"), "incremental_bf16": ("incremental", "bfloat16")}


def engine(model, method, batch):
    """The occlusion engine of one JAX method (one face per call, squares of --patch_size)."""
    forward, dtype = JAX_METHODS[method]
    return OcclusionEngine(model, batch_size=batch, images_per_group=1, forward=forward, dtype=dtype,
                           patch_size=_PATCH.value)


def incremental_flops(eng, model, batch) -> float:
    """FLOPs of one occluded copy on the incremental path: XLA cost analysis of a lowered batch."""
    shape = (*model.input_size, model.channels)
    inc = eng.forward.plan(shape, _PATCH.value)[0]
    params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), eng.forward._params)
    dtype = eng.forward.dtype
    stack = jax.eval_shape(inc.clean, params, jax.ShapeDtypeStruct((1,) + shape, dtype))[1]
    cost = jax.jit(inc.items).lower(params, stack, jax.ShapeDtypeStruct((batch,), jnp.int32),
                                    jax.ShapeDtypeStruct((batch, 4), jnp.int32),
                                    jax.ShapeDtypeStruct((), dtype)).cost_analysis()
    return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"]) / batch


def torch_reference_drops(model, image, xy, patch_size, target, device):
    """The official procedure: one occluded copy per vertex, DataLoader batches of 16, softmax."""
    import torch

    class Occluded(torch.utils.data.Dataset):
        def __len__(self):
            return len(xy)

        def __getitem__(self, i):
            x, y = xy[i]
            x1, y1 = max(0, int(np.floor(x - patch_size / 2))), max(0, int(np.floor(y - patch_size / 2)))
            copy = image.copy()
            copy[y1:y1 + patch_size, x1:x1 + patch_size] = 0.0
            return torch.from_numpy(copy.transpose(2, 0, 1).copy())

    probs = []
    with torch.no_grad():
        clean = torch.softmax(model(torch.from_numpy(image.transpose(2, 0, 1).copy())[None].to(device)), 1)[0]
        target = int(torch.argmax(clean)) if target is None else target
        clean = clean[target]
        for batch in torch.utils.data.DataLoader(Occluded(), batch_size=16, shuffle=False):
            probs.append(torch.softmax(model(batch.to(device)), 1)[:, target].cpu())
    return (clean.cpu() - torch.cat(probs)).numpy()


def bench_vgg(model, faces, results):
    """Times every method on the same faces; fills ``results['vgg']``."""
    v, sz, h = _VERTICES.value, _PATCH.value, model.input_size[0]
    row = {"model": f"vgg16_{h}px" if model.name != "tiny" else f"tiny_vgg_{h}px", "vertices": v,
           "patch_size": sz, "dense_flops_per_pass": models.flops(model), "passes_per_s": {}, "faces_per_s": {}}
    targets, runners, counts = {}, {}, {}
    for name in _METHODS.value:
        if name in JAX_METHODS:
            eng = engine(model, name, _CHUNK.value)
            if name.startswith("incremental") and "incremental_flops_per_pass" not in row:
                row["incremental_flops_per_pass"] = incremental_flops(eng, model, eng.batch_size)

            def run(f, eng=eng):
                t = targets.get(id(f[0]))
                res = eng.run(f[0][None], f[1], targets=None if t is None else [t])
                targets.setdefault(id(f[0]), int(res.targets[0]))  # every method scores the class JAX picked first
                return res.drops[0]
            runners[name], counts[name] = run, (min(v, _CHUNK.value), v)
        elif name == "torch_reference":
            import torch

            tv = _TORCH_VERTICES.value or v
            from converters.torchvision_vgg import to_torch

            tmodel = to_torch(model.params).to(_TORCH_DEVICE.value)
            runners[name] = lambda f: torch_reference_drops(  # noqa: E731
                tmodel, f[0], f[1][:tv], sz, targets.get(id(f[0])), _TORCH_DEVICE.value)
            counts[name] = (16, tv)
            row["torch_threads"] = torch.get_num_threads()
        else:
            raise ValueError(f"--methods: unknown method {name!r} (known: {', '.join(JAX_METHODS)}, torch_reference)")
    row.setdefault("incremental_flops_per_pass", row["dense_flops_per_pass"])
    drops, secs = time_round_robin(runners, faces, _SECONDS.value, {k: c[0] for k, c in counts.items()})
    for name in runners:
        n, passes = len(drops[name]), len(drops[name]) * (counts[name][1] + 1)
        row["passes_per_s"][name] = passes / secs[name]
        row["faces_per_s"][name] = n / secs[name]
        print(f"  {name:<17} {passes / secs[name]:9.2f} passes/s  ({n} faces in {secs[name]:.1f} s)", flush=True)
    ref = drops.get("dense_fp32") or drops.get("incremental")
    if ref is not None:
        row["max_abs_drop_diff_vs_fp32"] = {
            k: float(max(np.abs(a[:len(b)] - b[:len(a)]).max() for a, b in zip(ref, d))) for k, d in drops.items()}
        row["pearson_vs_fp32"] = {k: float(np.mean([pearson(a[:len(b)], b[:len(a)]) for a, b in zip(ref, d)]))
                                  for k, d in drops.items()}
    results["vgg"] = row


def bench_small(name, v, results):
    """Engine throughput (dense and incremental, fp32 and bf16) of a real small model."""
    try:
        model = models.load(name)
    except Exception as err:  # noqa: BLE001 -- any failure is reported, the benchmark goes on
        print(f"  {name}: skipped ({type(err).__name__}: {err})")
        results["small_models"][name] = {"skipped": f"{type(err).__name__}: {err}"}
        return
    h, w = model.input_size
    rng = np.random.default_rng(0)
    image = rng.standard_normal((1, h, w, model.channels)).astype(np.float32)
    xy = rng.uniform(0, min(h, w), (v, 2))
    row = {"input_size": [h, w], "vertices": v, "passes_per_s": {},
           "torch_reference": "n/a: no torch port of this model"}
    try:
        row["flops_per_pass"] = models.flops(model)
    except Exception as err:  # noqa: BLE001
        row["flops_per_pass"] = None
        print(f"  {name}: FLOPs unknown ({type(err).__name__}: {err})")
    for label in [m for m in _METHODS.value if m in JAX_METHODS]:
        try:
            eng = engine(model, label, _CHUNK.value)
            eng.run(image, xy)
            secs = min(_timed(lambda: eng.run(image, xy)) for _ in range(3))
            row["passes_per_s"][label] = (v + 1) / secs
            fl = row["flops_per_pass"]
            achieved = f", {(v + 1) / secs * fl / 1e12:.4f} TFLOP/s dense-equivalent" if fl else ""
            print(f"  {name:<10} {label:<17} {(v + 1) / secs:9.1f} passes/s{achieved}", flush=True)
        except Exception as err:  # noqa: BLE001
            row["passes_per_s"][label] = None
            row[f"{label}_error"] = f"{type(err).__name__}: {str(err)[:200]}"
            print(f"  {name:<10} {label:<17} failed: {row[f'{label}_error']}")
    results["small_models"][name] = row


def fidelity_real_faces(name, n_faces, results):
    """Pearson of dense bf16 vs fp32 drops of a real model on real faces (UTKFace chips, 4 px grid)."""
    try:
        import cv2

        from cms_jax.assets import resolve_dir

        model = models.load(name)
        paths = sorted(resolve_dir("utkface").glob("*.jpg"))[:n_faces]
    except Exception as err:  # noqa: BLE001 -- reported, the benchmark goes on
        print(f"  fidelity on {name}: skipped ({type(err).__name__}: {err})")
        results["bf16_fidelity_real"] = {"skipped": f"{type(err).__name__}: {err}"}
        return
    h, w = model.input_size
    gy, gx = np.mgrid[2:h:4, 2:w:4]
    xy = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)
    fp32, bf16 = engine(model, "dense_fp32", 256), engine(model, "dense_bf16", 256)
    corrs = []
    for path in paths:
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        pad = int(0.4 * rgb.shape[0])  # loose crop: the model was trained with context around the face
        rgb = cv2.resize(cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE), (w, h),
                         interpolation=cv2.INTER_AREA)
        image = model.preprocess(rgb[None])
        ref = fp32.run(image, xy)
        got = bf16.run(image, xy, targets=ref.targets)
        corrs.append(pearson(ref.drops, got.drops))
    results["bf16_fidelity_real"] = {"model": name, "faces": len(corrs), "vertices": len(xy),
                                     "pearson_mean": float(np.mean(corrs)), "pearson_min": float(np.min(corrs))}
    print(f"  bf16 vs fp32 drops, {name}, {len(corrs)} UTKFace faces x {len(xy)} squares: "
          f"Pearson mean {np.mean(corrs):.5f}, min {np.min(corrs):.5f}")


def main(argv):
    del argv
    smoke = _SMOKE.value
    model = models.load("tiny" if smoke else "vgg_face_random")
    if smoke:
        flags.FLAGS.vertices, flags.FLAGS.faces = min(_VERTICES.value, 8), 1
    dev = jax.devices()[0]
    n = 256 if smoke else (2048 if dev.platform == "cpu" else 8192)
    results = {"device": {"kind": dev.device_kind, "platform": dev.platform, "count": jax.device_count()},
               "matmul_flops_per_s": matmul_rate(n, jnp.float32),
               "matmul_bf16_flops_per_s": matmul_rate(n, jnp.bfloat16), "small_models": {}}
    print(f"device {dev.device_kind} x{jax.device_count()}: matmul fp32 {results['matmul_flops_per_s'] / 1e12:.2f} "
          f"TFLOP/s, bf16 {results['matmul_bf16_flops_per_s'] / 1e12:.2f} TFLOP/s")
    rng = np.random.default_rng(0)
    hgt, wid = model.input_size
    faces = [(rng.standard_normal((hgt, wid, 3)).astype(np.float32),
              rng.uniform([0.15 * wid, 0.1 * hgt], [0.85 * wid, 0.9 * hgt], (_VERTICES.value, 2)).astype(np.float32))
             for _ in range(max(1, _FACES.value))]
    print(f"{model.name} (VGG-16 shape) at {hgt}px, {_VERTICES.value} vertices, {_PATCH.value}px squares:")
    bench_vgg(model, faces, results)
    results["model"] = results["vgg"]["model"]
    for name in ([] if smoke else _SMALL.value):
        bench_small(name, min(_VERTICES.value, 64) if dev.platform == "cpu" else _VERTICES.value, results)
    if not smoke and _FIDELITY.value > 0:
        fidelity_real_faces(_FIDELITY_MODEL.value, _FIDELITY.value, results)
    row = results["vgg"]
    for key in (*JAX_METHODS, "torch_reference"):
        results[key] = row["passes_per_s"].get(key)  # top-level passes/s, as the issue asks
    row["faces_per_s_at_468_vertices"] = {k: r / 469 for k, r in row["passes_per_s"].items()}
    print_table(results)
    os.makedirs(_OUT_DIR.value, exist_ok=True)
    path = os.path.join(_OUT_DIR.value, "bench_throughput.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {path}")


def print_table(results):
    row = results["vgg"]
    pps = row["passes_per_s"]
    torch_pps = pps.get("torch_reference")
    print(f"\n{'method':<17} {'passes/s':>9} {'faces/s@468':>11} {'xTorch':>7} {'eff TFLOP/s':>11} {'%matmul':>8}")
    for name, rate in pps.items():
        flops = row["incremental_flops_per_pass" if name.startswith("incremental") else "dense_flops_per_pass"]
        peak = results["matmul_bf16_flops_per_s" if name.endswith("bf16") else "matmul_flops_per_s"]
        ratio = f"{rate / torch_pps:7.2f}" if torch_pps else "      -"
        print(f"{name:<17} {rate:9.2f} {rate / 469:11.3f} {ratio} {rate * row['dense_flops_per_pass'] / 1e12:11.3f} "
              f"{100 * rate * flops / peak:7.1f}%")
    print("(eff TFLOP/s: dense-equivalent work; %matmul: FLOPs actually executed / measured matmul rate)")
    if "pearson_vs_fp32" in row:
        print("Pearson of drops vs fp32:", {k: round(v, 5) for k, v in row["pearson_vs_fp32"].items()})


if __name__ == "__main__":
    app.run(main)
