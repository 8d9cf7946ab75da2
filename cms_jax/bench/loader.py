"""The main job's input pipeline alone: images/s of the Grain loader (decode, MediaPipe, crop).

Reads the first N faces through `FacePreparer.loader` exactly as the job does,
twice: into an empty landmark cache (MediaPipe on every file) and again from
the filled cache (decode and crop only; what a resumed or repeated run does).
Also times a resume: the iterator state after half the files, restored into a
fresh loader, must yield the second half. Rates are steady state (after the
first image); ``startup_s`` is the time to the first image (worker processes
start, each loading its landmarker). The job's scoring is not involved.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time

from cms_jax import models
from cms_jax.data.image_list import expand_images
from cms_jax.data.prepare import FacePreparer


@dataclasses.dataclass(frozen=True)
class InputBenchConfig:
    """The input benchmark (the flags of ``experiments/bench_input.py``).

    ``smoke``: 24 images, seconds.
    """
    images: str = ""        # image folder (default: utkface_22k of the assets)
    max_images: int = 1000  # use the first N images
    workers: int = 2        # Grain worker processes
    model: str = "gender"   # model whose crop policy and input size are used
    smoke: bool = False


def steady_rate(preparer, files, state=None) -> tuple[float, list[str], float]:
    """Steady-state images/s (after the first item), the paths in order, and the start-up seconds."""
    t0 = time.perf_counter()
    it = preparer.loader(files, state=state)
    got = [next(it).path]
    t1 = time.perf_counter()
    got += [p.path for p in it]
    return (len(got) - 1) / max(time.perf_counter() - t1, 1e-9), got, t1 - t0


def _entries(folder: str) -> int:
    """Landmark cache entries (one file per image MediaPipe has seen)."""
    return sum(len(names) for _, _, names in os.walk(folder))


def run(cfg: InputBenchConfig, out_dir: str) -> dict:
    """Cold, warm and resumed passes; prints and writes ``out_dir/bench_input.json``; returns its dict.

    Raises:
      SystemExit: the restored loader did not continue at the exact image (after writing the JSON).
    """
    from cms_jax.assets import resolve_dir
    folder = cfg.images or str(resolve_dir("utkface_22k"))
    files = expand_images(folder, 24 if cfg.smoke else cfg.max_images)
    model = models.load(cfg.model)
    res = {"images": len(files), "workers": cfg.workers, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as cache:
        prep = FacePreparer(model, workers=cfg.workers, cache_dir=cache)
        try:
            res["cold_images_per_s"], _, res["startup_s"] = steady_rate(prep, files)
            res["cache_entries_after_cold"] = _entries(cache)
            res["warm_images_per_s"], order, _ = steady_rate(prep, files)
            # The warm pass reads every landmark from the cache: MediaPipe writes no new entry.
            res["cache_entries_written_warm"] = _entries(cache) - res["cache_entries_after_cold"]
            it = prep.loader(files)
            half = len(files) // 2
            for _ in range(half):
                next(it)
            state = it.get_state()
            _, rest, _ = steady_rate(prep, files, state)
            res["resume_continues_at_the_exact_image"] = rest == order[half:]
        finally:
            prep.close()
    res = {k: round(v, 1) if isinstance(v, float) else v for k, v in res.items()}
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "bench_input.json"), "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps(res, indent=2))
    if not res["resume_continues_at_the_exact_image"]:
        raise SystemExit("the loader's restored state did not continue at the exact image")
    return res
