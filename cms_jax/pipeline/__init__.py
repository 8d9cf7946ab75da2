"""The streaming, resumable, multi-host CMS job (behind ``experiments/cms.py``)."""
from __future__ import annotations

from cms_jax.pipeline.config import RunConfig
from cms_jax.data.failures import FailurePolicy, RunFailed
from cms_jax.pipeline import interrupt
from cms_jax.pipeline.interrupt import Interrupted, guard as catch_signals, resume_command


def default_images() -> str:
    """The CelebA samples of the assets, the README's built-in default."""
    from cms_jax.assets import sample_images
    return str(sample_images())


def init_distributed(num_processes: int = 1, process_id: int = 0, coordinator: str = "") -> None:
    """Join the run's JAX processes: ``coordinator`` 'host:port' of process 0, or 'auto'.

    'auto' lets ``jax.distributed`` find the cluster itself (TPU pods, SLURM, Open MPI,
    Kubernetes JobSets); a single process needs nothing.
    """
    import jax
    if coordinator == "auto":
        jax.distributed.initialize()
    elif num_processes > 1:
        if not coordinator:
            raise ValueError(f"num_processes={num_processes} needs --coordinator=host:port of process 0 "
                             f"(or --coordinator=auto on a TPU pod or cluster)")
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id)


def run_job(cfg: RunConfig, out_dir: str, *, resume: bool = False, overwrite: bool = False, workers: int = 2,
            num_processes: int = 1, process_id: int = 0, coordinator: str = "",
            checkpoint_every_s: float = 30.0, policy: FailurePolicy | None = None, **kw) -> dict | None:
    """Run (one process of) a CMS job; process 0 writes the combined outputs and the report.

    ``overwrite`` replaces a finished or partial run in ``out_dir`` (`overwrite.clear_run`: only a folder
    that holds a run; the landmark cache is kept). Returns the summary on process 0 (or a single
    process), None on the others.

    Raises:
      ValueError: ``resume`` and ``overwrite`` together.
      FileExistsError: ``overwrite`` on a folder that holds files but no run.
      RunFailed: a systematic failure (see `failures`), on every process.
      Interrupted: SIGINT or SIGTERM; what was scored is in a checkpoint (`interrupt`).
    """
    import dataclasses

    import jax

    from cms_jax.pipeline.analysis import analyse
    from cms_jax.pipeline.run import run_cms
    from cms_jax.pipeline.sums import RunSums
    from cms_jax.scoring.scorer import Scorer

    if not cfg.images:
        cfg = dataclasses.replace(cfg, images=default_images())
    if resume and overwrite:
        raise ValueError("--resume continues the run in --out_dir and --overwrite replaces it: give one of them")
    init_distributed(num_processes, process_id, coordinator)
    if overwrite:
        from cms_jax.pipeline import collective
        from cms_jax.pipeline.overwrite import clear_run
        if jax.process_index() == 0:
            clear_run(out_dir)
        collective.wait_for_all("overwrite")  # no process starts before the old run is gone
    with interrupt.guard():  # a signal while the model loads or compiles stops the run at its first chunk
        scorer = Scorer(cfg)  # validates cfg
        sums = RunSums(cfg, scorer.canon)  # the job's: combined over the processes at the end
        summary = run_cms(cfg, out_dir, scorer=scorer, sums=sums, resume=resume, workers=workers,
                          checkpoint_every_s=checkpoint_every_s, policy=policy, **kw)
    if "stopped_at" in summary:
        return summary
    if jax.process_index() != 0:
        return None
    analyse(out_dir, scorer.canon, None, summary, grouping=cfg.groups,  # coverage at drops.npz's sides
            group_maps=sums.group_maps() if cfg.groups else None,
            align_cache=kw.get("align_cache"), compare=cfg.group_compare, truth=cfg.group_truth)
    return summary


def read_run(out_dir, summary: dict | None = None):
    """A finished run's summary.json, cms.npy and drops.npz, through `storage` (`reader.read_run`)."""
    from cms_jax.pipeline.reader import read_run as read
    return read(out_dir, summary)


__all__ = ["RunConfig", "RunFailed", "Interrupted", "catch_signals", "resume_command", "FailurePolicy", "run_job", "read_run",
           "default_images", "init_distributed"]
