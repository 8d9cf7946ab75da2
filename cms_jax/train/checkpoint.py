"""Resumable fine-tuning state: Orbax checkpoints of params, optimiser state and position.

Saved together at each checkpoint step: ``state`` (params, the optimiser
state's leaves as a plain dict, the step) and ``meta`` (JSON: the step, the
epoch and the loss sums of the epoch in progress, the history, and the run's
fingerprint). The data order is a pure function of (seed, step)
(`cms_jax.train.data.batch_indices`), so the step is the whole RNG position:
a run killed at any moment and resumed repeats exactly the batches after the
last checkpoint. Orbax renames a step's folder into place only when it is
complete, so a kill during a save leaves the previous step intact.
"""
from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp


def _host(tree):
    return jax.tree.map(np.asarray, tree)


class TrainCheckpoint:
    """Save / restore ``(params, opt_state, meta)`` under one folder, keeping the last `keep` steps."""

    def __init__(self, directory: str, keep: int = 2):
        self.directory = os.path.abspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False, create=False)
        self._mgr = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def latest_step(self) -> int | None:
        return self._mgr.latest_step()

    def save(self, step: int, params, opt_state, meta: dict) -> None:
        """Write one complete step (blocking: on disk when this returns)."""
        # Optax states are NamedTuples; storing their leaves as a flat dict keeps the
        # checkpoint a plain dict and independent of optax's class names.
        leaves = {f"{i:05d}": np.asarray(l) for i, l in enumerate(jax.tree.leaves(opt_state))}
        state = {"params": _host(params), "opt": leaves, "step": np.asarray(step, np.int64)}
        self._mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     meta=ocp.args.JsonSave(meta)), force=True)
        self._mgr.wait_until_finished()

    def restore(self, params_like, opt_state_like):
        """The latest step as ``(params, opt_state, meta)`` on the host, or None when there is none.

        Args:
          params_like, opt_state_like: trees of the right structure and shapes (fresh initial values).
        """
        step = self._mgr.latest_step()
        if step is None:
            return None
        leaves, treedef = jax.tree.flatten(opt_state_like)
        template = {"params": _host(params_like), "opt": {f"{i:05d}": np.asarray(l) for i, l in enumerate(leaves)},
                    "step": np.asarray(0, np.int64)}
        out = self._mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(template),
                                                              meta=ocp.args.JsonRestore()))
        st = out["state"]
        opt = jax.tree.unflatten(treedef, [np.asarray(st["opt"][f"{i:05d}"]) for i in range(len(leaves))])
        return _host(st["params"]), opt, dict(out["meta"])

    def close(self) -> None:
        self._mgr.close()
