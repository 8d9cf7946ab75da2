"""The main CMS job: images -> alignment -> per-vertex drops -> CIS -> CMS (Algorithm 1, Eq. 6).

Streaming, preemption-safe and multi-host. Images are taken in a fixed order
(sorted); each JAX process takes its contiguous share (`prepare.process_range`)
and reads it through a Grain loader whose workers decode, align and crop
ahead of the device scoring. Every chunk's per-image drop vectors go to a
shard file in this process's own folder; the accumulator (sum of CIS maps
and count, Eq. 6, and per-group sums) and the loader's iterator state are
checkpointed together with Orbax, so a resume continues at the exact image.
Memory does not grow with the number of images. A bad image is recorded with
its reason and the run goes on; a systematic failure stops it loudly
(`failures.FailurePolicy`). At the end the processes combine their shards
with collectives (`combine.py`); no process reads another's files.
"""
from __future__ import annotations

import hashlib
import time
import traceback

from cms_jax import storage
from cms_jax.pipeline import outputs
from cms_jax.pipeline.checkpoint import RunCheckpoint
from cms_jax.pipeline.config import RunConfig
from cms_jax.pipeline.failures import FailurePolicy, RunFailed, reason_counts
from cms_jax.pipeline.inputs import expand_images
from cms_jax.pipeline.labels import LabelRule
from cms_jax.pipeline.prepare import FacePreparer, process_range
from cms_jax.pipeline.progress import Progress, StageTimer, ThroughputLog
from cms_jax.pipeline.references import identity_references
from cms_jax.pipeline.scoring import Scorer


def _files_digest(files: list[str]) -> str:
    """Identity of the run's image list: a resume must see the same files in the same order."""
    import os
    return hashlib.sha256("\n".join(os.path.abspath(f) for f in files).encode()).hexdigest()[:16]


def _chunks(iterable, n):
    """Lists of n items; yields as soon as a list is full, so the source is never read ahead."""
    buf = []
    for item in iterable:
        buf.append(item)
        if len(buf) == n:
            yield buf
            buf = []
    if buf:
        yield buf


def work_dir_for(out_dir, process_index: int, process_count: int):
    """This process's own folder: ``out_dir`` alone, else ``out_dir/process_K``."""
    out = storage.path(out_dir)
    return out if process_count == 1 else out / f"process_{process_index:03d}"


