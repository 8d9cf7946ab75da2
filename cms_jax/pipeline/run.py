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

The job owns its state: `run_cms` opens a run (`open_run`: this process's
share, the `Scorer`, the sums, the target rule, a restored checkpoint), scores
its share chunk by chunk (`score_share`, checkpointing with `save_checkpoint`)
and finishes it (`finish`: the all-gather and the writers, handed values).
"""
from __future__ import annotations

import dataclasses
import hashlib
import sys
import time
import traceback

from cms_jax import storage
from cms_jax.data.failures import FailurePolicy, RunFailed, reason_counts
from cms_jax.data.image_list import expand_images
from cms_jax.data.prepare import FacePreparer, process_range
from cms_jax.data.progress import Progress, StageTimer, ThroughputLog
from cms_jax.pipeline import interrupt, preflight, writers
from cms_jax.pipeline.checkpoint import RunCheckpoint
from cms_jax.pipeline.config import RunConfig
from cms_jax.pipeline.reader import landmark_cache
from cms_jax.pipeline.record import RunRecord
from cms_jax.pipeline.references import identity_references
from cms_jax.pipeline.sums import RunSums
from cms_jax.scoring.labels import LabelRule
from cms_jax.scoring.scorer import Scorer


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


@dataclasses.dataclass
class OpenRun:
    """One process's run, opened: its share of the images, its parts, and what is done so far.

    Attributes:
      cfg, scorer, sums, rule: the config, the `Scorer`, the `RunSums` (Eq. 6) and the `LabelRule`.
      all_files: the run's full sorted image list; ``lo``, ``hi``: this process's share of it.
      work: this process's folder; ``parts_dir`` its drop shards; ``ckpt`` its `RunCheckpoint`.
      cache: the landmark cache folder (None: none); ``shard``: ``[lo, hi, process count]``.
      done: images of the share read (scored or skipped); ``parts``: committed shard names;
      skipped: images skipped with reasons; ``seconds_before``: wall seconds of earlier runs;
      input_state: the loader's saved iterator state (None: from the start); ``rows``: throughput rows.
    """
    cfg: RunConfig
    scorer: Scorer
    sums: RunSums
    rule: LabelRule
    all_files: list[str]
    lo: int
    hi: int
    work: object
    parts_dir: object
    ckpt: RunCheckpoint
    cache: str | None
    shard: list[int]
    done: int = 0
    parts: list[str] = dataclasses.field(default_factory=list)
    skipped: list[dict] = dataclasses.field(default_factory=list)
    seconds_before: float = 0.0
    input_state: bytes | None = None
    rows: list = dataclasses.field(default_factory=list)
    t_start: float = dataclasses.field(default_factory=time.monotonic)  # when this run began

    @property
    def files(self) -> list[str]:
        """This process's share of the images."""
        return self.all_files[self.lo:self.hi]

    def seconds(self) -> float:
        """Wall seconds of this run so far, earlier runs of it included."""
        return self.seconds_before + time.monotonic() - self.t_start

    def meta(self, input_state: bytes, log) -> dict:
        """The checkpoint's JSON: what a resume needs besides the sums (``input_state``: the loader's)."""
        backend = self.scorer.backend
        return {"config": self.cfg.to_dict(), "fingerprint": self.cfg.fingerprint(), "parts": self.parts,
                "skipped": self.skipped, "seconds": self.seconds(), "done": self.done,
                "files_total": len(self.all_files), "files_digest": _files_digest(self.all_files),
                "shard": self.shard, "input_state": input_state.decode(), "throughput": log.rows,
                **backend.fidelity.as_dict(), "work_items": backend.engine.item_counts.as_dict()}


def open_run(cfg: RunConfig, out_dir, *, scorer: Scorer | None = None, sums: RunSums | None = None,
             resume: bool = False, workers: int = 2, align_cache: str | None = None) -> OpenRun:
    """This process's share, folders, scoring, sums and target rule, and the checkpoint restored.

    Sources that match no file stop the run first (`preflight`); partial matches and a card-less
    model's defaults get a stderr line. The target rule is checked against the model before any
    image is read; with ``--reference``
    the identities' mean embeddings are computed first (`references`). A checkpoint is refused
    unless ``resume``, and when the flags, the image list or the process count changed.
    """
    import jax

    t_start = time.monotonic()  # the run's seconds include building the scorer and the references
    pi, pc = jax.process_index(), jax.process_count()
    all_files = expand_images(cfg.images, cfg.max_images)
    notes = preflight.check(cfg, all_files)  # a source that matches nothing stops here, before any scoring
    scorer = scorer or Scorer(cfg)  # validates cfg
    if pi == 0:
        for line in notes + [preflight.model_defaults(scorer.model)]:
            if line:
                print(f"cms: note: {line}", file=sys.stderr, flush=True)
    lo, hi = process_range(len(all_files))
    work = work_dir_for(out_dir, pi, pc)
    parts_dir = work / "drops_parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    cache = landmark_cache(out_dir, align_cache)
    refs = {} if cfg.reference else None  # filled below; the rule reads it per image
    rule = LabelRule(cfg.label_from, scorer.model, target=cfg.target, references=refs)  # a misfit fails here
    if cfg.reference:
        refs.update(identity_references(cfg.reference, scorer, all_files, workers=workers, cache_dir=cache))
    run = OpenRun(cfg, scorer, sums or RunSums(cfg, scorer.canon), rule, all_files, lo, hi, work, parts_dir,
                  RunCheckpoint(work / "checkpoints"), cache, [lo, hi, pc], t_start=t_start)
    _restore(run, resume)
    # Shards written after the last checkpoint belong to work that will be redone.
    for stale in {p.name for p in parts_dir.glob("*.npz")} - set(run.parts):
        (parts_dir / stale).unlink()
    return run


