"""Preemption-safe run state: Orbax checkpoints of the accumulator and of what is done.

The state saved together, atomically, at each checkpoint step:
  * ``state``: the CMS accumulator (``sum`` of CIS maps, ``count``, and the
    per-group sums) and ``next_index``, the number of images of this process's
    share that are either accumulated or recorded as skipped;
  * ``meta`` (JSON): the run config and its fingerprint, the Grain loader's
    iterator state (where the next image comes from), the committed per-image
    drop shards, the skipped images with their reasons, timings.
Orbax writes a step into a temporary folder and renames it when complete, so
a ``kill -9`` at any moment leaves the previous step intact: a resumed run
redoes at most the images after it, and counts none twice.
"""
from __future__ import annotations

import numpy as np
import orbax.checkpoint as ocp
from etils import epath


class RunCheckpoint:
    """Save and restore a run's state under ``<out_dir>/checkpoints`` (a folder or an object-store URL)."""

    def __init__(self, directory, keep: int = 2):
        import jax

        self.directory = epath.Path(directory)
        if "://" not in str(directory):
            self.directory = self.directory.absolute()
        me = jax.process_index()
        self.directory.mkdir(parents=True, exist_ok=True)
        # Each process of a multi-host run checkpoints its own shard into its own folder:
        # a manager over this process alone, with no cross-process barrier.
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=False, create=False,
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                primary_host=me, active_processes={me}, barrier_sync_key_prefix=f"cms_p{me}"))
        self._mgr = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "meta"))

    def latest_step(self) -> int | None:
        return self._mgr.latest_step()

    def save(self, step: int, state: dict[str, np.ndarray], meta: dict) -> None:
        """Write one complete step (blocking: it is on disk when this returns)."""
        self._mgr.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave({k: np.asarray(v) for k, v in state.items()}),
            meta=ocp.args.JsonSave(meta)), force=True)
        self._mgr.wait_until_finished()

    def restore(self, template: dict[str, np.ndarray]) -> tuple[dict, dict] | None:
        """The latest step's ``(state, meta)``, or None when there is none."""
        step = self._mgr.latest_step()
        if step is None:
            return None
        out = self._mgr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore({k: np.asarray(v) for k, v in template.items()}),
            meta=ocp.args.JsonRestore()))
        return {k: np.asarray(v) for k, v in out["state"].items()}, dict(out["meta"])

    def close(self) -> None:
        self._mgr.close()
