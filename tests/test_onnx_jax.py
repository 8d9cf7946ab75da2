"""ONNX -> JAX conversion (cms_jax.models.onnx_jax) against onnxruntime and torch.

The FSA-Net head-pose files are checked against onnxruntime on real CelebA
faces; a ResNet-18-style and a MobileFaceNet-style torch module with random
weights, exported at opset 17, against torch itself.  The converted ResNet
also goes through incremental inference, which must equal its dense forward.
"""
import os

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from cms_jax import occlusion as occ
from cms_jax.models import onnx_jax


def _faces(shared_dir, n=8, size=64):
    """FSA-Net input: BGR crops resized to 64x64, (x - 127.5) / 128, NHWC."""
    folder = os.path.join(shared_dir, "faces", "celeba_samples", "images")
    bgr = [cv2.resize(cv2.imread(os.path.join(folder, f)), (size, size)) for f in sorted(os.listdir(folder))[:n]]
    return ((np.stack(bgr).astype(np.float32) - 127.5) / 128).astype(np.float32)


@pytest.mark.parametrize("name", ["fsanet-1x1", "fsanet-var"])
def test_fsanet_equals_onnxruntime_on_real_faces(name, shared_dir):
    path = os.path.join(shared_dir, "models", f"{name}.onnx")
    apply_fn, params, info = onnx_jax.convert(path)
    assert (info.input_shape, info.output_dim, info.opset) == ((3, 64, 64), 3, 9)
    assert "Shape" in info.ops and "Reshape" in info.ops
    assert all(v.dtype == jnp.float32 for v in params.values()) and len(params) > 50
    x = _faces(shared_dir)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    want = np.concatenate([sess.run(None, {info.input_name: xi[None].transpose(0, 3, 1, 2)})[0].reshape(1, -1)
                           for xi in x])
    fn = jax.jit(apply_fn)
    got = np.asarray(fn(params, x))
    assert got.shape == (8, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    one = np.concatenate([np.asarray(fn(params, x[i:i + 1])) for i in range(len(x))])
    np.testing.assert_allclose(got, one, atol=1e-5, rtol=0)


class _Block(nn.Module):
    """ResNet BasicBlock: two 3x3 convs with BN, projection shortcut when the shape changes."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.down = None if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class _ResNet(nn.Module):
    def __init__(self, k=5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 7, 2, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        self.blocks = nn.Sequential(_Block(8, 8, 1), _Block(8, 16, 2), _Block(16, 24, 2))
        self.fc = nn.Linear(24, k)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _cbp(cin, cout, k, s, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.PReLU(cout)) if act else nn.Sequential(*layers)


class _Bottleneck(nn.Module):
    """MobileFaceNet bottleneck: 1x1 expand, 3x3 depthwise, linear 1x1 projection, residual at stride 1."""

    def __init__(self, cin, cout, s, t=2):
        super().__init__()
        self.res = s == 1 and cin == cout
        self.body = nn.Sequential(_cbp(cin, cin * t, 1, 1), _cbp(cin * t, cin * t, 3, s, groups=cin * t),
                                  _cbp(cin * t, cout, 1, 1, act=False))

    def forward(self, x):
        return x + self.body(x) if self.res else self.body(x)


class _MobileFaceNet(nn.Module):
    def __init__(self, size=64):
        super().__init__()
        self.body = nn.Sequential(_cbp(3, 16, 3, 2), _cbp(16, 16, 3, 1, groups=16), _Bottleneck(16, 16, 1),
                                  _Bottleneck(16, 24, 2), _Bottleneck(24, 24, 1), _cbp(24, 64, 1, 1))
        side = size // 4
        self.gdc = _cbp(64, 64, side, 1, groups=64, act=False)  # global depthwise conv
        self.gdc[0].padding = (0, 0)
        self.fc, self.bn = nn.Linear(64, 128, bias=False), nn.BatchNorm1d(128)

    def forward(self, x):
        x = torch.flatten(self.gdc(self.body(x)), 1)
        return nn.functional.normalize(self.bn(self.fc(x)), dim=1)


def _randomize(model, seed):
    """Non-trivial BN statistics and PReLU slopes; eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(c, generator=g) * 0.2 + 1)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.2)
        elif isinstance(m, nn.PReLU):
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) * 0.5)
    return model.eval()


def _export(model, size, tmp_path, name):
    """Through the project's PyTorch converter (torch.onnx.export at opset 17, card beside the file)."""
    from converters import torch_onnx
    return torch_onnx.export(model, str(tmp_path / f"{name}.onnx"), input_size=size, opset=17)


def _against_torch(model, size, tmp_path, name):
    apply_fn, params, info = onnx_jax.convert(_export(model, size, tmp_path, name))
    assert info.opset == 17 and info.input_shape == (3, size, size)
    x = np.random.default_rng(0).normal(size=(4, size, size, 3)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    got = np.asarray(jax.jit(apply_fn)(params, x))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), rtol=0)
    return apply_fn, params, info


@pytest.fixture(scope="module")
def resnet_path(tmp_path_factory):
    torch.manual_seed(0)
    return _export(_randomize(_ResNet(), 1), 32, tmp_path_factory.mktemp("onnx"), "resnet")


def test_resnet18_style_export_equals_torch(tmp_path):
    torch.manual_seed(0)
    _, _, info = _against_torch(_randomize(_ResNet(), 1), 48, tmp_path, "resnet")
    assert {"Conv", "MaxPool", "GlobalAveragePool", "Flatten", "Gemm"} <= set(info.ops)


def test_mobilefacenet_style_export_equals_torch(tmp_path):
    torch.manual_seed(1)
    apply_fn, params, info = _against_torch(_randomize(_MobileFaceNet(), 2), 64, tmp_path, "mfn")
    assert {"PRelu", "ReduceL2"} <= set(info.ops) and info.output_dim == 128
    norms = np.linalg.norm(np.asarray(apply_fn(params, np.ones((1, 64, 64, 3), np.float32))), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


@pytest.mark.parametrize("native_batch", [False, True])
def test_incremental_equals_dense_on_a_converted_resnet(resnet_path, native_batch):
    from cms_jax.incremental import Incremental

    apply_fn, params, _ = onnx_jax.convert(resnet_path, native_batch=native_batch)
    h = w = 32
    imgs = jnp.asarray(np.random.default_rng(1).normal(size=(2, h, w, 3)).astype(np.float32))
    xy = np.array([(w / 2, h / 2), (0, 0), (w - 1, h / 2), (w / 2, h - 1), (-1.5, 3), (w + 0.5, h + 0.5)])
    boxes = jnp.asarray(np.concatenate([occ.square_bounds(xy, 5, (h, w))] * 2))
    idx = jnp.asarray(np.repeat(np.arange(2), len(xy)).astype(np.int32))
    inc = Incremental(apply_fn, params, (h, w, 3), 5)
    clean, stack = jax.jit(inc.clean)(params, imgs)
    got = np.asarray(jax.jit(inc.items)(params, stack, idx, boxes, jnp.float32(-0.5)))
    want = np.asarray(apply_fn(params, occ.occlude_batch(imgs[idx], boxes, -0.5)))
    scale = np.abs(want).max()
    np.testing.assert_allclose(np.asarray(clean), np.asarray(apply_fn(params, imgs)), atol=1e-4 * scale)
    np.testing.assert_allclose(got, want, atol=1e-4 * scale)
    assert np.abs(want - np.asarray(apply_fn(params, imgs))[np.asarray(idx)]).max() > 1e-3 * scale
    windowed = sum(how.startswith("win") for _, how in inc.plan)
    # vmap reshapes the batch around every conv (incremental falls back to dense); the native batch does not.
    assert windowed > 3 if native_batch else windowed >= 1
    if native_batch:
        vmapped, _, _ = onnx_jax.convert(resnet_path)
        np.testing.assert_allclose(np.asarray(apply_fn(params, imgs)), np.asarray(vmapped(params, imgs)), atol=1e-6)


def _single_node_model(path, op, opset, consts, shape=(1, 4, 6, 6), outputs=1, **attrs):
    """An image-input graph of one node; its other inputs are initializers (None: omitted)."""
    names, inits = ["x"], []
    for i, v in enumerate(consts):
        names.append("" if v is None else f"c{i}")
        inits += [] if v is None else [onnx.numpy_helper.from_array(np.asarray(v), f"c{i}")]
    outs = [f"y{i}" for i in range(outputs)]
    graph = helper.make_graph([helper.make_node(op, names, outs, **attrs)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


_I, _F = np.int64, np.float32
_W = np.random.default_rng(3).normal(size=(6, 2, 3, 3)).astype(_F)
_SINGLE = [  # (op, opset, constant inputs, attributes): opset forms, pads, pooling modes
    ("Clip", 9, [], dict(min=-0.5, max=0.7)), ("Clip", 13, [_F(-0.3), _F(0.4)], {}), ("Clip", 13, [None, _F(0.4)], {}),
    ("HardSigmoid", 13, [], dict(alpha=0.3, beta=0.4)), ("HardSwish", 14, [], {}), ("LeakyRelu", 13, [], dict(alpha=0.2)),
    ("Erf", 13, [], {}), ("Softmax", 11, [], dict(axis=1)), ("Softmax", 13, [], {}), ("LogSoftmax", 13, [], dict(axis=1)),
    ("ReduceMean", 18, [np.array([2, 3], _I)], {}), ("ReduceSum", 13, [np.array([-1], _I)], dict(keepdims=0)),
    ("ReduceL2", 13, [], dict(axes=[1])), ("LpNormalization", 13, [], dict(axis=1)),
    ("Squeeze", 13, [np.array([0], _I)], {}), ("Unsqueeze", 13, [np.array([0, -1], _I)], {}),
    ("Slice", 9, [], dict(starts=[1], ends=[100], axes=[3])),
    ("Slice", 13, [np.array([1, -1], _I), np.array([3, -6], _I), np.array([1, 3], _I), np.array([1, -2], _I)], {}),
    ("Split", 13, [np.array([1, 3], _I)], dict(axis=1)), ("Split", 18, [], dict(axis=3, num_outputs=2)),
    ("Pad", 11, [np.array([0, 0, 1, 2, 0, 0, 2, 1], _I)], dict(mode="reflect")),
    ("Pad", 13, [np.array([0, 0, 1, -2, 0, 0, 2, 1], _I), _F(0.5)], {}),
    ("AveragePool", 13, [], dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2])),
    ("AveragePool", 13, [], dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2], count_include_pad=1)),
    ("AveragePool", 13, [], dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1, pads=[0, 1, 0, 1])),
    ("AveragePool", 13, [], dict(kernel_shape=[2, 3], strides=[2, 2], auto_pad="SAME_UPPER")),
    ("MaxPool", 13, [], dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    ("MaxPool", 13, [], dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_LOWER")),
    ("MaxPool", 13, [], dict(kernel_shape=[2, 2], dilations=[2, 2], pads=[1, 0, 1, 0])),
    ("Conv", 13, [_W, _W[:, 0, 0, 0]], dict(group=2, strides=[2, 2], auto_pad="SAME_UPPER")),
    ("Conv", 13, [_W[:4, :1]], dict(group=4, strides=[2, 2], dilations=[2, 1], pads=[2, 1, 1, 1])),
    ("Resize", 13, [None, np.array([1, 1, 2, 3], _F)], dict(mode="nearest", coordinate_transformation_mode="asymmetric",
                                                            nearest_mode="floor")),
    ("Resize", 13, [None, np.array([1, 1, 2, 2], _F)], dict(mode="linear",
                                                            coordinate_transformation_mode="pytorch_half_pixel")),
    ("Upsample", 9, [np.array([1, 1, 2, 2], _F)], dict(mode="nearest")),
    ("Gather", 13, [np.array([3, -1, 0], _I)], dict(axis=1)), ("Expand", 13, [np.array([2, 1, 1, 1], _I)], {}),
    ("Tile", 13, [np.array([1, 2, 1, 3], _I)], {}), ("Max", 13, [_F(0.1)], {}), ("GlobalMaxPool", 13, [], {}),
    ("Flatten", 13, [], dict(axis=2)), ("Transpose", 13, [], dict(perm=[0, 2, 3, 1])),
]


@pytest.mark.parametrize("op,opset,consts,attrs", _SINGLE, ids=[f"{c[0]}{c[1]}_{i}" for i, c in enumerate(_SINGLE)])
def test_single_operators_equal_onnxruntime(tmp_path, op, opset, consts, attrs):
    outputs = 2 if op == "Split" else 1
    path = _single_node_model(str(tmp_path / "m.onnx"), op, opset, consts, outputs=outputs, **attrs)
    x = np.random.default_rng(0).normal(size=(1, 4, 6, 6)).astype(np.float32)
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    apply_fn, params, info = onnx_jax.convert(path)
    got = np.asarray(apply_fn(params, x.transpose(0, 2, 3, 1)))
    assert got.shape == (1, want.size)
    np.testing.assert_allclose(got[0], want.reshape(-1), atol=1e-5 * max(1, np.abs(want).max()), rtol=0)


def test_native_batch_is_refused_when_the_graph_bakes_in_batch_1(tmp_path):
    path = _single_node_model(str(tmp_path / "flat.onnx"), "Reshape", 13, [np.array([1, -1], _I)])
    apply_fn, params, info = onnx_jax.convert(path)
    assert apply_fn(params, np.zeros((3, 6, 6, 4), np.float32)).shape == (3, info.output_dim) == (3, 144)
    with pytest.raises(ValueError, match="do not follow the batch"):
        onnx_jax.convert(path, native_batch=True)


def test_unsupported_operators_are_all_named_before_tracing(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    nodes = [helper.make_node("Hardmax", ["x"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("LpPool", ["r"], ["y"], kernel_shape=[1, 1])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 13)])
    path = str(tmp_path / "bad.onnx")
    onnx.save(model, path)
    assert onnx_jax.unsupported_ops(path) == ["Hardmax (opset 13)", "LpPool (opset 13)"]
    with pytest.raises(ValueError, match=r"bad.onnx: unsupported ONNX operators: Hardmax \(opset 13\), "
                                         r"LpPool \(opset 13\); supported: .*Conv"):
        onnx_jax.convert(path)