def run_cms(cfg: RunConfig, out_dir: str, *, scorer: Scorer | None = None, resume: bool = False, workers: int = 2,
            chunk_images: int = 16, checkpoint_every_s: float = 30.0, show_progress: bool = True,
            align_cache: str | None = None, stop_after: int = 0, policy: FailurePolicy | None = None) -> dict:
    """Compute the CMS of ``cfg.model`` over ``cfg.images`` into ``out_dir`` (this process's share).

    Args:
      cfg: what to compute (see `RunConfig`).
      out_dir: where outputs and checkpoints go (a folder or an object-store URL).
      scorer: the run's `Scorer` (model, canonical face, engine); built from ``cfg`` when None.
      resume: continue from the checkpoint in this process's folder (refused when flags differ).
      workers: Grain worker processes for decoding and MediaPipe alignment (0: in this process).
      chunk_images: images scored together (their work items share device batches).
      checkpoint_every_s: seconds between checkpoints (and one at the end).
      show_progress: print count, rate and ETA to stderr.
      align_cache: folder of the landmark cache (default ``<out_dir>/align_cache``, local only).
      stop_after: stop (as if preempted) after this many images of this run; 0 = never. For tests.
      policy: when to stop for a systematic failure (default `FailurePolicy()`).

    Returns:
      The combined summary on process 0 (every process returns it; only process 0 writes the
      outputs), or ``{"stopped_at": n}`` after ``stop_after``. Its ``stage_seconds`` are wall
      seconds by stage of the main loop (disjoint: ``prepare_wait`` blocked on the loader,
      ``score``, ``accumulate``, ``write``, ``checkpoint``, ``pool`` start and stop, ``gather``);
      ``host_seconds`` are the per-file host stages (``read``, ``decode_align``, ``crop``) summed
      over the loader's workers; both are summed over processes.

    Raises:
      RunFailed: a systematic failure, here or in another process (see `failures`).
    """
    import jax

    from cms_jax.pipeline.combine import combine

    cfg.validate()
    t_start = time.monotonic()
    pi, pc = jax.process_index(), jax.process_count()
    all_files = expand_images(cfg.images, cfg.max_images)
    lo, hi = process_range(len(all_files))
    files = all_files[lo:hi]
    work = work_dir_for(out_dir, pi, pc)
    parts_dir = work / "drops_parts"
    parts_dir.mkdir(parents=True, exist_ok=True)

    scorer = scorer or Scorer(cfg)
    cache = align_cache or (str(storage.path(out_dir) / "align_cache") if storage.is_local(out_dir) else None)
    # Checked before any image is read: a rule that does not fit the model fails here.
    LabelRule(cfg.label_from, scorer.model, target=cfg.target, references={} if cfg.reference else None)
    refs = (identity_references(cfg.reference, scorer, all_files, workers=workers, cache_dir=cache)
            if cfg.reference else None)
    rule = LabelRule(cfg.label_from, scorer.model, target=cfg.target, references=refs)
    policy = policy or FailurePolicy()
    ckpt = RunCheckpoint(work / "checkpoints")
    done, parts, skipped, seconds_before, input_state, rows = 0, [], [], 0.0, None, []
    restored = ckpt.restore(scorer.sums.checkpoint(0)) if ckpt.latest_step() is not None else None
    if restored is not None:
        state, meta = restored
        problem = None
        if not resume:
            problem = FileExistsError(f"{work} already holds a run checkpoint; pass --resume to "
                                      "continue it, or choose another --out_dir")
        elif cfg.differences(meta["config"]):
            problem = ValueError("cannot resume: these flags differ from the checkpoint's: "
                                 + "; ".join(cfg.differences(meta["config"])))
        elif meta["files_digest"] != _files_digest(all_files) or meta.get("shard") != [lo, hi, pc]:
            problem = ValueError(f"cannot resume: the image list or the number of processes changed since the "
                                 f"checkpoint ({meta['files_total']} files then, {len(all_files)} now)")
        if problem:
            ckpt.close()
            raise problem
        scorer.sums.restore(state)
        done, parts, skipped = int(meta["done"]), list(meta["parts"]), list(meta["skipped"])
        seconds_before, rows = float(meta["seconds"]), list(meta.get("throughput", []))
        input_state = meta["input_state"].encode()
        backend = scorer.backend  # its bf16 fidelity was measured before the stop
        backend.bf16_fidelity = meta.get("bf16_fidelity", backend.bf16_fidelity)
        backend.approx_fidelity = meta.get("approx_fidelity", backend.approx_fidelity)
        counts = meta.get("work_items")
        if counts:  # copies scored before the stop
            backend.engine.item_counts.add_counts(counts)
    # Shards written after the last checkpoint belong to work that will be redone.
    for stale in {p.name for p in parts_dir.glob("*.npz")} - set(parts):
        (parts_dir / stale).unlink()

    timer, host = StageTimer(), StageTimer()
    log = ThroughputLog(rows, done=done, seconds_before=seconds_before)
    progress = Progress(len(files), done=done, label=f"cms p{pi}") if show_progress else None
    with timer("pool"):
        preparer = FacePreparer(scorer.model, workers=workers, cache_dir=cache)
        source = preparer.loader(files, state=input_state)

    def meta_now() -> dict:
        return {"config": cfg.to_dict(), "fingerprint": cfg.fingerprint(), "parts": parts,
                "skipped": skipped, "seconds": seconds_before + time.monotonic() - t_start, "done": done,
                "files_total": len(all_files), "files_digest": _files_digest(all_files), "shard": [lo, hi, pc],
                "input_state": source.get_state().decode(), "throughput": log.rows,
                "bf16_fidelity": scorer.backend.bf16_fidelity,
                "approx_fidelity": scorer.backend.approx_fidelity,
                "work_items": scorer.backend.engine.item_counts.as_dict()}

    error, last_ckpt = None, time.monotonic()
    try:
        for chunk in _chunks(timer.iterate(source, "prepare_wait"), chunk_images):
            errors, good, labels = [], [], []
            for r in chunk:
                for stage, sec in r.seconds.items():
                    host.add(stage, sec)
                label, why = (None, r.reason) if r.reason is not None else rule(r.path)
                if why is not None:
                    skipped.append({"file": r.path, "reason": why})
                    if r.error is not None:
                        errors.append(r.error)
                else:
                    good.append(r)
                    labels.append(label)
            if good:
                with timer("score"):
                    result, failed = scorer.score(good, labels)
                for f in failed:
                    if "error" in f:
                        errors.append(f.pop("error"))
                skipped.extend(failed)
                if result is not None:
                    with timer("accumulate"):
                        scorer.sums.add(result)
                    name = f"part-{lo + done:09d}.npz"
                    with timer("write"):
                        outputs.write_part(parts_dir / name, result)
                    parts.append(name)
            done += len(chunk)
            log.update(done)
            if progress:
                progress.update(len(chunk), note=f"skipped {len(skipped)}")
            policy.chunk(errors, f"process {pi}: {done} of {len(files)} images read, {scorer.sums.count} scored, "
                                 f"{len(skipped)} skipped ({reason_counts(skipped)})")
            if time.monotonic() - last_ckpt >= checkpoint_every_s or done == len(files):
                with timer("checkpoint"):
                    ckpt.save(done, scorer.sums.checkpoint(done), meta_now())
                last_ckpt = time.monotonic()
            if stop_after and done >= stop_after and done < len(files):
                ckpt.save(done, scorer.sums.checkpoint(done), meta_now())
                return {"stopped_at": done}
        if ckpt.latest_step() is None:  # empty shard: still leave a checkpoint
            ckpt.save(done, scorer.sums.checkpoint(done), meta_now())
    except RunFailed as e:
        error = f"process {pi}: {e}"
    except Exception:  # anything else: the other processes must still hear of it
        error = f"process {pi}: {traceback.format_exc()}"
        if pc == 1:
            raise
    finally:
        with timer("pool"):
            preparer.close()
        with timer("checkpoint"):
            ckpt.close()  # waits for a pending save
    return combine(cfg, scorer, out_dir, all_files=all_files, error=error, policy=policy, timer=timer,
                   local={"parts": [str(parts_dir / p) for p in parts], "skipped": skipped,
                          "seconds": seconds_before + time.monotonic() - t_start, "files": len(files),
                          "host_seconds": host.as_dict(), "throughput": log.rows})
