"""mini-XCEPTION (and other small Keras graphs) in Flax NNX, built from a Keras ``model_config``.

The gender and expression models the paper's method is run on beside VGG are
Keras 2.0.5 functional models. `KerasGraph` rebuilds such a graph layer by
layer (Conv2D, SeparableConv2D, BatchNormalization, Activation, Add,
MaxPooling2D, GlobalAveragePooling2D, plus AveragePooling2D/Dense/Flatten/Dropout
for plain VGG-style graphs such as keras-vggface) with the Keras
layer names as parameter names, and evaluates it in the file's topological order.
TF 'same' padding equals XLA's 'SAME' (extra pad after), so no manual padding.
"""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cms_jax import convs

_ACTIVATIONS = {
    "linear": lambda x: x, "relu": jax.nn.relu, "softmax": lambda x: jax.nn.softmax(x, axis=-1),
    "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh,
}


class SeparableConv(nnx.Module):
    """Keras SeparableConv2D: depthwise (strided) then 1x1 pointwise; bias on the pointwise."""

    def __init__(self, cin, filters, kernel, strides, padding, mult, use_bias, *, rngs):
        self.depthwise = nnx.Conv(cin, cin * mult, kernel, strides=strides, padding=padding,
                                  feature_group_count=cin, use_bias=False, rngs=rngs)
        self.pointwise = nnx.Conv(cin * mult, filters, (1, 1), use_bias=use_bias, rngs=rngs)
        self.strides, self.padding = tuple(strides), padding

    def __call__(self, x):
        # One function decides how a depthwise conv runs on each backend (cms_jax.convs).
        return self.pointwise(convs.depthwise_conv(x, self.depthwise.kernel[...], self.strides, self.padding))


