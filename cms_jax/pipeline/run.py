"""The main CMS job: images -> alignment -> per-vertex drops -> CIS -> CMS (Algorithm 1, Eq. 6).

Streaming and preemption-safe. Images are taken in a fixed order (sorted,
then sharded by process); host work (decoding, MediaPipe, cropping) runs in
worker processes ahead of the device scoring; every chunk's per-image drop
vectors go to a shard file; the accumulator (sum of CIS maps and count, Eq. 6)
and the position in the order are checkpointed together with Orbax. Memory
does not grow with the number of images. A bad image is recorded with its
reason and the run goes on.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import time

from cms_jax.pipeline import outputs
from cms_jax.pipeline.checkpoint import RunCheckpoint
from cms_jax.pipeline.config import RunConfig
from cms_jax.pipeline.inputs import expand_images, shard
from cms_jax.pipeline.progress import Progress, StageTimer
from cms_jax.pipeline.scoring import Scorer
from cms_jax.pipeline.prepare import FacePreparer, label_for


def _files_digest(files: list[str]) -> str:
    """Identity of a shard's image list: a resume must see the same files in the same order."""
    return hashlib.sha256("\n".join(os.path.abspath(f) for f in files).encode()).hexdigest()[:16]


def _chunks(iterable, n):
    buf = []
    for item in iterable:
        buf.append(item)
        if len(buf) == n:
            yield buf
            buf = []
    if buf:
        yield buf


def work_dir_for(out_dir: str, process_index: int, process_count: int) -> str:
    return out_dir if process_count == 1 else os.path.join(out_dir, f"process_{process_index:03d}")


