"""VGG-16 / VGG-Face in Flax NNX, the architecture the paper explains (Sec. 4).

Layer names equal Oxford's checkpoint (``conv1_1 … conv5_3, fc6, fc7, fc8``) so
converted weights keep their names. The head size comes from the checkpoint
(2622 identities for VGG-Face, 2 for gender, ...). Dropout is omitted: the
models are only ever evaluated. Inputs are NHWC; torch checkpoints flatten
pool5 in C,H,W order, and `torch_fc6_to_nhwc` is the one place that reorders it.
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np
from flax import nnx

from cms_jax.models.base import FaceModel, make_preprocess

# (block, number of 3x3 convs) of VGG-16.
_BLOCKS = ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
CONV_NAMES = tuple(f"conv{b}_{i}" for b, n in _BLOCKS for i in range(1, n + 1))
FC_NAMES = ("fc6", "fc7", "fc8")

VGG_FACE_MEAN = (129.186279296875, 104.76238250732422, 93.59396362304688)  # RGB, 0-255
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, 0-1
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class VGGConfig:
    """Shape of a VGG-16; the defaults are VGG-Face."""

    num_classes: int = 2622           # fc8 width, set by the checkpoint
    input_size: tuple[int, int] = (224, 224)
    in_channels: int = 3
    widths: tuple[int, ...] = (64, 128, 256, 512, 512)  # conv width of each of the 5 blocks
    fc_width: int = 4096              # fc6 / fc7 width

    @property
    def pool5_hw(self) -> tuple[int, int]:
        # Five 2x2/2 max pools, floor division (VALID), as in torch and MatConvNet.
        h, w = self.input_size
        for _ in range(5):
            h, w = h // 2, w // 2
        if h < 1 or w < 1:
            raise ValueError(f"VGG input {self.input_size} is too small for five 2x2 pools")
        return h, w

    def to_dict(self) -> dict:
        return {"num_classes": self.num_classes, "input_size": list(self.input_size),
                "in_channels": self.in_channels, "widths": list(self.widths), "fc_width": self.fc_width}

    @classmethod
    def from_dict(cls, d: dict) -> "VGGConfig":
        return cls(num_classes=int(d["num_classes"]), input_size=tuple(d["input_size"]),
                   in_channels=int(d["in_channels"]), widths=tuple(d["widths"]), fc_width=int(d["fc_width"]))


TINY = VGGConfig(num_classes=2, input_size=(32, 32), widths=(4, 8, 8, 16, 16), fc_width=32)


class VGG16(nnx.Module):
    """VGG-16 with Oxford's layer names; ``__call__`` returns logits (no softmax)."""

    def __init__(self, config: VGGConfig, *, rngs: nnx.Rngs):
        self.config = config
        cin = config.in_channels
        for (block, n), width in zip(_BLOCKS, config.widths):
            for i in range(1, n + 1):
                setattr(self, f"conv{block}_{i}", nnx.Conv(cin, width, (3, 3), padding=1, rngs=rngs))
                cin = width
        h, w = config.pool5_hw
        self.fc6 = nnx.Linear(h * w * cin, config.fc_width, rngs=rngs)
        self.fc7 = nnx.Linear(config.fc_width, config.fc_width, rngs=rngs)
        self.fc8 = nnx.Linear(config.fc_width, config.num_classes, rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        """conv1_1 … conv5_3 (ReLU'd), before pool5: the usual Grad-CAM layer."""
        for block, n in _BLOCKS:
            if block > 1:
                x = nnx.max_pool(x, (2, 2), strides=(2, 2))
            for i in range(1, n + 1):
                x = jax.nn.relu(getattr(self, f"conv{block}_{i}")(x))
        return x

    def head(self, a: jax.Array) -> jax.Array:
        """pool5, NHWC flatten (H,W,C order), fc6-fc8."""
        a = nnx.max_pool(a, (2, 2), strides=(2, 2))
        a = a.reshape(a.shape[0], -1)
        a = jax.nn.relu(self.fc6(a))
        a = jax.nn.relu(self.fc7(a))
        return self.fc8(a)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(self.features(x))


def torch_fc6_to_nhwc(weight: np.ndarray, channels: int, hw: tuple[int, int]) -> np.ndarray:
    """Torch fc6 weight (out, C*H*W) -> Flax kernel (H*W*C, out).

    The single place where torch's C,H,W flatten of pool5 is reordered to the
    NHWC flatten (H,W,C) that `VGG16.head` uses.
    """
    out = weight.shape[0]
    h, w = hw
    if weight.shape[1] != channels * h * w:
        raise ValueError(f"fc6.weight has {weight.shape[1]} inputs, expected C*H*W = "
                         f"{channels}*{h}*{w} = {channels * h * w}")
    chw = weight.reshape(out, channels, h, w)
    return np.ascontiguousarray(chw.transpose(2, 3, 1, 0).reshape(h * w * channels, out))


def abstract_vgg(config: VGGConfig):
    """(graphdef, abstract pure-dict params) without allocating weights."""
    model = nnx.eval_shape(lambda: VGG16(config, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(model)
    return graphdef, nnx.to_pure_dict(state)


def init_vgg(config: VGGConfig, seed: int = 0) -> dict:
    """Random pure-dict params: LeCun-normal kernels, small random biases.

    Drawn with numpy from the ``eval_shape`` tree: compiling Flax's random
    initialisers takes tens of seconds on a small CPU, numpy takes milliseconds.
    """
    rng = np.random.default_rng(seed)
    _, abstract = abstract_vgg(config)

    def draw(path, leaf):
        if path[-1].key == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            return rng.normal(0.0, 1.0 / np.sqrt(fan_in), leaf.shape).astype(np.float32)
        return rng.normal(0.0, 0.01, leaf.shape).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, abstract)


def vgg_face_model(params: dict, config: VGGConfig, *, name: str = "vgg_face", class_names=None,
                   normalisation: dict | None = None, colour: str = "RGB", crop_policy: str = "tight",
                   crop_margin: float = 0.25) -> FaceModel:
    """Wrap VGG params into a `FaceModel`.

    Args:
      params: pure-dict params matching `config` (e.g. from a converter or Orbax).
      config: the VGG shape.
      name: model name.
      class_names: K names; default 'class_0' … .
      normalisation: {'scale', 'mean', 'std'}; default VGG-Face's (0-255 RGB minus mean).
      colour: 'RGB' | 'BGR' | 'GRAY'.
      crop_policy, crop_margin: see `FaceModel`.

    Returns:
      The `FaceModel` (logits; ``outputs_are_probs=False``).
    """
    graphdef, _ = abstract_vgg(config)
    norm = normalisation or {"scale": 1.0, "mean": list(VGG_FACE_MEAN), "std": [1.0, 1.0, 1.0]}
    names = tuple(class_names) if class_names else tuple(f"class_{i}" for i in range(config.num_classes))
    if len(names) != config.num_classes:
        raise ValueError(f"{name}: {len(names)} class names for fc8 of width {config.num_classes}")

    def apply_fn(p, x):
        return nnx.merge(graphdef, p)(x)

    def features_fn(p, x):
        return nnx.merge(graphdef, p).features(x)

    def head_fn(p, a):
        return nnx.merge(graphdef, p).head(a)

    return FaceModel(
        name=name, apply_fn=apply_fn, params=params, input_size=tuple(config.input_size),
        channels=config.in_channels, class_names=names, crop_policy=crop_policy, crop_margin=crop_margin,
        preprocess=make_preprocess(colour, norm["scale"], norm["mean"], norm["std"]),
        features_fn=features_fn, head_fn=head_fn)


def tiny_vgg(num_classes: int = 2, input_size: int = 32, seed: int = 0) -> FaceModel:
    """The tiny twin of VGG-Face: same code path, few channels, small input (tests)."""
    config = dataclasses.replace(TINY, num_classes=num_classes, input_size=(input_size, input_size))
    return vgg_face_model(init_vgg(config, seed), config, name="tiny", crop_policy="tight", crop_margin=0.1,
                          normalisation={"scale": 1.0, "mean": list(VGG_FACE_MEAN), "std": [1.0, 1.0, 1.0]})
