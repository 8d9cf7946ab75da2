"""Throughput of occlusion saliency (Eq. 1): dense fp32/bf16, incremental, and the paper's procedure.

For VGG-16 at 224 (``cms_jax.models.load("vgg_face_random")``: random weights,
FLOPs are what matter; the tiny twin with ``smoke``) every method of
`cms_jax.bench.methods` scores the same faces (random images, ``vertices``
square centres each, 15x15 squares) through the one occlusion engine: dense
fp32, dense bf16, exact incremental fp32 and bf16, and the official code's way
-- PyTorch, one occluded copy per vertex, batches of 16 through a DataLoader --
on a torch VGG-16 holding the same weights (its drops are checked against
JAX's). Small real models (``small_models``) get the four engine paths.
Achieved FLOP/s (XLA cost analysis of the dense forward and of the incremental
step) is set against the device's measured dense matmul rate. Prints a table,
writes ``<out_dir>/bench_throughput.json``.

Methods are timed face by face in turn (round robin), so load from other
processes slows them alike and the ratios stay meaningful on a shared machine.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from cms_jax import models
from cms_jax.bench.measure import device_info, matmul_rate
from cms_jax.bench.methods import JAX_METHODS, engine, incremental_flops, torch_reference_drops
from cms_jax.bench.small_models import bench_small, fidelity_real_faces
from cms_jax.figures.stats import pearson


@dataclasses.dataclass(frozen=True)
class ThroughputConfig:
    """The throughput benchmark (the flags of ``experiments/bench_throughput.py``).

    ``smoke``: the tiny VGG twin at 32 px, at most 8 vertices, one face, no small models or
    fidelity check: seconds.
    """
    vertices: int = 64               # occluded copies per face (468 = MediaPipe mesh)
    faces: int = 2                   # faces timed per method (at most; see seconds_per_method)
    seconds_per_method: float = 30.0  # stop timing a method after this many seconds
    patch_size: int = 15             # side of the occluding square, pixels
    chunk: int = 32                  # occluded copies per device batch (the engine's batch_size)
    torch_vertices: int = 0          # vertices for the torch reference (0: vertices)
    torch_device: str = "cpu"        # device of the torch reference ('cpu' as the paper)
    small_models: tuple[str, ...] = ("gender", "expression")  # cms_jax.models names (engine paths)
    fidelity_faces: int = 20         # real faces for the bf16 fidelity check (0: skip)
    fidelity_model: str = "gender"   # cms_jax.models name for the fidelity check
    methods: tuple[str, ...] = ("dense_fp32", "dense_bf16", "incremental", "incremental_bf16", "torch_reference")
    smoke: bool = False


def time_round_robin(runners, faces, seconds, warm_vertices):
    """Times methods face by face in turn, so load from other processes hits them all alike.

    Each method first warms up (compiles) on a few vertices of face 0; a method
    stops once it has used ``seconds`` (after at least one face).

    Returns:
      ({method: per-face outputs}, {method: seconds timed}).
    """
    for name, run_face in runners.items():
        run_face((faces[0][0], faces[0][1][:warm_vertices[name]]))
    outs, secs = {k: [] for k in runners}, {k: 0.0 for k in runners}
    for face in faces:
        for name, run_face in runners.items():
            if secs[name] > seconds:
                continue
            t = time.perf_counter()
            outs[name].append(run_face(face))
            secs[name] += time.perf_counter() - t
    return outs, secs


def bench_vgg(model, faces, results, cfg: ThroughputConfig, torch_port=None) -> None:
    """Times every method of ``cfg.methods`` on the same faces; fills ``results['vgg']``.

    ``torch_port``: VGG-16 params -> torch module (`converters.torchvision_vgg.to_torch`; the package
    never imports ``converters/``), needed by the ``torch_reference`` method.
    """
    v, sz, h = cfg.vertices, cfg.patch_size, model.input_size[0]
    row = {"model": f"vgg16_{h}px" if model.name != "tiny" else f"tiny_vgg_{h}px", "vertices": v,
           "patch_size": sz, "dense_flops_per_pass": models.flops(model), "passes_per_s": {}, "faces_per_s": {}}
    targets, runners, counts = {}, {}, {}
    for name in cfg.methods:
        if name in JAX_METHODS:
            eng = engine(model, name, cfg.chunk, sz)
            if name.startswith("incremental") and "incremental_flops_per_pass" not in row:
                row["incremental_flops_per_pass"] = incremental_flops(eng, model, eng.batch_size, sz)

            def run_face(f, eng=eng):
                t = targets.get(id(f[0]))
                res = eng.run(f[0][None], f[1], targets=None if t is None else [t])
                targets.setdefault(id(f[0]), int(res.targets[0]))  # every method scores the class JAX picked first
                return res.drops[0]
            runners[name], counts[name] = run_face, (min(v, cfg.chunk), v)
        elif name == "torch_reference":
            import torch

            if torch_port is None:
                raise ValueError("the torch_reference method needs torch_port "
                                 "(converters.torchvision_vgg.to_torch)")
            tv, device = cfg.torch_vertices or v, cfg.torch_device
            tmodel = torch_port(model.params).to(device)
            runners[name] = lambda f: torch_reference_drops(  # noqa: E731
                tmodel, f[0], f[1][:tv], sz, targets.get(id(f[0])), device)
            counts[name] = (16, tv)
            row["torch_threads"] = torch.get_num_threads()
        else:
            raise ValueError(f"--methods: unknown method {name!r} (known: {', '.join(JAX_METHODS)}, torch_reference)")
    row.setdefault("incremental_flops_per_pass", row["dense_flops_per_pass"])
    drops, secs = time_round_robin(runners, faces, cfg.seconds_per_method, {k: c[0] for k, c in counts.items()})
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


def run(cfg: ThroughputConfig, out_dir: str, *, torch_port=None) -> dict:
    """Run the benchmark, print the table, write ``out_dir/bench_throughput.json``; returns its dict.

    ``torch_port``: see `bench_vgg`.
    """
    smoke = cfg.smoke
    model = models.load("tiny" if smoke else "vgg_face_random")
    if smoke:
        cfg = dataclasses.replace(cfg, vertices=min(cfg.vertices, 8), faces=1)
    dev = jax.devices()[0]
    n = 256 if smoke else (2048 if dev.platform == "cpu" else 8192)
    results = {"device": device_info(), "matmul_flops_per_s": matmul_rate(n, jnp.float32),
               "matmul_bf16_flops_per_s": matmul_rate(n, jnp.bfloat16), "small_models": {}}
    print(f"device {dev.device_kind} x{jax.device_count()}: matmul fp32 {results['matmul_flops_per_s'] / 1e12:.2f} "
          f"TFLOP/s, bf16 {results['matmul_bf16_flops_per_s'] / 1e12:.2f} TFLOP/s")
    rng = np.random.default_rng(0)
    hgt, wid = model.input_size
    faces = [(rng.standard_normal((hgt, wid, 3)).astype(np.float32),
              rng.uniform([0.15 * wid, 0.1 * hgt], [0.85 * wid, 0.9 * hgt], (cfg.vertices, 2)).astype(np.float32))
             for _ in range(max(1, cfg.faces))]
    print(f"{model.name} (VGG-16 shape) at {hgt}px, {cfg.vertices} vertices, {cfg.patch_size}px squares:")
    bench_vgg(model, faces, results, cfg, torch_port)
    results["model"] = results["vgg"]["model"]
    for name in ([] if smoke else cfg.small_models):
        bench_small(name, min(cfg.vertices, 64) if dev.platform == "cpu" else cfg.vertices, results,
                    cfg.methods, cfg.chunk, cfg.patch_size)
    if not smoke and cfg.fidelity_faces > 0:
        fidelity_real_faces(cfg.fidelity_model, cfg.fidelity_faces, results, cfg.patch_size)
    row = results["vgg"]
    for key in (*JAX_METHODS, "torch_reference"):
        results[key] = row["passes_per_s"].get(key)  # top-level passes/s, as the issue asks
    row["faces_per_s_at_468_vertices"] = {k: r / 469 for k, r in row["passes_per_s"].items()}
    print_table(results)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "bench_throughput.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {path}")
    return results


def print_table(results: dict) -> None:
    """passes/s, faces/s at 468 vertices, speed-up over torch and FLOP/s of every method."""
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
