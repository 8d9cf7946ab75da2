"""The fine-tuning loop: a jit-compiled, data-parallel train step, validation, checkpoints.

Minimises the softmax cross-entropy of the task classes (Sec. 4.1.1), or
another loss of `cms_jax.train.losses` (the margin loss of an embedding). Like
the occlusion engine, it runs on a named 1-D ``data`` mesh over the local
devices (`cms_jax.sharding`): each batch is split along its leading axis, the
parameters and optimiser state are replicated, and ``jax.jit`` inserts the
gradient all-reduce. The step compiles once; every batch has the same shape.
"""
from __future__ import annotations

import dataclasses
import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from cms_jax.data.progress import Progress
from cms_jax.sharding import data_mesh, data_sharding, num_shards, pad_to, replicated, round_up
from cms_jax.train import data, losses
from cms_jax.train.checkpoint import TrainCheckpoint


# Cached so that a resumed run in the same process (tests, notebooks) reuses the compiled step.
@functools.lru_cache(maxsize=8)
def make_train_step(graphdef, tx: optax.GradientTransformation, mesh, objective: str = "softmax"):
    """``step(params, opt_state, x, y) -> (params, opt_state, loss)``, jit-compiled with shardings.

    `objective` names a `cms_jax.train.losses.LOSSES` entry (hashable, so the cache keys on it).
    """
    rep, dat = replicated(mesh), data_sharding(mesh)
    loss_fn = functools.partial(losses.LOSSES[objective], graphdef)

    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step, in_shardings=(rep, rep, dat, dat), out_shardings=(rep, rep, rep), donate_argnums=(0, 1))


@functools.lru_cache(maxsize=8)
def make_predict(graphdef, mesh):
    """``predict(params, x) -> argmax classes``, batch split over the mesh."""
    def predict(params, x):
        return jnp.argmax(nnx.merge(graphdef, params)(x), axis=-1)

    return jax.jit(predict, in_shardings=(replicated(mesh), data_sharding(mesh)), out_shardings=data_sharding(mesh))


def accuracy(predict, params, faces: data.FaceSet, preprocess, mesh, batch_size: int = 128) -> float:
    """Fraction of `faces` classified right (NaN for an empty set)."""
    if len(faces) == 0:
        return float("nan")
    b = round_up(min(batch_size, len(faces)), num_shards(mesh))
    right = 0
    for i in range(0, len(faces), b):
        x = preprocess(faces.images[i:i + b])
        n = len(x)
        pred = np.asarray(predict(params, jax.device_put(pad_to(x, b), data_sharding(mesh))))[:n]
        right += int((pred == faces.labels[i:i + n]).sum())
    return right / len(faces)


@dataclasses.dataclass
class TrainResult:
    params: dict          # host numpy params
    step: int             # steps done
    history: list         # one dict per finished epoch: epoch, step, train_loss, val_accuracy
    finished: bool        # False when stopped early by `stop_at`


