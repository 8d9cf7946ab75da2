"""The streaming, resumable, multi-process CMS job (behind ``experiments/cms.py``)."""
from __future__ import annotations

from cms_jax.pipeline.config import RunConfig


def default_images() -> str:
    """The CelebA samples of the assets, the README's built-in default."""
    from cms_jax.assets import resolve_dir
    return str(resolve_dir("celeba_samples") / "images")


def run_job(cfg: RunConfig, out_dir: str, *, resume: bool = False, workers: int = 2,
            num_processes: int = 1, process_id: int = 0, coordinator: str = "",
            checkpoint_every_s: float = 30.0, merge_timeout_s: float = 3600.0, grouping: str = "",
            **kw) -> dict | None:
    """Run (one process of) a CMS job; on process 0, write the merged outputs and the report.

    Returns the summary on process 0 (or a single process), None on the others.
    """
    import dataclasses

    from cms_jax.pipeline.run import run_cms

    if not cfg.images:
        cfg = dataclasses.replace(cfg, images=default_images())
    if num_processes > 1 and coordinator:
        import jax
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id)
    from cms_jax.pipeline.analysis import analyse
    from cms_jax.pipeline.scoring import Scorer

    cfg.validate()
    scorer = Scorer(cfg)
    summary = run_cms(cfg, out_dir, scorer=scorer, resume=resume, workers=workers, process_index=process_id,
                      process_count=num_processes, checkpoint_every_s=checkpoint_every_s, **kw)
    if "stopped_at" in summary or process_id != 0:
        return summary if process_id == 0 else None
    if num_processes > 1:
        from cms_jax.pipeline.merge import merge_processes
        summary = merge_processes(cfg, scorer, out_dir, num_processes, merge_timeout_s)
    analyse(out_dir, scorer.canon, scorer.coverage(), summary, grouping=grouping)
    return summary


__all__ = ["RunConfig", "run_job", "default_images"]