def _out_len(n: int, k: int, s: int, padding: str) -> int:
    """Spatial output length of a conv/pool, TF rules: 'same' ceil(n/s), 'valid' floor((n-k)/s)+1."""
    return -(-n // s) if padding == "same" else (n - k) // s + 1


def _act(name: str):
    if name not in _ACTIVATIONS:
        raise ValueError(f"unsupported Keras activation {name!r} (supported: {sorted(_ACTIVATIONS)})")
    return _ACTIVATIONS[name]


class KerasGraph(nnx.Module):
    """A Keras functional model as an NNX module; parameters are named like the Keras layers."""

    def __init__(self, model_config: dict, *, rngs: nnx.Rngs):
        cfg = model_config["config"]
        # Shapes (without batch) are tracked so Flatten -> Dense gets its input width.
        spec, shapes = [], {}
        for layer in cfg["layers"]:
            kind, name, c = layer["class_name"], layer["name"], layer["config"]
            inputs = tuple(n[0] for n in layer["inbound_nodes"][0]) if layer["inbound_nodes"] else ()
            shp = shapes[inputs[0]] if inputs else None
            cin = shp[-1] if shp else None
            if kind == "InputLayer":
                shapes[name] = tuple(c["batch_input_shape"][1:])
            elif kind in ("Conv2D", "SeparableConv2D"):
                dilated = tuple(c.get("dilation_rate", (1, 1))) != (1, 1)
                if dilated or c.get("data_format", "channels_last") != "channels_last":
                    raise ValueError(f"Keras layer {name}: only channels_last, undilated convolutions are supported")
                pad = c["padding"].upper()
                if kind == "Conv2D":
                    mod = nnx.Conv(cin, c["filters"], tuple(c["kernel_size"]), strides=tuple(c["strides"]),
                                   padding=pad, use_bias=c["use_bias"], rngs=rngs)
                else:
                    mod = SeparableConv(cin, c["filters"], tuple(c["kernel_size"]), tuple(c["strides"]), pad,
                                        c.get("depth_multiplier", 1), c["use_bias"], rngs=rngs)
                setattr(self, name, mod)
                hw = [_out_len(n, k, s, c["padding"]) for n, k, s in zip(shp[:2], c["kernel_size"], c["strides"])]
                shapes[name] = (*hw, c["filters"])
            elif kind == "BatchNormalization":
                if c.get("axis", -1) not in (-1, 3):
                    raise ValueError(f"Keras layer {name}: BatchNormalization axis {c['axis']} unsupported")
                setattr(self, name, nnx.BatchNorm(cin, use_running_average=True, epsilon=c["epsilon"],
                                                  use_bias=c.get("center", True), use_scale=c.get("scale", True),
                                                  rngs=rngs))
                shapes[name] = shp
            elif kind == "Dense":
                setattr(self, name, nnx.Linear(cin, c["units"], use_bias=c["use_bias"], rngs=rngs))
                shapes[name] = (c["units"],)
            elif kind in ("MaxPooling2D", "AveragePooling2D"):
                strides = c.get("strides") or c["pool_size"]
                hw = [_out_len(n, k, s, c["padding"]) for n, k, s in zip(shp[:2], c["pool_size"], strides)]
                shapes[name] = (*hw, cin)
            elif kind == "GlobalAveragePooling2D":
                shapes[name] = (cin,)
            elif kind == "Flatten":
                shapes[name] = (int(np.prod(shp)),)  # Keras channels_last: (H, W, C) order, as NHWC reshape
            elif kind in ("Activation", "Add", "Dropout"):
                shapes[name] = shp
            else:
                raise ValueError(f"Keras layer {name}: class {kind} is not supported")
            small = {k: c[k] for k in ("activation", "pool_size", "strides", "padding") if k in c}
            spec.append((kind, name, inputs, json.dumps(small, sort_keys=True)))
        self.spec = tuple(spec)
        self.input_name = cfg["input_layers"][0][0]
        self.output_name = cfg["output_layers"][0][0]

    @property
    def logits_name(self) -> str | None:
        """The layer feeding a final softmax Activation (the logits), or None when there is none."""
        for kind, name, inputs, small in self.spec:
            if name == self.output_name and kind == "Activation" and json.loads(small).get("activation") == "softmax":
                return inputs[0]
        return None

    def _layer(self, kind, name, c, xs):
        if kind in ("Conv2D", "SeparableConv2D", "Dense"):
            return _act(c.get("activation", "linear"))(getattr(self, name)(xs[0]))
        if kind == "BatchNormalization":
            return getattr(self, name)(xs[0])
        if kind == "Activation":
            return _act(c["activation"])(xs[0])
        if kind == "Add":
            return sum(xs[1:], xs[0])
        if kind in ("MaxPooling2D", "AveragePooling2D"):
            pool = nnx.max_pool if kind == "MaxPooling2D" else nnx.avg_pool
            strides = tuple(c.get("strides") or c["pool_size"])
            return pool(xs[0], tuple(c["pool_size"]), strides=strides, padding=c["padding"].upper())
        if kind == "GlobalAveragePooling2D":
            return jnp.mean(xs[0], axis=(1, 2))
        if kind == "Flatten":
            return xs[0].reshape(xs[0].shape[0], -1)
        return xs[0]  # Dropout: identity at inference

    def run(self, seed: dict, outputs=None) -> dict:
        """Evaluate every layer reachable from `seed` ({layer name: value}).

        Args:
          seed: starting values, e.g. {input name: x} or {features layer: A}.
          outputs: layer names to return; default the model output.

        Returns:
          {name: value} for `outputs`.
        """
        values = dict(seed)
        for kind, name, inputs, small in self.spec:
            if name in values or kind == "InputLayer":
                continue
            if all(i in values for i in inputs):
                values[name] = self._layer(kind, name, json.loads(small), [values[i] for i in inputs])
        outputs = outputs or [self.output_name]
        missing = [o for o in outputs if o not in values]
        if missing:
            raise ValueError(f"layers {missing} cannot be computed from {sorted(seed)}")
        return {o: values[o] for o in outputs}

    def __call__(self, x):
        return self.run({self.input_name: x})[self.output_name]

    def default_features_layer(self) -> str:
        """CAM layer: the last Add (end of the residual trunk), else the last 4-D conv output."""
        adds = [name for kind, name, _, _ in self.spec if kind == "Add"]
        if adds:
            return adds[-1]
        convs = [name for kind, name, _, _ in self.spec if kind in ("Conv2D", "SeparableConv2D")]
        return convs[-1]
