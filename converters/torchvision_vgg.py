"""Convert a torchvision-layout VGG-16 state dict to a Flax `VGG16` checkpoint.

Keys ``features.N.{weight,bias}`` (N = the conv positions of ``vgg16``) and
``classifier.{0,3,6}.*`` — the format of the paper's official fine-tuned
models. Input: RGB scaled to 0-1, ImageNet mean/std, 224x224. torchvision's
``AdaptiveAvgPool2d((7, 7))`` is the identity at 224 (pool5 is 7x7), which is
the only size this layout is converted at.

`torch_vgg16` builds that torch module (torchvision is not a dependency) and
`to_torch` fills it with Flax `VGG16` params, the inverse of `convert`: the
paper's PyTorch procedure runs on it in ``experiments/bench_throughput.py``.

  python -m converters.torchvision_vgg --src gender_vgg16.pth --out runs/gender_vgg --class_names names.txt
"""
from __future__ import annotations

import argparse

import numpy as np

from cms_jax.models import vgg
from cms_jax.models.card import ModelCard
from converters import common
from converters.vgg_face_dag import convert_torch_vgg, infer_config

# Positions of the 13 convs in torchvision's vgg16().features (ReLU and pools in between).
_CONV_POS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
TV_KEYS = {**{n: f"features.{i}" for n, i in zip(vgg.CONV_NAMES, _CONV_POS)},
           "fc6": "classifier.0", "fc7": "classifier.3", "fc8": "classifier.6"}


def convert(sd: dict, config: vgg.VGGConfig | None = None) -> tuple[dict, vgg.VGGConfig]:
    """torchvision VGG-16 state dict -> (params, config); config inferred when not given."""
    config = config or infer_config(sd, TV_KEYS)
    if config.pool5_hw != (7, 7):
        raise ValueError(f"torchvision layout needs pool5 7x7 (input 224), got input {config.input_size}: "
                         "its adaptive average pool would not be the identity")
    return convert_torch_vgg(sd, TV_KEYS, config, source="torchvision VGG-16 state dict"), config


def torch_vgg16(config: vgg.VGGConfig):
    """torchvision's ``vgg16()`` module (``features.N``, ``avgpool``, ``classifier.N``) in `config`'s shape.

    The adaptive average pool outputs pool5's own size, so it is the identity at the
    config's input size (torchvision's ``(7, 7)`` at 224). Dropout layers keep their
    places (identity in eval mode), so the state-dict keys are torchvision's.
    """
    import torch
    from torch import nn

    layers, cin = [], config.in_channels
    for (_, n), width in zip(vgg._BLOCKS, config.widths):
        for _ in range(n):
            layers += [nn.Conv2d(cin, width, 3, padding=1), nn.ReLU(inplace=True)]
            cin = width
        layers.append(nn.MaxPool2d(2, 2))
    h, w = config.pool5_hw
    fc = config.fc_width

    class VGG16(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(*layers)
            self.avgpool = nn.AdaptiveAvgPool2d((h, w))
            self.classifier = nn.Sequential(nn.Linear(cin * h * w, fc), nn.ReLU(True), nn.Dropout(),
                                            nn.Linear(fc, fc), nn.ReLU(True), nn.Dropout(),
                                            nn.Linear(fc, config.num_classes))

        def forward(self, x):
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    return VGG16().eval()


def config_of(params: dict, input_size=None) -> vgg.VGGConfig:
    """The `VGGConfig` of Flax `VGG16` params (input size from fc6's width unless given)."""
    k11, k6 = np.shape(params["conv1_1"]["kernel"]), np.shape(params["fc6"]["kernel"])
    widths = tuple(int(np.shape(params[f"conv{b}_1"]["kernel"])[-1]) for b in range(1, 6))
    if input_size is None:
        side = int(round(np.sqrt(k6[0] // widths[-1]))) * 32  # square pool5 of side input // 32
        input_size = (side, side)
    return vgg.VGGConfig(num_classes=int(np.shape(params["fc8"]["kernel"])[-1]), input_size=tuple(input_size),
                         in_channels=int(k11[2]), widths=widths, fc_width=int(k6[-1]))


def to_state_dict(params: dict, config: vgg.VGGConfig) -> dict:
    """Flax `VGG16` params -> torchvision-layout state dict of numpy arrays (the inverse of `convert`)."""
    sd = {}
    for layer, prefix in TV_KEYS.items():
        k = np.asarray(params[layer]["kernel"], np.float32)
        if layer.startswith("conv"):
            k = k.transpose(3, 2, 0, 1)  # (kh,kw,I,O) -> (O,I,kh,kw)
        elif layer == "fc6":  # NHWC flatten (H,W,C) -> torch's (C,H,W)
            (h, w), c = config.pool5_hw, config.widths[-1]
            k = k.reshape(h, w, c, -1).transpose(3, 2, 0, 1).reshape(k.shape[-1], -1)
        else:
            k = k.T  # Flax (in, out) -> torch Linear (out, in)
        sd[f"{prefix}.weight"] = np.ascontiguousarray(k)
        sd[f"{prefix}.bias"] = np.asarray(params[layer]["bias"], np.float32)
    return sd


def to_torch(params: dict, config: vgg.VGGConfig | None = None):
    """A torch `torch_vgg16` module (eval mode) holding Flax `VGG16` params."""
    import torch

    config = config or config_of(params)
    module = torch_vgg16(config)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in to_state_dict(params, config).items()})
    return module


def card_for(config: vgg.VGGConfig, name: str, source: str, class_names=None,
             crop_policy: str = "whole", crop_margin: float = 0.0) -> ModelCard:
    """ImageNet normalisation on 0-1 RGB; default crop 'whole' (the official code feeds whole
    CelebA aligned images resized to 224)."""
    return ModelCard(
        name=name, architecture="vgg16", config=config.to_dict(), input_size=config.input_size,
        channels=config.in_channels, colour="RGB",
        normalisation={"scale": 1.0 / 255.0, "mean": list(vgg.IMAGENET_MEAN), "std": list(vgg.IMAGENET_STD)},
        crop_policy=crop_policy, crop_margin=crop_margin,
        class_names=tuple(class_names or (f"class_{i}" for i in range(config.num_classes))),
        output="classes", outputs_are_probs=False, source=source)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", required=True, help="torchvision-layout VGG-16 .pth state dict")
    ap.add_argument("--out", required=True, help="output directory (Orbax params + model_card.json)")
    ap.add_argument("--name", default="vgg16")
    ap.add_argument("--class_names", default=None, help="text file, one class name per line")
    ap.add_argument("--crop_policy", default="whole", choices=("loose", "tight", "whole"))
    ap.add_argument("--crop_margin", type=float, default=0.0)
    args = ap.parse_args(argv)
    params, config = convert(common.load_state_dict(args.src))
    names = common.read_class_names(args.class_names)
    out = common.save_converted(args.out, params, card_for(config, args.name, args.src, names,
                                                           args.crop_policy, args.crop_margin))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
