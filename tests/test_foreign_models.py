"""Bring your own model: PyTorch -> ONNX -> JAX through the converter, cards, embeddings in the main job."""
import json
import os
import shutil

import numpy as np
import pytest

import torch
from torch import nn

from cms_jax import models
from cms_jax.models import foreign
from cms_jax.pipeline import RunConfig, run_job
from converters import torch_onnx
from torch_nets import TinyFaceNet


@pytest.fixture(scope="module")
def facenet(tmp_path_factory):
    torch.manual_seed(0)
    net = TinyFaceNet()
    for m in net.modules():  # non-trivial running statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    out = str(tmp_path_factory.mktemp("facenet") / "tinyfacenet.onnx")
    torch_onnx.export(net, out, input_size=56, card={
        "colour": "RGB", "normalisation": {"scale": 1.0, "mean": [127.5] * 3, "std": [128.0] * 3},
        "crop_policy": "tight", "crop_margin": 0.2})
    return net, out


@pytest.fixture(scope="module")
def faces(tmp_path_factory, shared_dir):
    d = tmp_path_factory.mktemp("faces")
    src = os.path.join(shared_dir, "faces", "celeba_samples", "images")
    names = sorted(os.listdir(src))[:4]
    for n in names:
        shutil.copy(os.path.join(src, n), d / n)
    return str(d), names


def test_torch_module_through_the_converter_equals_torch(facenet):
    net, path = facenet
    m = models.load(path)
    assert (m.output, m.num_outputs, m.input_size, m.jittable) == ("embedding", 128, (56, 56), True)
    assert "tinyfacenet.onnx.card.json" in m.card_note and "backend jax" in m.card_note
    rgb = np.random.default_rng(0).integers(0, 256, (3, 56, 56, 3)).astype(np.uint8)
    x = m.preprocess(rgb)
    with torch.no_grad():
        ref = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    got = np.asarray(m.apply_fn(m.params, x))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * np.abs(ref).max())


def test_card_defaults_are_read_from_the_graph_and_stated(facenet, tmp_path):
    _, path = facenet
    bare = str(tmp_path / "bare.onnx")
    shutil.copy(path, bare)  # no card beside it
    m = models.load(bare)
    assert m.output == "embedding"  # 128 unnamed outputs
    assert m.card_note.startswith("no card; from the graph or defaults:") and "colour=RGB" in m.card_note
    with open(bare + ".card.json", "w") as f:
        json.dump({"class_names": ["a", "b"]}, f)
    with pytest.raises(ValueError, match="2 class_names for 128 outputs"):
        models.load(bare)
    with open(bare + ".card.json", "w") as f:
        json.dump({"colur": "BGR"}, f)
    with pytest.raises(ValueError, match=r"unknown card fields \['colur'\]"):
        models.load(bare)


def test_embedding_model_in_the_main_job(facenet, faces, tmp_path):
    """Self-cosine CMS, then per-identity references (leave-one-out): a real, meaningful map."""
    _, path = facenet
    folder, names = faces
    s = run_job(RunConfig(model=path, images=folder, incremental="auto", patch_size=14), str(tmp_path / "self"),
                workers=0,
                show_progress=False)
    assert (s["model_output"], s["images_done"]) == ("embedding", 4)
    probe = s["onnx_backend_probe"]  # the default onnx_backend='auto' timed both runtimes
    assert probe["jax"] > 0 and probe["onnxruntime"] > 0 and probe["probe_copies"] > 0
    assert probe["chosen"] == max(("jax", "onnxruntime"), key=probe.get)
    assert probe["forward"] == {"jax": "incremental", "onnxruntime": "dense"}
    assert s["forward"] == probe["forward"][probe["chosen"]]
    d = np.load(tmp_path / "self" / "drops.npz")
    np.testing.assert_allclose(d["clean"], 1.0, atol=1e-5)  # each image against its own embedding
    assert (d["drops"][d["valid"]] > -1e-5).all()  # cosine to itself can only fall
    assert d["drops"][d["valid"]].max() > 1e-4  # a thousand times float32 rounding of 1 - cos
    cms = np.load(tmp_path / "self" / "cms.npy")
    assert np.isfinite(cms).all() and cms.max() > 0
    # Two identities of two images each: each image's reference is the other image's embedding.
    csv = tmp_path / "ids.csv"
    csv.write_text("file,identity\n" + "".join(f"{n},{'pq'[i // 2]}\n" for i, n in enumerate(names)))
    s2 = run_job(RunConfig(model=path, images=folder, reference=f"csv:{csv}"), str(tmp_path / "ref"),
                 workers=0, show_progress=False)
    d2 = np.load(tmp_path / "ref" / "drops.npz")
    assert s2["images_done"] == 4 and list(d2["files"]) == list(d["files"])
    c = d2["clean"]
    np.testing.assert_allclose([c[0], c[2]], [c[1], c[3]], atol=1e-5)  # cos(a, b) = cos(b, a)
    assert (c < 1 - 1e-4).all()  # not the image itself


def test_headpose_on_the_device_equals_the_host_path():
    dev, host = models.load("headpose"), models.load("headpose", onnx_backend="onnxruntime")
    rgb = np.random.default_rng(1).integers(0, 256, (4, 64, 64, 3)).astype(np.uint8)
    x = dev.preprocess(rgb)
    np.testing.assert_allclose(np.asarray(dev.apply_fn(dev.params, x)), np.asarray(host.apply_fn(host.params, x)),
                               rtol=0, atol=1e-3)  # degrees
    assert dev.jittable and dev.params and not host.params


def test_foreign_backend_is_checked():
    with pytest.raises(ValueError, match="onnx backend must be one of"):
        foreign.load_onnx("x.onnx", backend="tensorrt")


def test_backend_probe_picks_the_faster_runtime_and_says_so(facenet, monkeypatch):
    """Where onnxruntime is faster the job scores with it; --onnx_backend=jax or --incremental keep the device."""
    from cms_jax.models.blackbox import OnnxRunner
    from cms_jax.scoring import backend_probe
    from cms_jax.scoring.scorer import Scorer
    _, path = facenet
    rates = {"jax": 10.0, "onnxruntime": 25.0}
    monkeypatch.setattr(backend_probe, "copies_per_second",
                        lambda b: rates["jax" if b.model.jittable else "onnxruntime"])
    sc = Scorer(RunConfig(model=path, incremental="auto"))
    assert sc.backend_probe["chosen"] == "onnxruntime" and sc.backend_probe["onnxruntime"] == 25.0
    assert (sc.model.jittable, sc.backend.forward) == (False, "dense")
    rates["jax"] = 40.0
    sc = Scorer(RunConfig(model=path, incremental="auto"))
    assert sc.backend_probe["chosen"] == "jax" and (sc.model.jittable, sc.backend.forward) == (True, "incremental")
    assert Scorer(RunConfig(model=path, onnx_backend="jax")).backend_probe is None  # asked for: no probe
    sc = Scorer(RunConfig(model=path, incremental=True))  # a host black box would be refused: device only
    assert list(sc.backend_probe["forward"]) == ["jax"] and sc.backend.forward == "incremental"
    assert backend_probe.is_onnx("headpose") and not backend_probe.is_onnx("gender")
    assert OnnxRunner  # the host runtime the probe builds