def _restore(run: OpenRun, resume: bool) -> None:
    """Continue from this process's latest checkpoint, if any (refused when it does not fit)."""
    import jax

    restored = run.ckpt.restore(run.sums.checkpoint(0)) if run.ckpt.latest_step() is not None else None
    if restored is None:
        # One process: nothing to continue is a mistake worth saying. In a multi-process run a process
        # killed before its first checkpoint legitimately starts its share afresh.
        if resume and jax.process_count() == 1:
            raise FileNotFoundError(f"--resume: {run.work} holds no run checkpoint to continue; run without "
                                    "--resume to start it")
        return
    state, meta = restored
    problem, cfg = None, run.cfg
    if not resume:
        problem = FileExistsError(f"{run.work} already holds a run checkpoint; pass --resume to "
                                  "continue it, --overwrite to replace it, or choose another --out_dir")
    elif cfg.differences(meta["config"]):
        problem = ValueError("cannot resume: these flags differ from the checkpoint's: "
                             + "; ".join(cfg.differences(meta["config"])))
    elif meta["files_digest"] != _files_digest(run.all_files) or meta.get("shard") != run.shard:
        problem = ValueError(f"cannot resume: the image list or the number of processes changed since the "
                             f"checkpoint ({meta['files_total']} files then, {len(run.all_files)} now)")
    if problem:
        run.ckpt.close()
        raise problem
    run.sums.restore(state)
    run.done, run.parts, run.skipped = int(meta["done"]), list(meta["parts"]), list(meta["skipped"])
    run.seconds_before, run.rows = float(meta["seconds"]), list(meta.get("throughput", []))
    run.input_state = meta["input_state"].encode()
    backend = run.scorer.backend
    backend.fidelity.update(meta)  # measured before the stop
    if meta.get("work_items"):  # copies scored before the stop
        backend.engine.item_counts.add_counts(meta["work_items"])


def save_checkpoint(run: OpenRun, source, log, input_state: bytes | None = None) -> None:
    """The sums, the loader's position and what is done, saved together (Orbax, atomic).

    ``input_state``: the loader's position when it was last at a chunk boundary (default: now).
    """
    state = source.get_state() if input_state is None else input_state
    run.ckpt.save(run.done, run.sums.checkpoint(run.done), run.meta(state, log))


def _score_chunk(run: OpenRun, chunk, timer, host) -> list:
    """Label, score, accumulate (Eq. 6) and write one chunk; returns its failures' signatures."""
    errors, good, labels = [], [], []
    for r in chunk:
        for stage, sec in r.seconds.items():
            host.add(stage, sec)
        label, why = (None, r.reason) if r.reason is not None else run.rule(r.path)
        if why is not None:
            run.skipped.append({"file": r.path, "reason": why})
            if r.error is not None:
                errors.append(r.error)
        else:
            good.append(r)
            labels.append(label)
    if good:
        with timer("score"):
            result, failed = run.scorer.score(good, labels)
        for f in failed:
            if "error" in f:
                errors.append(f.pop("error"))
        run.skipped.extend(failed)
        if result is not None:
            with timer("accumulate"):
                run.sums.add(result)
            name = f"part-{run.lo + run.done:09d}.npz"
            with timer("write"):
                writers.write_part(run.parts_dir / name, result)
            run.parts.append(name)
    return errors


class _LoaderStopped(Exception):
    """The loader failed after a stop signal."""


