"""PyTorch face models into the JAX path: ``torch.nn.Module`` or TorchScript -> ONNX (+ card) -> JAX.

The module is exported with ``torch.onnx.export`` (batch 1, NCHW, eval mode)
and written with a card beside it (``<out>.card.json``: input size, colour
order, normalisation, crop policy, class names, output kind), so
``cms_jax.models.load(out)`` and ``--model=out`` give a `FaceModel` whose
graph runs as a JAX function on the device (`cms_jax.models.onnx_jax`),
with incremental inference. Needs the ``convert`` extra (torch).

  python -m converters.torch_onnx --torchscript=mobilefacenet.pt --input_size=112 --out=models/mfn.onnx \
      --output=embedding --colour=RGB --scale=1 --mean=127.5 --std=128
  python -m converters.torch_onnx --module=mypkg.nets:ResNet18 --weights=resnet18_gender.pth \
      --input_size=112 --out=models/gender_r18.onnx --class_names=woman,man --crop_policy=loose --crop_margin=0.6
"""
from __future__ import annotations

import argparse
import importlib
import json
import os

from cms_jax.models.foreign import CARD_SUFFIX


def export(module, out: str, *, input_size: int | tuple[int, int], channels: int = 3, card: dict | None = None,
           opset: int = 17) -> str:
    """Export ``module`` (an ``nn.Module`` or TorchScript module) to ``out`` (.onnx) and its card.

    Args:
      module: the model; put in eval mode here (BatchNorm statistics, no dropout).
      out: the .onnx path; the card goes to ``out + '.card.json'``.
      input_size: H (square) or (H, W) of the model input.
      channels: C of the NCHW input.
      card: card fields (see `cms_jax.models.foreign`); ``input_size`` is added.
      opset: ONNX opset of the export.

    Returns:
      ``out``.
    """
    import torch

    h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    module.eval()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(module, (torch.zeros(1, channels, h, w),), out, opset_version=opset,
                          input_names=["input"], output_names=["output"], dynamo=False)
    with open(out + CARD_SUFFIX, "w") as f:
        json.dump({**(card or {}), "input_size": [h, w]}, f, indent=1)
    return out


def load_module(spec: str = "", weights: str = "", torchscript: str = ""):
    """A module from ``package.module:Class`` (+ a state dict) or a TorchScript file."""
    import torch

    if torchscript:
        return torch.jit.load(torchscript, map_location="cpu")
    mod, _, cls = spec.partition(":")
    if not mod or not cls:
        raise ValueError(f"--module={spec!r}: expected package.module:Class")
    net = getattr(importlib.import_module(mod), cls)()
    if weights:
        state = torch.load(weights, map_location="cpu")
        net.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
    return net


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--module", default="", help="package.module:Class (built with no arguments)")
    ap.add_argument("--weights", default="", help="state dict (.pt/.pth) for --module")
    ap.add_argument("--torchscript", default="", help="a TorchScript file instead of --module")
    ap.add_argument("--input_size", type=int, required=True)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--out", required=True, help="the .onnx file to write (its card goes beside it)")
    ap.add_argument("--output", default=None, choices=("classes", "regression", "embedding"))
    ap.add_argument("--class_names", default=None, help="comma-separated output names")
    ap.add_argument("--colour", default="RGB", choices=("RGB", "BGR", "GRAY"))
    ap.add_argument("--scale", type=float, default=1.0 / 255.0)
    ap.add_argument("--mean", type=float, default=0.0)
    ap.add_argument("--std", type=float, default=1.0)
    ap.add_argument("--crop_policy", default="tight", choices=("loose", "tight", "whole"))
    ap.add_argument("--crop_margin", type=float, default=0.2)
    ap.add_argument("--opset", type=int, default=17)
    a = ap.parse_args(argv)
    card = {"colour": a.colour, "crop_policy": a.crop_policy, "crop_margin": a.crop_margin,
            "normalisation": {"scale": a.scale, "mean": [a.mean] * a.channels, "std": [a.std] * a.channels}}
    if a.output:
        card["output"] = a.output
    if a.class_names:
        card["class_names"] = a.class_names.split(",")
    out = export(load_module(a.module, a.weights, a.torchscript), a.out, input_size=a.input_size,
                 channels=a.channels, card=card, opset=a.opset)
    from cms_jax import models
    m = models.load(out)
    print(f"wrote {out} and {out + CARD_SUFFIX}: {m.name}, {m.output} with {m.num_outputs} outputs, "
          f"input {m.input_size}; run it with: python -m experiments.cms --model={out}")


if __name__ == "__main__":
    main()