def train(params, graphdef, tx, train_set: data.FaceSet, val_set: data.FaceSet, preprocess, *, batch_size: int,
          steps: int, seed: int, ckpt_dir: str, fingerprint: dict, flip: bool = True, resume: bool = False,
          checkpoint_every: int = 100, stop_at: int | None = None, mesh=None, stream=None,
          every_s: float = 2.0, objective: str = "softmax", validate=None) -> TrainResult:
    """Fine-tune `params` for `steps` steps, checkpointing, resuming and validating each epoch.

    Args:
      params: initial pure-dict params (host or device).
      graphdef: the network's NNX graphdef (``cms_jax.models.vgg.abstract_vgg(config)[0]``).
      tx: the optax optimiser.
      train_set, val_set: crops and labels.
      preprocess: uint8 (B,H,W,3) -> float32 model input (the model card's).
      batch_size: global batch, a multiple of the device count.
      steps: total optimiser steps of the run.
      seed: data-order and augmentation seed.
      ckpt_dir: Orbax checkpoint folder.
      fingerprint: JSON-able description of the run; a resume must match it exactly.
      flip: random horizontal mirroring (off for tasks where a mirror changes the label, e.g. yaw).
      resume: continue from the latest checkpoint in `ckpt_dir` (which must exist otherwise).
      checkpoint_every: steps between checkpoints (one is always written at the end / at `stop_at`).
      stop_at: stop after this step (checkpointed), as a kill would; None runs to `steps`.
      mesh: the ``data`` mesh (default: all local devices).
      stream: where progress goes (default stderr).
      objective: the `losses.LOSSES` entry minimised.
      validate: ``validate(params) -> {name: value}`` run at the end of each epoch (default
        ``{'val_accuracy': ...}`` of `val_set`; an embedding passes its verification metrics).
    """
    mesh = mesh or data_mesh()
    stream = stream or sys.stderr
    if batch_size % num_shards(mesh):
        raise ValueError(f"batch_size {batch_size} is not a multiple of the {num_shards(mesh)} devices")
    spe = data.steps_per_epoch(len(train_set), batch_size)
    rep = replicated(mesh)
    opt_state = tx.init(params)
    ckpt = TrainCheckpoint(ckpt_dir)
    start, history, sums = 0, [], [0.0, 0]
    if ckpt.latest_step() is not None:
        if not resume:
            ckpt.close()
            raise ValueError(f"{ckpt_dir} holds a checkpoint (step {ckpt.latest_step()}): pass --resume to "
                             f"continue it, or choose a new --out_dir")
        params, opt_state, meta = ckpt.restore(params, opt_state)
        diff = sorted(k for k in set(fingerprint) | set(meta["fingerprint"])
                      if fingerprint.get(k) != meta["fingerprint"].get(k))
        if diff:
            ckpt.close()
            raise ValueError(f"cannot resume {ckpt_dir}: the run differs in {', '.join(diff)} "
                             f"(was {[meta['fingerprint'].get(k) for k in diff]}, now {[fingerprint.get(k) for k in diff]})")
        start, history, sums = int(meta["step"]), list(meta["history"]), list(meta["epoch_loss"])
    elif resume:
        stream.write(f"[finetune] no checkpoint in {ckpt_dir}: starting from step 0\n")
    params, opt_state = jax.device_put(params, rep), jax.device_put(opt_state, rep)
    train_step = make_train_step(graphdef, tx, mesh, objective)
    if validate is None:
        predict = make_predict(graphdef, mesh)

        def validate(p):
            return {"val_accuracy": accuracy(predict, p, val_set, preprocess, mesh)}
    end = steps if stop_at is None else min(stop_at, steps)
    progress = Progress(steps, done=start, label="finetune", unit="steps", stream=stream, every_s=every_s)

    def note() -> str:  # read only when the line is printed
        return f"loss {float(loss):.4f}  {progress.rate * batch_size:.1f} img/s"

    dat = data_sharding(mesh)
    loss = None
    for s in range(start, end):
        x, y = data.train_batch(train_set, preprocess, batch_size, seed, s, flip)
        params, opt_state, loss = train_step(params, opt_state, jax.device_put(x, dat), jax.device_put(y, dat))
        sums = [sums[0] + float(loss), sums[1] + 1]  # float() syncs once a step: cheap next to the step
        progress.update(1, note=note)
        if (s + 1) % spe == 0 or s + 1 == steps:
            metrics = validate(params)
            history.append({"epoch": s // spe, "step": s + 1, "train_loss": sums[0] / max(sums[1], 1), **metrics})
            shown = "  ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in metrics.items())
            stream.write(f"\n[finetune] epoch {s // spe} (step {s + 1}): train loss {history[-1]['train_loss']:.4f}"
                         f"  {shown} ({len(val_set)} faces)\n")
            sums = [0.0, 0]
        if (s + 1) % checkpoint_every == 0 or s + 1 == end:
            ckpt.save(s + 1, params, opt_state, {"step": s + 1, "epoch": (s + 1) // spe, "history": history,
                                                 "epoch_loss": sums, "fingerprint": fingerprint})
    if loss is not None:
        progress.update(0, note=note, force=True)
        progress.close()
    ckpt.close()
    return TrainResult(jax.tree.map(np.asarray, params), max(end, start), history, end >= steps)
