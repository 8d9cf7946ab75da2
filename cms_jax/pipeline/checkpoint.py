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

The state arrays go through `NpzHandler` (one ``.npz`` per step, written by
this process), not Orbax's array handlers: those write numpy arrays only on
JAX process 0, so in a multi-host run every other process's steps would be
empty. Each process checkpoints its own share, as its own primary host.
"""
from __future__ import annotations

import dataclasses
import io

import numpy as np
import orbax.checkpoint as ocp
from etils import epath


class NpzHandler(ocp.CheckpointHandler):
    """One step's dict of numpy arrays as ``arrays.npz``, written by whichever process saves it."""

    def save(self, directory: epath.Path, args: "NpzSave") -> None:
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v) for k, v in args.arrays.items()})
        (directory / "arrays.npz").write_bytes(buf.getvalue())

    def restore(self, directory: epath.Path, args: "NpzRestore | None" = None) -> dict[str, np.ndarray]:
        with np.load(io.BytesIO((directory / "arrays.npz").read_bytes())) as z:
            return {k: z[k] for k in z.files}


@ocp.args.register_with_handler(NpzHandler, for_save=True)
@dataclasses.dataclass
class NpzSave(ocp.args.CheckpointArgs):
    arrays: dict


@ocp.args.register_with_handler(NpzHandler, for_restore=True)
@dataclasses.dataclass
class NpzRestore(ocp.args.CheckpointArgs):
    pass


class RunCheckpoint:
    """Save and restore a run's state under ``<out_dir>/checkpoints`` (a folder or an object-store URL)."""

    def __init__(self, directory, keep: int = 2):
        import jax

        self.directory = epath.Path(directory)
        if "://" not in str(directory):
            self.directory = self.directory.absolute()
        me = jax.process_index()
        self.directory.mkdir(parents=True, exist_ok=True)
        # Each process of a multi-host run checkpoints its own share into its own folder: a manager
        # over this process alone, with no cross-process barrier, and handlers that write as this
        # process (by default Orbax's handlers write only on process 0: process 1's steps would be empty).
        mp = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me},
                                                barrier_sync_key_prefix=f"cms_p{me}")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=False, create=False, multiprocessing_options=mp)
        self._mgr = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={"state": NpzHandler(),
                           "meta": ocp.JsonCheckpointHandler(multiprocessing_options=mp)})

    def latest_step(self) -> int | None:
        return self._mgr.latest_step()

    def save(self, step: int, state: dict[str, np.ndarray], meta: dict) -> None:
        """Write one complete step (blocking: it is on disk when this returns)."""
        self._mgr.save(step, args=ocp.args.Composite(
            state=NpzSave({k: np.asarray(v) for k, v in state.items()}),
            meta=ocp.args.JsonSave(meta)), force=True)
        self._mgr.wait_until_finished()

    def restore(self, template: dict[str, np.ndarray]) -> tuple[dict, dict] | None:
        """The latest step's ``(state, meta)``, or None when there is none.

        Raises:
          ValueError: the saved arrays are not the ones ``template`` names (another kind of run).
        """
        step = self._mgr.latest_step()
        if step is None:
            return None
        out = self._mgr.restore(step, args=ocp.args.Composite(
            state=NpzRestore(),
            meta=ocp.args.JsonRestore()))
        state = {k: np.asarray(v) for k, v in out["state"].items()}
        if set(state) != set(template):
            raise ValueError(f"checkpoint step {step} in {self.directory} holds {sorted(state)}, "
                             f"this run keeps {sorted(template)}")
        return state, dict(out["meta"])

    def close(self) -> None:
        self._mgr.close()
