"""Convert a torchvision-layout VGG-16 state dict to a Flax `VGG16` checkpoint.

Keys ``features.N.{weight,bias}`` (N = the conv positions of ``vgg16``) and
``classifier.{0,3,6}.*`` — the format of the paper's official fine-tuned
models. Input: RGB scaled to 0-1, ImageNet mean/std, 224x224. torchvision's
``AdaptiveAvgPool2d((7, 7))`` is the identity at 224 (pool5 is 7x7), which is
the only size this layout is converted at.

  python -m converters.torchvision_vgg --src gender_vgg16.pth --out runs/gender_vgg --class_names names.txt
"""
from __future__ import annotations

import argparse

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
