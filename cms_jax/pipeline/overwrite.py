"""``--overwrite``: replace a finished or partial run in its output folder.

Only a folder that holds a run (its ``summary.json``, ``checkpoints/`` or
``drops_parts/``, or a multi-process run's ``process_NNN/``) is cleared, and
everything in it goes except the landmark cache (``align_cache/``: keyed by
file content and landmarker, so it is valid for any run). A folder without a
run is refused, so a mistyped ``--out_dir`` never deletes a user's files.
"""
from __future__ import annotations

from cms_jax import storage

_RUN_MARKS = ("summary.json", "checkpoints", "drops_parts")
KEPT = ("align_cache",)


def holds_run(out_dir) -> bool:
    """Whether ``out_dir`` holds (part of) a cms_jax run."""
    out = storage.path(out_dir)
    if not out.exists():
        return False
    return any((out / m).exists() for m in _RUN_MARKS) or any(
        p.name.startswith("process_") for p in out.iterdir())


def clear_run(out_dir) -> list[str]:
    """Delete the run in ``out_dir`` (all but `KEPT`); returns the names removed.

    Raises:
      FileExistsError: ``out_dir`` holds files but no run.
    """
    out = storage.path(out_dir)
    if not out.exists() or not any(True for _ in out.iterdir()):
        return []
    if not holds_run(out_dir):
        raise FileExistsError(f"--overwrite: {out_dir} holds files but no cms_jax run (no summary.json, "
                              f"checkpoints/ or drops_parts/); refusing to delete them; choose another --out_dir")
    removed = []
    for p in sorted(out.iterdir(), key=lambda q: q.name):
        if p.name in KEPT:
            continue
        p.rmtree() if p.is_dir() else p.unlink()
        removed.append(p.name)
    return removed
