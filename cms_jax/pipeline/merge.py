"""Multi-process runs: each process owns a disjoint shard; the partial results merge exactly.

Each process ``k`` of ``P`` works in ``<out_dir>/process_k`` on
``files[k::P]`` and, when done, writes ``partial.json``. Process 0 waits for
all of them, then adds the accumulator states (sums and counts add exactly:
Eq. 6 is a mean of per-image maps), concatenates the drop shards back into
the global image order, and writes the usual outputs at ``<out_dir>``. The
merged ``stage_seconds`` and ``host_seconds`` are summed over the processes.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

from cms_jax.pipeline import outputs
from cms_jax.pipeline.inputs import expand_images
from cms_jax.pipeline.run import work_dir_for


def wait_for_partials(out_dir: str, count: int, timeout_s: float = 3600.0, poll_s: float = 0.5) -> list[str]:
    """Block until every process has written its ``partial.json``; return the work dirs."""
    dirs = [work_dir_for(out_dir, k, count) for k in range(count)]
    t0 = time.monotonic()
    while True:
        missing = [d for d in dirs if not os.path.exists(os.path.join(d, "partial.json"))]
        if not missing:
            return dirs
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"processes did not finish within {timeout_s}s: {missing}")
        time.sleep(poll_s)


def merge_processes(cfg, scorer, out_dir: str, count: int, timeout_s: float = 3600.0) -> dict:
    """Merge the partial results of ``count`` processes into the final outputs at ``out_dir``."""
    dirs = wait_for_partials(out_dir, count, timeout_s)
    scorer.acc_state = scorer.acc.empty_state()
    parts, skipped, seconds = [], [], 0.0
    stages = {"stage_seconds": {}, "host_seconds": {}}  # summed over processes
    for d in dirs:
        with open(os.path.join(d, "partial.json")) as fh:
            partial = json.load(fh)
        meta = partial["meta"]
        for key, total in stages.items():
            for k, v in partial["summary"].get(key, {}).items():
                total[k] = round(total.get(k, 0.0) + v, 4)
        with np.load(os.path.join(d, "partial_state.npz")) as z:
            st = {k: z[k] for k in z.files}
        diffs = cfg.differences(meta["config"])
        if diffs:
            raise ValueError(f"process folder {d} was computed with other flags: {'; '.join(diffs)}")
        scorer.merge_state(st)
        parts += [os.path.join(d, "drops_parts", p) for p in meta["parts"]]
        skipped += meta["skipped"]
        seconds = max(seconds, float(meta["seconds"]))
    all_files = expand_images(cfg.images, cfg.max_images)
    order = {f: i for i, f in enumerate(all_files)}
    skipped.sort(key=lambda s: order.get(s["file"], -1))
    summary = outputs.summary(cfg, scorer, total=len(all_files), skipped=skipped, seconds=seconds)
    summary["processes"] = count
    summary.update(stages)
    outputs.write_final(out_dir, scorer, parts, summary)
    # Put drops.npz rows back in the global image order.
    path = os.path.join(out_dir, "drops.npz")
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    idx = np.argsort([order[f] for f in data["files"]], kind="stable")
    for k in ("files", "drops", "valid", "targets", "clean"):
        data[k] = data[k][idx]
    outputs._atomic_savez(path, **data)
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary
