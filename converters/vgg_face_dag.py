"""Convert Oxford's VGG-Face (``vgg_face_dag.pth``) to a Flax `VGG16` checkpoint.

The source keys are ``conv1_1.weight … fc8.bias`` (Albanie's MatConvNet-to-
PyTorch port); fc6 columns are in torch's C,H,W order and are reordered for
the NHWC flatten by `cms_jax.models.vgg.torch_fc6_to_nhwc`. Input: RGB 0-255
minus the VGG-Face mean, 224x224.

  python -m converters.vgg_face_dag --src vgg_face_dag.pth --out runs/vgg_face
"""
from __future__ import annotations

import argparse

import numpy as np

from cms_jax.models import vgg
from cms_jax.models.card import ModelCard
from cms_jax.models.weights import check_tree
from converters import common


def infer_config(sd: dict, key_of: dict[str, str], input_size=(224, 224)) -> vgg.VGGConfig:
    """Head size and widths from the source tensors (defaults where a key is absent)."""
    d = vgg.VGGConfig()

    def rows(layer, default):
        w = sd.get(f"{key_of[layer]}.weight")
        return int(w.shape[0]) if w is not None and len(w.shape) >= 1 else default

    widths = tuple(rows(f"conv{b}_1", dw) for b, dw in zip(range(1, 6), d.widths))
    w11 = sd.get(f"{key_of['conv1_1']}.weight")
    cin = int(w11.shape[1]) if w11 is not None and len(w11.shape) == 4 else 3
    return vgg.VGGConfig(num_classes=rows("fc8", d.num_classes), input_size=tuple(input_size), in_channels=cin,
                         widths=widths, fc_width=rows("fc7", d.fc_width))


def convert_torch_vgg(sd: dict, key_of: dict[str, str], config: vgg.VGGConfig, *, source: str) -> dict:
    """Pure conversion of a torch VGG-16 state dict to `VGG16` pure-dict params.

    Args:
      sd: name -> tensor/array.
      key_of: Flax layer name ('conv1_1', …, 'fc8') -> source prefix ('conv1_1' or 'features.0').
      config: target shape.
      source: name of the source for error messages.

    Returns:
      Nested dict ``{layer: {'kernel', 'bias'}}`` of float32 numpy arrays.

    Raises:
      WeightMismatchError: listing every missing, extra and mis-shaped weight at once.
    """
    _, expected = vgg.abstract_vgg(config)
    wanted = {f"{key_of[l]}.{p}" for l in key_of for p in ("weight", "bias")}
    extra = sorted(set(sd) - wanted)
    params: dict = {}
    for layer, prefix in key_of.items():
        entry = {}
        if f"{prefix}.weight" in sd:
            w = common.to_numpy(sd[f"{prefix}.weight"])
            if layer.startswith("conv") and w.ndim == 4:
                w = w.transpose(2, 3, 1, 0)  # (O,I,kh,kw) -> (kh,kw,I,O)
            elif layer == "fc6" and w.ndim == 2:
                try:
                    w = vgg.torch_fc6_to_nhwc(w, config.widths[-1], config.pool5_hw)
                except ValueError:
                    w = w.T  # wrong width: left as is so check_tree reports it with the others
            elif w.ndim == 2:
                w = w.T  # torch Linear (out, in) -> Flax (in, out)
            entry["kernel"] = np.ascontiguousarray(w)
        if f"{prefix}.bias" in sd:
            entry["bias"] = common.to_numpy(sd[f"{prefix}.bias"])
        params[layer] = entry
    check_tree(expected, params, source=source, extra_source_keys=extra)
    return params


DAG_KEYS = {n: n for n in vgg.CONV_NAMES + vgg.FC_NAMES}


def convert(sd: dict, config: vgg.VGGConfig | None = None) -> tuple[dict, vgg.VGGConfig]:
    """vgg_face_dag state dict -> (params, config); config inferred when not given."""
    config = config or infer_config(sd, DAG_KEYS)
    return convert_torch_vgg(sd, DAG_KEYS, config, source="vgg_face_dag state dict"), config


def card_for(config: vgg.VGGConfig, name: str, source: str, class_names=None,
             crop_policy: str = "tight", crop_margin: float = 0.25) -> ModelCard:
    """VGG-Face card: RGB 0-255 minus the mean; crop policy documented in the README."""
    return ModelCard(
        name=name, architecture="vgg16", config=config.to_dict(), input_size=config.input_size,
        channels=config.in_channels, colour="RGB",
        normalisation={"scale": 1.0, "mean": list(vgg.VGG_FACE_MEAN), "std": [1.0, 1.0, 1.0]},
        crop_policy=crop_policy, crop_margin=crop_margin,
        class_names=tuple(class_names or (f"class_{i}" for i in range(config.num_classes))),
        output="classes", outputs_are_probs=False, source=source)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", required=True, help="vgg_face_dag.pth (a torch state dict)")
    ap.add_argument("--out", required=True, help="output directory (Orbax params + model_card.json)")
    ap.add_argument("--name", default="vgg_face")
    ap.add_argument("--class_names", default=None, help="text file, one class name per line")
    ap.add_argument("--crop_policy", default="tight", choices=("loose", "tight", "whole"))
    ap.add_argument("--crop_margin", type=float, default=0.25)
    ap.add_argument("--input_size", type=int, default=224, help="square input side the fc6 width implies")
    args = ap.parse_args(argv)
    sd = common.load_state_dict(args.src)
    params, config = convert(sd, infer_config(sd, DAG_KEYS, (args.input_size, args.input_size)))
    names = common.read_class_names(args.class_names)
    out = common.save_converted(args.out, params, card_for(config, args.name, args.src, names,
                                                           args.crop_policy, args.crop_margin))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
