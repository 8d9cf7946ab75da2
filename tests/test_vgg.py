"""VGG-16 / VGG-Face in Flax against torch, in both checkpoint layouts.

Reference models are built here in torch with random weights (the Oxford
``vgg_face_dag`` layout and the torchvision ``features.N`` layout), converted,
and compared on random inputs. One parity runs at the real 224x224 VGG-16
layout (pool5 7x7, fc6 25088 wide); the others use the same layer structure
with few channels so the suite stays fast on 2 cores.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import torch
from torch import nn

from cms_jax import models
from cms_jax.models import vgg
from cms_jax.models.weights import WeightMismatchError
from converters import torchvision_vgg, vgg_face_dag

SMALL = vgg.VGGConfig(num_classes=5, input_size=(64, 64), widths=(8, 16, 16, 32, 32), fc_width=48)


class TorchVGGFaceDag(nn.Module):
    """Oxford's vgg_face_dag layout: named convs, view-flatten (C,H,W) before fc6."""

    def __init__(self, c: vgg.VGGConfig):
        super().__init__()
        cin = c.in_channels
        for (block, n), width in zip(vgg._BLOCKS, c.widths):
            for i in range(1, n + 1):
                setattr(self, f"conv{block}_{i}", nn.Conv2d(cin, width, 3, padding=1))
                cin = width
        h, w = c.pool5_hw
        self.fc6 = nn.Linear(cin * h * w, c.fc_width)
        self.fc7 = nn.Linear(c.fc_width, c.fc_width)
        self.fc8 = nn.Linear(c.fc_width, c.num_classes)

    def forward(self, x):
        for block, n in vgg._BLOCKS:
            for i in range(1, n + 1):
                x = torch.relu(getattr(self, f"conv{block}_{i}")(x))
            x = nn.functional.max_pool2d(x, 2, 2)
        x = x.reshape(x.shape[0], -1)
        return self.fc8(torch.relu(self.fc7(torch.relu(self.fc6(x)))))


# torchvision 0.x ``vgg16().state_dict()`` keys, written out: the layout the converter must read.
TORCHVISION_KEYS = [f"features.{i}.{p}" for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
                    for p in ("weight", "bias")] + [f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")]


def _he_init(module: nn.Module, seed: int) -> nn.Module:
    """He-normal weights and non-zero biases: logits of order 1, so 1e-4 is a tight tolerance."""
    torch.manual_seed(seed)
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.normal_(layer.bias, 0.0, 0.1)
    return module.eval()


def _torch_logits(module, x_nhwc):
    with torch.no_grad():
        return module(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy())).numpy()


def test_vgg_face_param_count_exact():
    def count(config):  # from the abstract tree: nothing allocated
        return int(sum(np.prod(p.shape) for p in jax.tree.leaves(vgg.abstract_vgg(config)[1])))
    assert count(vgg.VGGConfig(num_classes=2622)) == 145_002_878
    assert count(vgg.VGGConfig(num_classes=1000)) == 138_357_544  # torchvision vgg16


def test_vgg_face_dag_parity_and_checkpoint_roundtrip(tmp_path):
    ref = _he_init(TorchVGGFaceDag(SMALL), 0)
    params, config = vgg_face_dag.convert(ref.state_dict(), dataclasses.replace(SMALL))
    assert config == SMALL
    x = np.random.default_rng(0).normal(0, 1, (2, 64, 64, 3)).astype(np.float32)
    want = _torch_logits(ref, x)
    model = vgg.vgg_face_model(params, config)
    got = np.asarray(jax.jit(model.apply_fn)(model.params, x))
    assert np.std(want) > 0.1  # the comparison is not between two near-zero vectors
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    # The same fc6 read without the C,H,W -> H,W,C reorder gives other logits: the reorder matters.
    wrong = {**params, "fc6": {**params["fc6"], "kernel": ref.fc6.weight.detach().numpy().T}}
    assert np.abs(np.asarray(model.apply_fn(wrong, x)) - want).max() > 1e-3
    # features/head split reproduces the full forward.
    a = model.features_fn(model.params, x)
    assert a.shape == (2, 4, 4, 32)
    np.testing.assert_allclose(np.asarray(model.head_fn(model.params, a)), got, atol=1e-5)
    # The CLI (torch.load weights_only, Orbax + card) gives a directory that loads to the same model.
    torch.save(ref.state_dict(), tmp_path / "small.pth")
    vgg_face_dag.main(["--src", str(tmp_path / "small.pth"), "--out", str(tmp_path / "m"), "--input_size", "64"])
    loaded = models.load(tmp_path / "m")
    assert loaded.input_size == (64, 64) and loaded.crop_policy == "tight"
    np.testing.assert_allclose(np.asarray(loaded(jnp.asarray(x))), got, atol=1e-5)