def run_cms(cfg: RunConfig, out_dir: str, *, scorer: Scorer | None = None, resume: bool = False, workers: int = 2,
            process_index: int = 0, process_count: int = 1, chunk_images: int = 16,
            checkpoint_every_s: float = 30.0, show_progress: bool = True,
            align_cache: str | None = None, stop_after: int = 0) -> dict:
    """Compute the CMS of ``cfg.model`` over ``cfg.images`` into ``out_dir``.

    Args:
      cfg: what to compute (see `RunConfig`).
      out_dir: where outputs and checkpoints go.
      scorer: the run's `Scorer` (model, canonical face, engine); built from ``cfg`` when None.
      resume: continue from the checkpoint in ``out_dir`` (refused when flags differ).
      workers: host processes for decoding and MediaPipe alignment.
      process_index, process_count: this process's shard of the images (multi-host).
      chunk_images: images scored together (their work items share device batches).
      checkpoint_every_s: seconds between checkpoints (and one at the end).
      show_progress: print count, rate and ETA to stderr.
      align_cache: folder of the landmark cache (default ``<out_dir>/align_cache``).
      stop_after: stop (as if preempted) after this many images of this run; 0 = never. For tests.

    Returns:
      The summary dict (also written to ``summary.json`` for single-process runs). Its
      ``stage_seconds`` are this invocation's main-process wall seconds by stage (disjoint:
      ``prepare_wait`` blocked on host workers, ``score``, ``accumulate``, ``write``,
      ``checkpoint``, ``pool`` start and stop); ``host_seconds`` are the per-file host stages
      (``read``, ``decode_align``, ``crop``) summed over the worker processes (inside
      ``prepare_wait`` when ``workers=0``).
    """
    cfg.validate()
    t_start = time.monotonic()
    all_files = expand_images(cfg.images, cfg.max_images)
    files = shard(all_files, process_index, process_count)
    work = work_dir_for(out_dir, process_index, process_count)
    parts_dir = os.path.join(work, "drops_parts")
    os.makedirs(parts_dir, exist_ok=True)

    scorer = scorer or Scorer(cfg)
    ckpt = RunCheckpoint(os.path.join(work, "checkpoints"))
    start, parts, skipped, seconds_before = 0, [], [], 0.0
    restored = ckpt.restore(scorer.state(0)) if ckpt.latest_step() is not None else None
    if restored is not None:
        state, meta = restored
        if not resume:
            ckpt.close()
            raise FileExistsError(
                f"{work} already holds a run checkpoint; pass --resume to "
                "continue it, or choose another --out_dir")
        diffs = cfg.differences(meta["config"])
        if diffs:
            ckpt.close()
            raise ValueError("cannot resume: these flags differ from the checkpoint's: " + "; ".join(diffs))
        if meta["files_digest"] != _files_digest(files):
            ckpt.close()
            raise ValueError(f"cannot resume: the image list changed since the checkpoint "
                             f"({meta['files_total']} files then, {len(files)} now)")
        start = scorer.load_state(state)
        parts, skipped = list(meta["parts"]), list(meta["skipped"])
        seconds_before = float(meta["seconds"])
        scorer.bf16_fidelity = meta.get("bf16_fidelity", scorer.bf16_fidelity)  # measured before the stop
    # Shards written after the last checkpoint belong to work that will be redone.
    for stale in set(glob.glob(os.path.join(parts_dir, "*.npz"))) - {os.path.join(parts_dir, p) for p in parts}:
        os.remove(stale)

    def meta_now(seconds: float) -> dict:
        return {"config": cfg.to_dict(), "fingerprint": cfg.fingerprint(), "parts": parts,
                "skipped": skipped, "seconds": seconds, "files_total": len(files),
                "files_digest": _files_digest(files), "process_index": process_index,
                "process_count": process_count, "bf16_fidelity": scorer.bf16_fidelity}

    progress = Progress(len(files), done=start, label=f"cms p{process_index}") if show_progress else None
    index, last_ckpt, done_now = start, time.monotonic(), 0
    timer, host = StageTimer(), StageTimer()
    with timer("pool"):
        preparer = FacePreparer(scorer.model, scorer.canon, cfg, workers=workers,
                                cache_dir=align_cache or os.path.join(work, "align_cache"))
    try:
        for chunk in _chunks(timer.iterate(preparer.imap(files[start:]), "prepare_wait"), chunk_images):
            good = [r for r in chunk if r.reason is None]
            for r in chunk:
                for stage, sec in r.seconds.items():
                    host.add(stage, sec)
                if r.reason is not None:
                    skipped.append({"file": r.path, "reason": r.reason})
            if good:
                labels = [label_for(cfg, r.path) for r in good]
                with timer("score"):
                    result, failed = scorer.score(good, labels)
                skipped.extend(failed)
                if result is not None:
                    with timer("accumulate"):
                        scorer.accumulate(result)
                    name = f"part-{index:09d}.npz"
                    with timer("write"):
                        outputs.write_part(os.path.join(parts_dir, name), result)
                    parts.append(name)
            index += len(chunk)
            done_now += len(chunk)
            if progress:
                progress.update(len(chunk), skipped=len(skipped))
            if time.monotonic() - last_ckpt >= checkpoint_every_s or index == len(files):
                with timer("checkpoint"):
                    ckpt.save(index, scorer.state(index), meta_now(seconds_before + time.monotonic() - t_start))
                last_ckpt = time.monotonic()
            if stop_after and done_now >= stop_after and index < len(files):
                ckpt.save(index, scorer.state(index), meta_now(seconds_before + time.monotonic() - t_start))
                return {"stopped_at": index}
        if index == start and ckpt.latest_step() is None:  # empty shard: still leave a checkpoint
            ckpt.save(index, scorer.state(index), meta_now(seconds_before + time.monotonic() - t_start))
    finally:
        with timer("pool"):
            preparer.close()
        with timer("checkpoint"):
            ckpt.close()  # waits for a pending save

    seconds = seconds_before + time.monotonic() - t_start
    summary = outputs.summary(cfg, scorer, total=len(files), skipped=skipped, seconds=seconds)
    summary["host_seconds"] = host.as_dict()
    with timer("write"):
        # A process's final result, in plain files another process can read (Orbax checkpoints are
        # per-process), written before partial.json, which marks it complete.
        outputs._atomic_savez(os.path.join(work, "partial_state.npz"), **scorer.state(index))
        summary["stage_seconds"] = timer.as_dict()
        with open(os.path.join(work, "partial.json"), "w") as f:
            json.dump({"summary": summary, "parts": parts, "meta": meta_now(seconds)}, f)
        if process_count == 1:
            summary = outputs.write_final(out_dir, scorer, [os.path.join(parts_dir, p) for p in parts],
                                          summary)
    if process_count == 1:  # again, now that the final writes are counted
        summary["stage_seconds"] = timer.as_dict()
        with open(os.path.join(out_dir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    return summary
