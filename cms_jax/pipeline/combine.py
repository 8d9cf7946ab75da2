"""The end of a run: every process's shard combined with collectives, checked, written by process 0.

Each process contributes its accumulator state (Eq. 6 sums and counts, per
group too), the drop vectors it scored (read from its own shard files), its
skipped images and its timings. `collective` all-gathers them as bytes, so
sums are added in process order, exactly as one process would (in float64),
and the drops come back in the global image order (process shares are
contiguous ranges of the sorted list). Process 0 writes the outputs; no
process ever reads another's files. The failure rules are then applied to
the combined counts, identically on every process, after the outputs are
written, so nothing computed is lost even when the run is declared failed.
"""
from __future__ import annotations

import time

import numpy as np

from cms_jax.data.failures import RunFailed, reason_counts
from cms_jax.pipeline import collective, writers
from cms_jax.scoring.backend import Fidelity
from cms_jax.work_items import ItemCounts


def _sum_items(rows: list[dict]) -> dict:
    """The processes' `work_items.ItemCounts`, added (copies asked for, distinct, computed)."""
    total = ItemCounts()
    for r in rows:
        total.add_counts(r)
    return total.as_dict()


def _sum_stages(dicts: list[dict]) -> dict:
    total: dict[str, float] = {}
    for d in dicts:
        for k, v in d.items():
            total[k] = round(total.get(k, 0.0) + v, 4)
    return total


def combine(record, sums, out_dir, *, all_files: list[str], error: str | None, policy, timer, local: dict) -> dict:
    """All-gather the processes' results; process 0 writes them; apply the failure rules.

    Args:
      record: the run's `RunRecord` (config, canonical face, model and backend facts).
      sums: the run's `RunSums`; they become the combined sums (every process's, in process order).
      out_dir: the run's output folder (written by process 0 only).
      all_files: the run's full, sorted image list (the global order).
      error: this process's systematic failure, or None.
      policy: the `FailurePolicy` (its final rules are applied to the combined counts).
      timer: this process's `StageTimer` (``gather`` and ``write`` are added to it).
      local: this process's ``parts`` (its shard files), ``skipped``, ``seconds``, ``files``,
        ``host_seconds``, ``throughput`` rows, ``fidelity`` (`Fidelity.as_dict`) and ``work_items``
        (`ItemCounts.as_dict`).

    Returns:
      The run's summary (on every process).
    """
    import jax

    pi = jax.process_index()
    with timer("gather"):
        failures = collective.barrier_with_status(error)
        if failures:
            raise RunFailed("\n".join(failures))
        mine = {**{f"state/{k}": np.asarray(v) for k, v in sums.state.items()},
                **{f"drops/{k}": v for k, v in writers.read_parts(local["parts"]).items()}}
        arrays = collective.gather_arrays(mine)
        metas = collective.gather_json({k: local[k] for k in ("skipped", "seconds", "files", "host_seconds",
                                                              "throughput", "fidelity", "work_items")}
                                       | {"stage_seconds": timer.as_dict()})
    # In process order: the same additions as one process, in float64.
    sums.merge_from([{k[6:]: v for k, v in a.items() if k.startswith("state/")} for a in arrays])
    scored = [a for a in arrays if a["drops/files"].size] or arrays[:1]
    drops = {k: np.concatenate([a[f"drops/{k}"] for a in scored]) for k in writers.DROP_KEYS}
    order = {f: i for i, f in enumerate(all_files)}
    skipped = sorted((s for m in metas for s in m["skipped"]), key=lambda s: order.get(s["file"], -1))
    summary = writers.summary(record, Fidelity.first_of([m["fidelity"] for m in metas]), images_done=sums.count,
                              total=len(all_files), skipped=skipped, seconds=max(m["seconds"] for m in metas),
                              sides=drops["canonical_side"])
    summary["skipped_reasons"] = reason_counts(skipped)
    summary["processes"] = len(metas)
    summary["per_process"] = [{"images_total": m["files"], "seconds": round(m["seconds"], 3),
                               "throughput": m["throughput"]} for m in metas]
    summary["host_seconds"] = _sum_stages([m["host_seconds"] for m in metas])
    summary["work_items"] = _sum_items([m["work_items"] for m in metas])
    if pi == 0:
        t = time.perf_counter()
        if sums.count:
            writers.write_final(out_dir, sums.cms(), record.canon, drops, summary)
        summary["stage_seconds"] = _sum_stages([m["stage_seconds"] for m in metas[1:]] + [timer.as_dict()])
        summary["stage_seconds"]["write"] = round(summary["stage_seconds"].get("write", 0.0)
                                                  + time.perf_counter() - t, 4)
        writers.write_summary(out_dir, summary)
    policy.final(total=len(all_files), done=sums.count, skipped=len(skipped),
                 reasons=summary["skipped_reasons"])
    return summary
