r"""Throughput of occlusion saliency (Eq. 1): dense fp32/bf16, incremental, and the paper's procedure.

For VGG-16 at 224 (random weights: FLOPs are what matter) every method scores
the same faces (random images, ``--vertices`` square centres each, 15x15
squares): JAX dense fp32, dense bf16, exact incremental fp32 and bf16
(``cms_jax.incremental``), and the official code's way -- PyTorch, one occluded
copy per vertex, batches of 16 through a DataLoader -- on a torch VGG-16 holding
the same weights (its drops are checked against JAX's). Small real models
(``cms_jax.models.load``) get the dense paths. Achieved FLOP/s is set against
the device's measured dense matmul rate. Prints a table, writes
``<out_dir>/bench_throughput.json``.

Methods are timed face by face in turn (round robin), so load from other
processes slows them alike and the ratios stay meaningful on a shared machine.

Reproduce (CPU, 2 cores: 4-7 minutes depending on load):
  CMS_JAX_ASSETS=../shared python -m experiments.bench_throughput --out_dir=/tmp/bench_cpu \
      --vertices=64 --faces=3 --seconds_per_method=60
  (2026-11-28, 2 shared EPYC cores at load 7-12: passes/s dense fp32 1.82, dense bf16 1.84,
  incremental 13.8, incremental bf16 12.0, torch reference 1.82 -- incremental 7.6x dense and torch.)
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

from cms_jax import incremental as inc
from cms_jax.incremental_plan import VGG16, VGGArch, init_params, make_plan, plan_flops

_OUT_DIR = flags.DEFINE_string("out_dir", None, "Folder for bench_throughput.json.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny VGG at 32 px, a few vertices: runs in seconds.")
_VERTICES = flags.DEFINE_integer("vertices", 64, "Occluded copies per face (468 = MediaPipe mesh).")
_FACES = flags.DEFINE_integer("faces", 2, "Faces timed per method (at most; see --seconds_per_method).")
_SECONDS = flags.DEFINE_float("seconds_per_method", 30.0, "Stop timing a method after this many seconds.")
_PATCH = flags.DEFINE_integer("patch_size", 15, "Side of the occluding square, pixels.")
_CHUNK = flags.DEFINE_integer("chunk", 32, "Occluded copies per device call (JAX paths).")
_TORCH_VERTICES = flags.DEFINE_integer("torch_vertices", 0, "Vertices for the torch reference (0: --vertices).")
_TORCH_DEVICE = flags.DEFINE_string("torch_device", "cpu", "Device of the torch reference ('cpu' as the paper).")
_SMALL = flags.DEFINE_list("small_models", ["gender", "expression"], "cms_jax.models names, dense paths only.")
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


def torch_vgg(params, arch):
    """A torchvision-free torch VGG holding the same weights (NCHW; fc6 rows reordered C,H,W)."""
    import torch
    from torch import nn

    layers, cin = [], None
    for kind, name in arch.layers():
        if kind == "pool":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        k = np.asarray(params[name]["kernel"])
        conv = nn.Conv2d(k.shape[2], k.shape[3], 3, padding=1)
        conv.weight.data = torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1)))
        conv.bias.data = torch.from_numpy(np.asarray(params[name]["bias"]))
        layers += [conv, nn.ReLU(inplace=True)]
        cin = k.shape[3]
    layers.append(nn.Flatten())
    fh, fw = arch.feature_hw()
    fcs = sorted((n for n in params if n.startswith("fc")), key=lambda n: int(n[2:]))
    for j, name in enumerate(fcs):
        k = np.asarray(params[name]["kernel"])
        if j == 0:  # NHWC flatten (H,W,C) -> torch's (C,H,W)
            k = k.reshape(fh, fw, cin, -1).transpose(2, 0, 1, 3).reshape(k.shape[0], -1)
        lin = nn.Linear(*k.shape)
        lin.weight.data = torch.from_numpy(np.ascontiguousarray(k.T))
        lin.bias.data = torch.from_numpy(np.asarray(params[name]["bias"]))
        layers += [lin] + ([nn.ReLU(inplace=True)] if j < len(fcs) - 1 else [])
    return nn.Sequential(*layers).eval()


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


def bench_vgg(arch, params, faces, results, channels):
    """Times every method on the same faces; fills ``results['vgg']``."""
    v, sz = _VERTICES.value, _PATCH.value
    plan = make_plan(arch, sz)
    conv_inc, conv_dense = plan_flops(plan, channels)
    head = sum(2.0 * np.prod(np.shape(params[n]["kernel"])) for n in params if n.startswith("fc"))
    dense_flops, inc_flops = conv_dense + head, conv_inc + head
    row = {"model": f"vgg16_{arch.input_hw[0]}px" if arch.blocks == VGG16.blocks else f"tiny_vgg_{arch.input_hw[0]}px",
           "vertices": v, "patch_size": sz, "dense_flops_per_pass": dense_flops,
           "incremental_flops_per_pass": inc_flops, "passes_per_s": {}, "faces_per_s": {}}
    p32 = inc.replicate(jax.tree.map(jnp.asarray, params))
    p16 = inc.replicate(inc.cast_kernels(params, jnp.bfloat16))
    targets, runners, counts = {}, {}, {}
    jax_methods = {"dense_fp32": ("dense", p32, jnp.float32), "dense_bf16": ("dense", p16, jnp.bfloat16),
                   "incremental": ("incremental", p32, jnp.float32),
                   "incremental_bf16": ("incremental", p16, jnp.bfloat16)}
    for name in _METHODS.value:
        if name in jax_methods:
            method, p, dtype = jax_methods[name]

            def run(f, m=method, p=p, d=dtype):
                drops, t = inc.incremental_drops(p, arch, f[0], f[1], sz, targets.get(id(f[0])), method=m,
                                                 compute_dtype=d, chunk=_CHUNK.value)
                targets.setdefault(id(f[0]), t)  # every method scores the class fp32 JAX picked
                return drops
            runners[name], counts[name] = run, (min(v, _CHUNK.value), v)
        elif name == "torch_reference":
            import torch

            tv = _TORCH_VERTICES.value or v
            model = torch_vgg(params, arch).to(_TORCH_DEVICE.value)
            runners[name] = lambda f: torch_reference_drops(  # noqa: E731
                model, f[0], f[1][:tv], sz, targets.get(id(f[0])), _TORCH_DEVICE.value)
            counts[name] = (16, tv)
            row["torch_threads"] = torch.get_num_threads()
        else:
            raise ValueError(f"--methods: unknown method {name!r}")
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
        row["pearson_vs_fp32"] = {k: float(np.mean([inc.pearson(a[:len(b)], b[:len(a)]) for a, b in zip(ref, d)]))
                                  for k, d in drops.items()}
    results["vgg"] = row


def bench_small(name, v, results):
    """Dense fp32 / bf16 throughput of a real small model (not a VGG: no incremental path)."""
    try:
        from cms_jax.models import load

        model = load(name)
    except Exception as err:  # noqa: BLE001 -- any failure is reported, the benchmark goes on
        print(f"  {name}: skipped ({type(err).__name__}: {err})")
        results["small_models"][name] = {"skipped": f"{type(err).__name__}: {err}"}
        return
    h, w = model.input_size
    rng = np.random.default_rng(0)
    image = jnp.asarray(rng.standard_normal((h, w, model.channels)), jnp.float32)
    boxes = jnp.asarray(inc.patch_boxes(rng.uniform(0, min(h, w), (v, 2)), _PATCH.value, (h, w)))
    row = {"input_size": [h, w], "vertices": v, "passes_per_s": {},
           "incremental": "n/a: not a VGG-family conv/ReLU/max-pool stack",
           "torch_reference": "n/a: no torch port of this model"}
    try:
        from cms_jax.models import flops

        row["flops_per_pass"] = flops(model)
    except Exception as err:  # noqa: BLE001
        row["flops_per_pass"] = None
        print(f"  {name}: FLOPs unknown ({type(err).__name__}: {err})")
    for label, dtype in (("dense_fp32", jnp.float32), ("dense_bf16", jnp.bfloat16)):
        def scores(params, image, boxes, dtype=dtype):
            copies = jax.vmap(lambda b: inc._occlude(image, b, 0.0))(boxes)
            return model.apply_fn(params, copies.astype(dtype)).astype(jnp.float32)
        try:
            params = jax.tree.map(lambda a: jnp.asarray(a, dtype) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating)
                                  else a, model.params) if model.params else model.params
            f = jax.jit(scores) if model.jittable else scores
            f(params, image, boxes).block_until_ready()
            secs = min(_timed(lambda: f(params, image, boxes).block_until_ready()) for _ in range(3))
            row["passes_per_s"][label] = v / secs
            fl = row["flops_per_pass"]
            achieved = f", {v / secs * fl / 1e12:.4f} TFLOP/s" if fl else ""
            print(f"  {name:<10} {label:<11} {v / secs:9.1f} passes/s{achieved}", flush=True)
        except Exception as err:  # noqa: BLE001
            row["passes_per_s"][label] = None
            row[f"{label}_error"] = f"{type(err).__name__}: {str(err)[:200]}"
            print(f"  {name:<10} {label:<11} failed: {row[f'{label}_error']}")
    results["small_models"][name] = row


def fidelity_real_faces(name, n_faces, results):
    """Pearson of dense bf16 vs fp32 drops of a real model on real faces (UTKFace chips, 4 px grid)."""
    try:
        import cv2

        from cms_jax.assets import resolve_dir
        from cms_jax.models import load

        model = load(name)
        paths = sorted(resolve_dir("utkface").glob("*.jpg"))[:n_faces]
    except Exception as err:  # noqa: BLE001 -- reported, the benchmark goes on
        print(f"  fidelity on {name}: skipped ({type(err).__name__}: {err})")
        results["bf16_fidelity_real"] = {"skipped": f"{type(err).__name__}: {err}"}
        return
    h, w = model.input_size
    gy, gx = np.mgrid[2:h:4, 2:w:4]
    xy = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)
    boxes = jnp.asarray(inc.patch_boxes(xy, _PATCH.value, (h, w)))
    fns = {}
    for dtype in (jnp.float32, jnp.bfloat16):
        params = jax.tree.map(lambda a, d=dtype: jnp.asarray(a, d), model.params)
        fns[dtype] = (jax.jit(lambda p, im, b, d=dtype: model.apply_fn(
            p, jnp.concatenate([im[None], jax.vmap(lambda bb: inc._occlude(im, bb, 0.0))(b)]).astype(d))
            .astype(jnp.float32)), params)
    corrs = []
    for path in paths:
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        pad = int(0.4 * rgb.shape[0])  # loose crop: the model was trained with context around the face
        rgb = cv2.resize(cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE), (w, h),
                         interpolation=cv2.INTER_AREA)
        image = jnp.asarray(model.preprocess(rgb[None])[0])
        drops = {}
        for dtype, (f, params) in fns.items():
            s = np.asarray(f(params, image, boxes))
            s = s if model.outputs_are_probs else np.asarray(jax.nn.softmax(s, -1))
            t = drops.setdefault("target", int(np.argmax(s[0])))
            drops[dtype] = s[0, t] - s[1:, t]
        corrs.append(inc.pearson(drops[jnp.float32], drops[jnp.bfloat16]))
    results["bf16_fidelity_real"] = {"model": name, "faces": len(corrs), "vertices": len(xy),
                                     "pearson_mean": float(np.mean(corrs)), "pearson_min": float(np.min(corrs))}
    print(f"  bf16 vs fp32 drops, {name}, {len(corrs)} UTKFace faces x {len(xy)} squares: "
          f"Pearson mean {np.mean(corrs):.5f}, min {np.min(corrs):.5f}")


def main(argv):
    del argv
    smoke = _SMOKE.value
    if smoke:
        arch, widths = VGGArch((1, 1, 2, 2, 2), (32, 32)), (8, 16, 16, 32, 32)
        params = init_params(arch, channels=widths, fc=(64, 64), num_classes=10)
        flags.FLAGS.vertices, flags.FLAGS.faces = min(_VERTICES.value, 8), 1
    else:
        arch, widths = VGG16, (64, 128, 256, 512, 512)
        params = init_params(arch, channels=widths, num_classes=2622)
    dev = jax.devices()[0]
    n = 256 if smoke else (2048 if dev.platform == "cpu" else 8192)
    results = {"device": {"kind": dev.device_kind, "platform": dev.platform, "count": jax.device_count()},
               "matmul_flops_per_s": matmul_rate(n, jnp.float32),
               "matmul_bf16_flops_per_s": matmul_rate(n, jnp.bfloat16), "small_models": {}}
    print(f"device {dev.device_kind} x{jax.device_count()}: matmul fp32 {results['matmul_flops_per_s'] / 1e12:.2f} "
          f"TFLOP/s, bf16 {results['matmul_bf16_flops_per_s'] / 1e12:.2f} TFLOP/s")
    rng = np.random.default_rng(0)
    hgt, wid = arch.input_hw
    faces = [(rng.standard_normal((hgt, wid, 3)).astype(np.float32),
              rng.uniform([0.15 * wid, 0.1 * hgt], [0.85 * wid, 0.9 * hgt], (_VERTICES.value, 2)).astype(np.float32))
             for _ in range(max(1, _FACES.value))]
    channels, cin = {}, 3
    for b, nconv in enumerate(arch.blocks):
        for i in range(1, nconv + 1):
            channels[f"conv{b + 1}_{i}"], cin = (cin, widths[b]), widths[b]
    print(f"VGG {arch.blocks} at {hgt}px, {_VERTICES.value} vertices, {_PATCH.value}px squares:")
    bench_vgg(arch, params, faces, results, channels)
    results["model"] = results["vgg"]["model"]
    for name in ([] if smoke else _SMALL.value):
        bench_small(name, min(_VERTICES.value, 64) if dev.platform == "cpu" else _VERTICES.value, results)
    if not smoke and _FIDELITY.value > 0:
        fidelity_real_faces(_FIDELITY_MODEL.value, _FIDELITY.value, results)
    row = results["vgg"]
    for key in ("dense_fp32", "dense_bf16", "incremental", "incremental_bf16", "torch_reference"):
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
