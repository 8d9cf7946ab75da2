"""Operator coverage of the ONNX -> JAX converter against jaxonnxruntime on torch exports.

A ResNet-18-style and a MobileFaceNet-style net (random weights, opset 17) are exported with
torch; for each, the operators it uses and those each converter lacks, and the difference of the
two converters' opset-17 operator tables.
"""
from __future__ import annotations

import os
import tempfile

import onnx

from cms_jax.models import onnx_jax


def jaxort():
    """jaxonnxruntime's ``call_onnx`` module and None, or None and the reason it is not there."""
    try:
        from jaxonnxruntime import call_onnx
        from jaxonnxruntime.config_class import config
    except ImportError:
        return None, "n/a: not installed"
    # The FSA-Net Reshape targets come from Shape: refused under the default setting.
    config.update("jaxort_only_allow_initializers_as_static_args", False)
    return call_onnx, None


def torch_models():
    """A ResNet-18-style and a MobileFaceNet-style torch net (random weights, eval mode), with input sides."""
    import torch
    from torch import nn

    def cbr(cin, cout, k, s, groups=1, act=nn.ReLU):
        return [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)] + (
            [act(cout) if act is nn.PReLU else act()] if act else [])

    class Res(nn.Module):
        def __init__(self, cin, cout, s):
            super().__init__()
            self.body = nn.Sequential(*cbr(cin, cout, 3, s), *cbr(cout, cout, 3, 1, act=None))
            self.short = nn.Sequential(*cbr(cin, cout, 1, s, act=None)) if s > 1 else nn.Identity()

        def forward(self, x):
            return torch.relu(self.body(x) + self.short(x))

    resnet = nn.Sequential(*cbr(3, 8, 7, 2), nn.MaxPool2d(3, 2, 1), Res(8, 8, 1), Res(8, 16, 2),
                           nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))

    class Embed(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(*cbr(3, 16, 3, 2, act=nn.PReLU), *cbr(16, 16, 3, 1, 16, nn.PReLU),
                                      *cbr(16, 32, 1, 1, act=nn.PReLU), *cbr(32, 32, 3, 2, 32, nn.PReLU),
                                      *cbr(32, 16, 1, 1, act=None), nn.Conv2d(16, 16, 28, groups=16), nn.Flatten(),
                                      nn.Linear(16, 128))

        def forward(self, x):
            return nn.functional.normalize(self.body(x), dim=1)

    return {"resnet18_style": (resnet.eval(), 48), "mobilefacenet_style": (Embed().eval(), 112)}


def coverage() -> dict:
    """Operators of torch exports (opset 17) that each converter lacks, and the difference of the op tables."""
    try:
        import torch
    except ImportError:
        return {"skipped": "torch not installed"}
    from cms_jax.models.onnx_ops import OPS

    call_onnx, why = jaxort()
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model, size) in torch_models().items():
            path = os.path.join(tmp, f"{name}.onnx")
            with torch.no_grad():
                torch.onnx.export(model, torch.zeros(1, 3, size, size), path, opset_version=17, dynamo=False)
            m = onnx.load(path)
            res[name] = {"ops": sorted({n.op_type for n in m.graph.node}),
                         "onnx_jax_lacks": onnx_jax.unsupported_ops(path)}
            if call_onnx is not None:
                have = call_onnx._get_all_handlers(m.opset_import).get("", {})
                res[name]["jaxonnxruntime_lacks"] = sorted({n.op_type for n in m.graph.node} - set(have))
    if call_onnx is not None:
        have = set(call_onnx._get_all_handlers([onnx.helper.make_opsetid("", 17)]).get("", {}))
        res["opset17_in_onnx_jax_not_jaxonnxruntime"] = sorted(set(OPS) - have)
        res["opset17_in_jaxonnxruntime_not_onnx_jax"] = sorted(have - set(OPS))
    else:
        res["jaxonnxruntime"] = why
    return res
