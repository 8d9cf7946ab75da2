"""Black-box models: any Python callable on numpy batches, and ONNX models via onnxruntime.

The paper's method needs only the confidence phi(I, c) of Eq. 1, so models
whose weights are out of reach still get CIS/CMS maps. The host function is
wrapped in ``jax.pure_callback``: the result is jit-able (and shardable — XLA
gathers the batch to the host and runs the callback there), so the engine
treats black boxes like Flax models. Slower than a native model: every batch
crosses to the host, and ONNX files with a fixed batch of 1 are run image by image.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cms_jax.models.base import FaceModel, make_preprocess


def host_apply_fn(fn: Callable[[np.ndarray], np.ndarray], num_outputs: int) -> Callable:
    """``apply_fn(params, x)`` that runs `fn` on the host through ``jax.pure_callback``.

    Args:
      fn: numpy (B,H,W,C) float32 -> (B,K) scores; must be pure (same input, same output).
      num_outputs: K.

    Returns:
      A jit-able ``apply_fn(params, x) -> (B,K) float32`` (``params`` is ignored).
    """
    def host(x):
        y = np.asarray(fn(np.asarray(x, np.float32)), np.float32)
        if y.shape != (x.shape[0], num_outputs):
            raise ValueError(f"black-box model returned shape {y.shape}, expected {(x.shape[0], num_outputs)}")
        return y

    def apply_fn(params, x):
        del params
        x = jnp.asarray(x, jnp.float32)
        out = jax.ShapeDtypeStruct((x.shape[0], num_outputs), jnp.float32)
        # Under vmap, one host call per mapped element: the host function only knows (B,H,W,C).
        return jax.pure_callback(host, out, x, vmap_method="sequential")

    return apply_fn


def callable_model(fn: Callable[[np.ndarray], np.ndarray], *, name: str, input_size: tuple[int, int],
                   channels: int, class_names: Sequence[str], preprocess: Callable,
                   crop_policy: str = "tight", crop_margin: float = 0.1, output: str = "classes",
                   outputs_are_probs: bool = False) -> FaceModel:
    """Wrap any numpy batch function as a `FaceModel` (``params = {}``, no CAM layer)."""
    return FaceModel(
        name=name, apply_fn=host_apply_fn(fn, len(class_names)), params={}, input_size=tuple(input_size),
        channels=channels, class_names=tuple(class_names), crop_policy=crop_policy, crop_margin=crop_margin,
        preprocess=preprocess, output=output, outputs_are_probs=outputs_are_probs)


class OnnxRunner:
    """Runs NHWC float32 batches through one or more ONNX models taking NCHW input; averages them.

    Models with a fixed batch dimension are run one image at a time.
    """

    def __init__(self, paths: Sequence[str], threads: int = 0):
        import onnxruntime as ort  # optional dependency, only for ONNX black boxes

        opts = ort.SessionOptions()
        # 0: onnxruntime's default, one thread per core. The engine waits while the host model
        # runs, so the cores are free; one thread (as before) made a MobileFaceNet at 112 px 1.44x
        # slower here (93 vs 134 copies/s, batch 64, 2 cores), FSA-Net 1.08x.
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.paths = list(paths)
        self.sessions = [ort.InferenceSession(p, opts, providers=["CPUExecutionProvider"]) for p in self.paths]
        inp = self.sessions[0].get_inputs()[0]
        self.input_shape = inp.shape  # e.g. [1, 3, 64, 64]
        self.fixed_batch = isinstance(inp.shape[0], int)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        nchw = np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2))
        outs = []
        for s in self.sessions:
            name = s.get_inputs()[0].name
            if self.fixed_batch:
                y = np.concatenate([s.run(None, {name: nchw[i:i + 1]})[0] for i in range(len(nchw))], 0)
            else:
                y = s.run(None, {name: nchw})[0]
            outs.append(np.asarray(y, np.float32).reshape(len(nchw), -1))
        return np.mean(outs, axis=0)


def onnx_model(paths: str | Sequence[str], *, name: str | None = None, class_names: Sequence[str] | None = None,
               colour: str = "RGB", normalisation: dict | None = None, crop_policy: str = "tight",
               crop_margin: float = 0.1, output: str = "classes", outputs_are_probs: bool = False) -> FaceModel:
    """An ONNX model (NCHW input) as a black-box `FaceModel`; several paths are averaged.

    Args:
      paths: one ONNX file or several with the same input and output (their outputs are averaged).
      name: model name (default: the first file's stem).
      class_names: output names (default 'out_0' …).
      colour, normalisation: preprocessing, as in a model card ({'scale', 'mean', 'std'}).
      crop_policy, crop_margin, output, outputs_are_probs: see `FaceModel`.
    """

    from cms_jax.models.flops import HOST_FLOPS, onnx_flops

    paths = [os.fspath(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    runner = OnnxRunner(paths)
    _, c, h, w = runner.input_shape
    k = int(np.prod(runner.sessions[0].get_outputs()[0].shape[1:]))
    names = tuple(class_names) if class_names else tuple(f"out_{i}" for i in range(k))
    norm = normalisation or {"scale": 1.0 / 255.0, "mean": [0.0] * c, "std": [1.0] * c}
    model = callable_model(
        runner, name=name or os.path.splitext(os.path.basename(paths[0]))[0], input_size=(int(h), int(w)),
        channels=int(c), class_names=names,
        preprocess=make_preprocess(colour, norm["scale"], norm["mean"], norm["std"]),
        crop_policy=crop_policy, crop_margin=crop_margin, output=output, outputs_are_probs=outputs_are_probs)
    # Averaged models each run once per image; counted lazily (one profiled run per file).
    HOST_FLOPS[model.apply_fn] = lambda: sum(onnx_flops(p) for p in paths)
    # The engine runs it on the host between device steps, not as a callback inside a sharded
    # program: under 8 devices a callback embedding batch stalled the other devices' all-reduce
    # past XLA:CPU's 40 s rendezvous limit (the process aborted).
    return dataclasses.replace(model, jittable=False)