def score_share(run: OpenRun, source, *, policy: FailurePolicy, timer, host, log, progress, chunk_images: int,
                checkpoint_every_s: float, stop_after: int, label: str, stop=None) -> bool:
    """Score this process's share from ``source`` (the loader), checkpointing on the way.

    ``stop`` (`interrupt.StopRequest`) is read between chunks: after a SIGINT/SIGTERM the chunk in
    hand is finished, a checkpoint saved and `interrupt.Interrupted` raised.

    Returns:
      True when stopped after ``stop_after`` images (a checkpoint is saved first), else False.

    Raises:
      RunFailed: the same failure in ``policy``'s chunks in a row.
      Interrupted: a signal came before the share was done.
    """
    n, last_ckpt = len(run.files), time.monotonic()
    stop = interrupt.StopRequest() if stop is None else stop

    def progress_now(resumable=True):
        return dict(done=run.done, total=n, scored=run.sums.count, resumable=resumable)

    stop.raise_if_set(**progress_now(run.ckpt.latest_step() is not None))  # a signal while the run opened
    boundary = source.get_state()  # the loader's position after the last whole chunk

    def read(files):
        try:
            yield from files
        except Exception as e:
            if stop:  # the loader failed after the signal (a worker it reached before ignoring SIGINT)
                raise _LoaderStopped from e
            raise

    try:
        for chunk in _chunks(read(timer.iterate(source, "prepare_wait")), chunk_images):
            errors = _score_chunk(run, chunk, timer, host)
            run.done += len(chunk)
            boundary = source.get_state()
            log.update(run.done)
            if progress:
                progress.update(len(chunk), note=f"skipped {len(run.skipped)}")
            policy.chunk(errors, f"{label}: {run.done} of {n} images read, {run.sums.count} scored, "
                                 f"{len(run.skipped)} skipped ({reason_counts(run.skipped)})")
            if time.monotonic() - last_ckpt >= checkpoint_every_s or run.done == n or (stop and run.done < n):
                with timer("checkpoint"):
                    save_checkpoint(run, source, log, boundary)
                last_ckpt = time.monotonic()
            if run.done < n:
                stop.raise_if_set(**progress_now())
            if stop_after and run.done >= stop_after and run.done < n:
                save_checkpoint(run, source, log, boundary)
                return True
    except _LoaderStopped:
        # What is scored is saved at the last chunk boundary; the chunk being read is redone on resume.
        save_checkpoint(run, source, log, boundary)
        stop.raise_if_set(**progress_now())
    if run.ckpt.latest_step() is None:  # empty shard: still leave a checkpoint
        save_checkpoint(run, source, log, boundary)
    return False


def finish(run: OpenRun, out_dir, *, error: str | None, policy: FailurePolicy, timer, host, log) -> dict:
    """Every process's results combined (`combine`), written by process 0; the final failure rules."""
    from cms_jax.pipeline.combine import combine

    backend = run.scorer.backend
    return combine(RunRecord.of(run.cfg, run.scorer), run.sums, out_dir, all_files=run.all_files, error=error,
                   policy=policy, timer=timer,
                   local={"parts": [str(run.parts_dir / p) for p in run.parts], "skipped": run.skipped,
                          "seconds": run.seconds(), "files": len(run.files), "host_seconds": host.as_dict(),
                          "throughput": log.rows, "fidelity": backend.fidelity.as_dict(),
                          "work_items": backend.engine.item_counts.as_dict()})


def run_cms(cfg: RunConfig, out_dir: str, *, scorer: Scorer | None = None, sums: RunSums | None = None,
            resume: bool = False, workers: int = 2, chunk_images: int = 16, checkpoint_every_s: float = 30.0,
            show_progress: bool = True, align_cache: str | None = None, stop_after: int = 0,
            policy: FailurePolicy | None = None) -> dict:
    """Compute the CMS of ``cfg.model`` over ``cfg.images`` into ``out_dir`` (this process's share).

    Args:
      cfg: what to compute (see `RunConfig`).
      out_dir: where outputs and checkpoints go (a folder or an object-store URL).
      scorer: the run's `Scorer` (model, canonical face, engine); built from ``cfg`` when None.
      sums: the run's `RunSums` (Eq. 6), combined over processes at the end; new when None.
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
      Interrupted: SIGINT or SIGTERM (`interrupt`): what was scored is in a checkpoint.
    """
    import jax

    with interrupt.guard() as stop:  # SIGINT/SIGTERM: a checkpoint at the next chunk, then Interrupted
        run = open_run(cfg, out_dir, scorer=scorer, sums=sums, resume=resume, workers=workers,
                       align_cache=align_cache)
        pi, pc = jax.process_index(), jax.process_count()
        policy = policy or FailurePolicy()
        timer, host = StageTimer(), StageTimer()
        log = ThroughputLog(run.rows, done=run.done, seconds_before=run.seconds_before)
        progress = Progress(len(run.files), done=run.done, label=f"cms p{pi}") if show_progress else None
        with timer("pool"):
            preparer = FacePreparer(run.scorer.model, workers=workers, cache_dir=run.cache)
            source = preparer.loader(run.files, state=run.input_state)
        error = None
        try:
            if score_share(run, source, policy=policy, timer=timer, host=host, log=log, progress=progress,
                           chunk_images=chunk_images, checkpoint_every_s=checkpoint_every_s, stop_after=stop_after,
                           label=f"process {pi}", stop=stop):
                return {"stopped_at": run.done}
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
                run.ckpt.close()  # waits for a pending save
        return finish(run, out_dir, error=error, policy=policy, timer=timer, host=host, log=log)
