"""Which runtime scores an ONNX model faster here: a short timed probe at the start of a run.

An ONNX model can run as a JAX function on the device (`models.onnx_jax`: sharded, incremental)
or as a host black box through onnxruntime (dense). Which is faster depends on the graph and
the machine, so with ``onnx_backend='auto'`` (the default) both are built and each scores the
same synthetic batch of occluded copies -- one random input, squares on a grid, the engine's
smallest batch size, so the JAX side compiles nothing the run will not use -- once to warm up
and twice timed (best kept). The faster one scores the run; ``summary.json["onnx_backend_probe"]``
records both rates (copies/s) and the choice, so a user never silently gets the slower one.

Measured with it (2-core CPU, jaxlib 0.10.2, onnxruntime 1.32): FSA-Net 1x1 JAX incremental
3,110 copies/s vs onnxruntime 1,194 (2.6x); a MobileFaceNet at 112 px 330 vs 96 (3.4x).
"""
from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from cms_jax import models
from cms_jax.scoring.backend import DropsBackend
from cms_jax.work_items import ItemCounts

BUILTIN_ONNX = ("headpose", "headpose_bins", "headpose_1x1", "headpose_var")


def is_onnx(model: str) -> bool:
    """Whether ``model`` (a `RunConfig.model`) is an ONNX graph: a ``.onnx`` file or a built-in ONNX model."""
    return model in BUILTIN_ONNX or os.fspath(model).lower().endswith(".onnx")


def copies_per_second(backend: DropsBackend, repeats: int = 2) -> float:
    """Occluded copies per second of ``backend`` on a synthetic batch (after one untimed warm-up run)."""
    m = backend.model
    h, w = m.input_size
    n = backend.engine.batch_sizes[-1]
    side = int(np.ceil(np.sqrt(n)))
    grid = np.stack(np.meshgrid(np.linspace(1, w - 2, side), np.linspace(1, h - 2, side)), -1).reshape(-1, 2)[:n]
    x = np.random.default_rng(0).normal(size=(1, h, w, m.channels)).astype(np.float32)
    targets = np.zeros(1, np.int32) if m.output == "regression" else None
    backend.drops(x, grid[None], np.ones((1, len(grid)), bool), targets)  # compiles (JAX) / warms up
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        res = backend.drops(x, grid[None], np.ones((1, len(grid)), bool), targets)
        best = min(best, time.perf_counter() - t)
    backend.engine.item_counts = ItemCounts()  # the run's counts start at its first image
    return int(res.valid.sum()) / best


def choose(cfg, devices=None) -> tuple[object, DropsBackend, dict]:
    """(model, backend, record) of the faster ONNX runtime for ``cfg`` (``onnx_backend='auto'``).

    The record: ``{"jax": copies/s, "onnxruntime": copies/s, "chosen": name, "forward": {name:
    'incremental' | 'dense'}, "probe_copies": n, "seconds": probe wall time}``.
    """
    t0 = time.perf_counter()
    built, rates = {}, {}
    for name in ("jax", "onnxruntime"):
        if name == "onnxruntime" and (cfg.incremental is True or cfg.approx_tau < 1.0):
            continue  # --incremental and --approx_tau need the device path; a host black box is refused
        model = models.load(cfg.model, onnx_backend=name)
        backend = DropsBackend(dataclasses.replace(cfg, onnx_backend=name), model, devices)
        built[name] = (model, backend)
        rates[name] = copies_per_second(backend)
    chosen = max(rates, key=rates.get)
    model, backend = built[chosen]
    record = {**{k: round(v, 1) for k, v in rates.items()}, "chosen": chosen,
              "forward": {k: b.forward for k, (_, b) in built.items()},
              "probe_copies": built[chosen][1].engine.batch_sizes[-1],
              "seconds": round(time.perf_counter() - t0, 2)}
    return model, backend, record