def test_torchvision_parity_full_vgg16_224():
    ref = _he_init(torchvision_vgg.torch_vgg16(vgg.VGGConfig(num_classes=10)), 1)
    sd = ref.state_dict()
    assert sorted(sd) == sorted(TORCHVISION_KEYS)
    assert tuple(sd["features.28.weight"].shape) == (512, 512, 3, 3) and tuple(sd["classifier.0.weight"].shape) == (
        4096, 25088)
    params, config = torchvision_vgg.convert(sd)
    assert config.input_size == (224, 224) and config.num_classes == 10 and vgg.VGGConfig().widths == config.widths
    rgb = np.random.default_rng(1).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
    card = torchvision_vgg.card_for(config, "tv", "test")
    model = vgg.vgg_face_model(params, config, normalisation=card.normalisation)
    x = model.preprocess(rgb)
    np.testing.assert_allclose(x[0, 0, 0], (rgb[0, 0, 0] / 255.0 - np.array(vgg.IMAGENET_MEAN)) /
                               np.array(vgg.IMAGENET_STD), rtol=1e-5)
    want = _torch_logits(ref, x)
    got = np.asarray(jax.jit(model.apply_fn)(model.params, x))
    assert np.std(want) > 0.1
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_torchvision_cli_writes_a_model_with_the_torch_logits(tmp_path):
    """``python -m converters.torchvision_vgg``: .pth in, a model directory out that loads with its card."""
    config = vgg.VGGConfig(num_classes=3, widths=(4, 8, 8, 16, 16), fc_width=32)  # 224 px: pool5 7x7, few channels
    ref = _he_init(torchvision_vgg.torch_vgg16(config), 2)
    assert sorted(ref.state_dict()) == sorted(TORCHVISION_KEYS)
    torch.save(ref.state_dict(), tmp_path / "tv.pth")
    (tmp_path / "names.txt").write_text("female\nmale\n\nother\n")
    torchvision_vgg.main(["--src", str(tmp_path / "tv.pth"), "--out", str(tmp_path / "m"), "--name", "tvsmall",
                          "--class_names", str(tmp_path / "names.txt"), "--crop_policy", "loose",
                          "--crop_margin", "0.2"])
    m = models.load(tmp_path / "m")
    assert (m.name, m.input_size, m.channels, m.class_names) == ("tvsmall", (224, 224), 3, ("female", "male", "other"))
    assert (m.crop_policy, m.crop_margin, m.outputs_are_probs) == ("loose", 0.2, False)
    rgb = np.random.default_rng(3).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    x = ((rgb / 255.0 - np.array(vgg.IMAGENET_MEAN)) / np.array(vgg.IMAGENET_STD)).astype(np.float32)
    want = _torch_logits(ref, x)  # torch on the ImageNet-normalised image, computed here
    got = np.asarray(m(jnp.asarray(m.preprocess(rgb))))  # the card's preprocessing, then JAX
    assert np.std(want) > 0.1
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    # The inverse (the torch port bench_throughput times) gives the source state dict back.
    back = torchvision_vgg.to_state_dict(m.params, torchvision_vgg.config_of(m.params))
    for k, v in ref.state_dict().items():
        np.testing.assert_array_equal(back[k], v.numpy(), err_msg=k)


def test_mismatched_state_dict_gives_one_error_naming_all():
    torch.manual_seed(0)
    sd = dict(TorchVGGFaceDag(SMALL).state_dict())
    del sd["conv3_1.bias"]                       # missing
    sd["fc9.weight"] = torch.zeros(3, 3)         # extra
    sd["conv2_2.weight"] = torch.zeros(16, 16, 5, 5)  # mis-shaped
    with pytest.raises(WeightMismatchError) as err:
        vgg_face_dag.convert(sd, SMALL)
    msg = str(err.value)
    assert "1 missing, 1 extra, 1 mis-shaped" in msg
    assert "missing: conv3_1/bias" in msg
    assert "extra: fc9.weight" in msg
    assert "mis-shaped: conv2_2/kernel got (5, 5, 16, 16), expected (3, 3, 16, 16)" in msg


def test_tiny_twin_contract():
    m = models.tiny_vgg(num_classes=3, input_size=32, seed=0)
    assert (m.input_size, m.channels, m.class_names) == ((32, 32), 3, ("class_0", "class_1", "class_2"))
    x = m.preprocess(np.full((2, 32, 32, 3), 128, np.uint8))
    assert x.dtype == np.float32 and x.shape == (2, 32, 32, 3)
    y = jax.jit(m.apply_fn)(m.params, x)
    assert y.shape == (2, 3) and y.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(m.head_fn(m.params, m.features_fn(m.params, x))), np.asarray(y), atol=1e-6)
    other = models.tiny_vgg(num_classes=3, seed=1)
    assert np.abs(np.asarray(other(x)) - np.asarray(y)).max() > 1e-4


def test_flops_cost_analysis_matches_closed_form():
    config = vgg.VGGConfig()  # full VGG-Face at 224: lowered with abstract weights, never compiled
    _, abstract = vgg.abstract_vgg(config)
    model = vgg.vgg_face_model(abstract, config)
    counted = models.flops(model)
    assert abs(counted / models.vgg_flops(config) - 1) < 0.002, (counted, models.vgg_flops(config))
    assert 30.9e9 < models.vgg_flops(config, count_padding=True) < 31.0e9  # the textbook figure
