"""Face-recognition pair audits (cms_jax.verify) against independent references."""
import collections
import dataclasses
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from cms_jax import models, regions, sources
from cms_jax.engine import OcclusionEngine
from cms_jax.pipeline import RunConfig
from cms_jax.projection import canonical_map
from cms_jax.scoring.scorer import Scorer
from cms_jax.verify import PairSet, draw_pairs, read_pairs
from cms_jax.verify import maps as pm
from cms_jax import roc
from cms_jax.verify.audit import PairAudit, cosine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LFW = ["/d/Ann_Lee_0001.jpg", "/d/Ann_Lee_0002.jpg", "/d/Ann_Lee_0003.jpg", "/d/Bo_Xu_0001.jpg",
       "/d/Bo_Xu_0002.jpg", "/d/Cy_Young_0001.jpg"]


def test_lfw_identity_source():
    assert sources.read("lfw:identity", LFW + ["/d/noname.jpg"]) == ["Ann_Lee"] * 3 + ["Bo_Xu"] * 2 + \
        ["Cy_Young", None]
    with pytest.raises(ValueError, match="identity source"):
        sources.values("lfw:identity")
    with pytest.raises(ValueError, match="one field, identity"):
        sources.parse("lfw:race")


def test_drawn_pairs_are_reproducible_genuine_and_distinct():
    a, b = draw_pairs(LFW, "lfw:identity", 3, seed=1), draw_pairs(LFW, "lfw:identity", 3, seed=1)
    assert (a.probe, a.gallery, a.same.tolist()) == (b.probe, b.gallery, b.same.tolist())
    who = dict(zip(LFW, sources.read("lfw:identity", LFW)))
    assert [who[p] == who[g] for p, g in zip(a.probe, a.gallery)] == a.same.tolist() == [True] * 3 + [False] * 3
    assert len({frozenset(x) for x in zip(a.probe, a.gallery)}) == 6
    with pytest.raises(ValueError, match="give 4 genuine pairs; ask for at most 4"):
        draw_pairs(LFW, "lfw:identity", 5)


def test_pairs_csv_with_and_without_same(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("probe,gallery,same\nAnn_Lee_0001.jpg,Ann_Lee_0002.jpg,1\nAnn_Lee_0001.jpg,Bo_Xu_0001.jpg,0\n")
    p = read_pairs(str(f), LFW)
    assert p.probe == ("/d/Ann_Lee_0001.jpg",) * 2 and p.same.tolist() == [True, False]
    f.write_text("Ann_Lee_0001.jpg,Bo_Xu_0001.jpg\nBo_Xu_0002.jpg,Bo_Xu_0001.jpg\n")
    assert read_pairs(str(f), LFW, "lfw:identity").same.tolist() == [False, True]
    with pytest.raises(ValueError, match="no same column: give --identity"):
        read_pairs(str(f), LFW)
    f.write_text("Ann_Lee_0001.jpg,Zed_0001.jpg,0\n")
    with pytest.raises(ValueError, match=r"1 file\(s\) are not among the 6 images.*Zed_0001"):
        read_pairs(str(f), LFW)


def _brute_tar(gen, imp, far):
    """The best TAR over every threshold whose FAR (accept s > t) is at most far."""
    best = 0.0
    for t in np.concatenate([[-np.inf], gen, imp]):
        if np.mean(imp > t) <= far + 1e-12:
            best = max(best, np.mean(gen > t))
    return best


def _brute_eer(gen, imp):
    rows = [(abs(np.mean(imp > t) - np.mean(gen <= t)), (np.mean(imp > t) + np.mean(gen <= t)) / 2)
            for t in np.concatenate([[-np.inf], gen, imp])]
    return min(rows)[1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tar_at_far_and_eer_equal_a_brute_force_roc(seed):
    rng = np.random.default_rng(seed)
    gen, imp = rng.normal(0.6, 0.2, 300), rng.normal(0.1, 0.2, 2000)
    imp[:5] = imp[5]  # ties
    m = roc.metrics(gen, imp, fars=(1e-2, 1e-3))
    for far in (1e-2, 1e-3):
        r = m[f"tar@far={far:g}"]
        assert r["tar"] == pytest.approx(_brute_tar(gen, imp, far), abs=1e-12)
        assert r["far_achieved"] <= far and r["far_resolved"] == (far * 2000 >= 1)
    assert m["eer"] == pytest.approx(_brute_eer(gen, imp), abs=1e-12)


def test_ablation_drop_is_tar_lost_at_the_clean_threshold():
    rng = np.random.default_rng(3)
    gen, imp = rng.normal(0.7, 0.1, 200), rng.normal(0.0, 0.1, 400)
    r = roc.ablation_drop(gen, imp, gen - 0.5, imp, 0.01, draws=200)
    t = roc.threshold_at_far(imp, 0.01)
    assert r["drop"] == pytest.approx(np.mean(gen > t) - np.mean(gen - 0.5 > t))
    assert r["ci"][0] <= r["drop"] <= r["ci"][1] and r["ci"][0] > 0.3 and r["drop"] > 0.4
    same = roc.ablation_drop(gen, imp, gen, imp, 0.01, draws=50)
    assert same["drop"] == 0 and same["ci"] == [0.0, 0.0]


def test_several_references_score_like_one_at_a_time():
    m = dataclasses.replace(models.load("tiny"), output="embedding", class_names=("a", "b"))
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(3, 32, 32, 3)) * 50).astype(np.float32)
    xy = rng.uniform(4, 28, size=(3, 20, 2))
    refs = rng.normal(size=(3, 4, 2)).astype(np.float32)
    for forward in ("dense", "incremental"):
        eng = OcclusionEngine(m, forward=forward, batch_size=16, patch_size=6)
        multi = eng.run(x, xy, targets=refs)
        assert multi.drops.shape == (3, 20, 4) and multi.clean.shape == (3, 4)
        for r in range(4):
            one = eng.run(x, xy, targets=refs[:, r])
            np.testing.assert_allclose(multi.drops[..., r], one.drops, atol=1e-6)
            np.testing.assert_allclose(multi.clean[:, r], one.clean, atol=1e-6)


@pytest.fixture(scope="module")
def audit(shared_dir):
    files = sorted(os.path.join(shared_dir, "faces", "lfw", n) for n in os.listdir(os.path.join(shared_dir, "faces", "lfw")))[:10]
    scorer = Scorer(RunConfig(model="tiny_embed", images=",".join(files), fill=0.0))
    a = PairAudit(scorer, workers=0)
    pairs = draw_pairs(files, "lfw:identity", 3, seed=0)
    prepared, bad = a.prepare(pairs.images())
    assert not bad
    calls = collections.Counter()
    embed = scorer.backend.embed

    def counted(x):
        calls["rows"] += len(x)
        return embed(x)

    scorer.backend.embed = counted
    emb = a.embed(prepared)
    clean_rows = calls["rows"]
    scores = a.score(pairs, prepared, emb, symmetric=True)
    scorer.backend.embed = embed
    return a, pairs, prepared, emb, scores, clean_rows


def test_each_clean_embedding_is_computed_once(audit):
    a, pairs, prepared, emb, scores, clean_rows = audit
    assert len(set(pairs.probe)) < len(pairs)  # some photo is in several pairs
    assert clean_rows == len(pairs.images()) == len(prepared)
    assert set(a.embed_counts) == set(pairs.images()) and set(a.embed_counts.values()) == {1}


def _hand_cos(model, x, gallery):
    e = np.asarray(model.apply_fn(model.params, x[None]), np.float64)[0]
    return float(e @ gallery / (np.linalg.norm(e) * np.linalg.norm(gallery)))


def test_pair_drops_equal_a_hand_occluded_forward(audit):
    a, pairs, prepared, emb, scores, _ = audit
    model, sz = a.scorer.model, a.scorer.patch
    for k in (0, len(pairs) - 1):  # a genuine and an impostor pair
        p, g = scores.pairs.probe[k], scores.pairs.gallery[k]
        x = model.preprocess(prepared[p].crop[None])[0]
        assert scores.similarity[k] == pytest.approx(_hand_cos(model, x, emb[g].astype(np.float64)), abs=1e-5)
        xy, valid = a.scorer.vertices(prepared[p].xy, prepared[p].z)
        h, w = x.shape[:2]
        for v in np.nonzero(valid)[0][::97]:
            x1, y1 = max(0, math.floor(xy[v, 0] - sz / 2)), max(0, math.floor(xy[v, 1] - sz / 2))
            occ = x.copy()
            occ[y1:min(y1 + sz, h), x1:min(x1 + sz, w)] = 0.0
            want = scores.similarity[k] - _hand_cos(model, occ, emb[g].astype(np.float64))
            assert scores.forward.drops[k, v] == pytest.approx(want, abs=2e-5)
        assert np.abs(scores.forward.drops[k][valid]).max() > 1e-5


def test_symmetric_pair_maps_are_the_mean_of_the_two_directions(audit):
    a, pairs, prepared, emb, scores, _ = audit
    canon = a.scorer.canon
    cis = pm.pair_cis(scores, canon.vertices, canon.canvas_hw)
    for k in range(len(scores.pairs)):
        one = [canonical_map(d.drops[k], canon.vertices, canon.canvas_hw, d.sides[k], d.valid[k])
               for d in (scores.forward, scores.reverse)]
        np.testing.assert_allclose(cis[k], (one[0] + one[1]) / 2, atol=1e-6)
    named = pm.pair_maps(scores, canon)
    same = scores.pairs.same
    np.testing.assert_allclose(named["genuine"], cis[same].mean(0), atol=1e-6)
    np.testing.assert_allclose(named["impostor"], cis[~same].mean(0), atol=1e-6)
    np.testing.assert_allclose(named["genuine_similarity"] + named["genuine_dissimilarity"], named["genuine"],
                               atol=1e-6)
    assert (named["genuine_similarity"] >= 0).all() and (named["impostor_dissimilarity"] <= 0).all()


def test_region_ablation_equals_hand_occluded_regions(audit):
    a, pairs, prepared, emb, scores, _ = audit
    sims = a.region_similarities(scores.pairs, prepared, emb, fill=0.0)
    model = a.scorer.model
    for k in range(len(scores.pairs)):
        p, g = scores.pairs.probe[k], scores.pairs.gallery[k]
        x = model.preprocess(prepared[p].crop[None])[0]
        masks = regions.region_masks(prepared[p].xy[:468], x.shape[:2])
        for r, name in enumerate(regions.REGIONS):
            want = _hand_cos(model, np.where(masks[name][..., None], 0.0, x).astype(np.float32),
                             emb[g].astype(np.float64))
            assert sims[k, r] == pytest.approx(want, abs=1e-5)


def test_verify_smoke_and_one_line_errors(tmp_path, shared_dir):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-m", "experiments.verify", "--smoke", "--workers=0",
                        f"--out_dir={tmp_path}"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    import json
    s = json.loads((tmp_path / "verify.json").read_text())
    assert (s["pairs"]["genuine"], s["pairs"]["impostor"], s["embeddings_per_image"]) == (4, 4, [1])
    assert set(s["regions"]) == set(regions.REGIONS) and s["engine_clean_vs_embedding_max_abs"] < 1e-4
    assert (tmp_path / "genuine.png").exists() and (tmp_path / "difference.png").exists()
    assert "| eyes |" in (tmp_path / "verify.md").read_text()
    h = s["split_half"]  # the halves split the probes' people, so every scored pair is in one half
    assert h["tested"] and sum(h["pairs"]["genuine"]) == 4 and sum(h["pairs"]["impostor"]) == 4
    assert -1.0 <= h["genuine"] <= 1.0 and min(h["people"]) >= 1
    page = (tmp_path / "verify.html").read_text()
    assert "How to read this page" in page and "genuine (n=4 pairs)" in page and "impostor (n=4 pairs)" in page
    assert page.count("<div class='pair'>") == 4 * 4  # most and least similar, genuine and impostor: 4 pairs each
    assert "TAR lost at FAR 0.01 when the region is hidden" in page and "<svg" in page
    assert "shown without a map" in page  # not --symmetric: the gallery has no CIS and the page says so
    bad = subprocess.run([sys.executable, "-m", "experiments.verify", "--model=tiny_embed", "--pairs=auto:0",
                          f"--out_dir={tmp_path / 'x'}", "--workers=0"], capture_output=True, text=True, cwd=ROOT,
                         env=env, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == "verify: error: --pairs=auto:N needs N >= 1, got 0"
    # the main job's --pairs is the same audit: same pairs, same drops as experiments/verify
    job = tmp_path / "job"
    r = subprocess.run([sys.executable, "-m", "experiments.cms", "--pairs=auto:4", "--smoke", "--workers=0",
                        f"--out_dir={job}"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().endswith(f"-> {job}/verify.html")
    a, b = np.load(tmp_path / "pair_drops.npz"), np.load(job / "pair_drops.npz")
    assert list(a["probe"]) == list(b["probe"]) and list(a["gallery"]) == list(b["gallery"])
    np.testing.assert_allclose(a["drops"], b["drops"], atol=1e-6)
    bad = subprocess.run([sys.executable, "-m", "experiments.cms", "--pairs=auto:4", "--smoke", "--workers=0",
                          "--label_from=utkface:gender", f"--out_dir={tmp_path / 'y'}"], capture_output=True,
                         text=True, cwd=ROOT, env=env, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == (
        "cms: error: --pairs: --label_from does not apply to a pair audit (the target of each copy is its "
        "gallery's embedding; one process)")


class _StopAfter:
    """A `StopRequest` whose signal arrives after ``n`` chunks (as SIGTERM would)."""

    def __init__(self, n):
        self.n = n

    def raise_if_set(self, **progress):
        from cms_jax.pipeline import Interrupted
        self.n -= 1
        if self.n == 0:
            raise Interrupted(15, **progress)


def test_a_killed_pair_audit_resumes_from_its_saved_chunks(audit, tmp_path):
    from cms_jax.pipeline import Interrupted
    from cms_jax.verify import VerifyOptions, run_verify

    a, pairs, prepared, *_ = audit
    files = sorted(prepared)
    opts = VerifyOptions(pairs="auto:3", bootstrap=20, permutations=20, chunk_images=2)
    whole = run_verify(a.scorer, files, tmp_path / "whole", opts, workers=0)
    chunks = whole["chunks"]["scored"]
    assert chunks >= 3 and whole["chunks"]["resumed"] == 0
    with pytest.raises(Interrupted) as e:
        run_verify(a.scorer, files, tmp_path / "cut", opts, workers=0, stop=_StopAfter(2))
    assert e.value.resumable and e.value.signum == 15
    assert len(list((tmp_path / "cut" / "pair_chunks").glob("*.npz"))) == 2  # saved before the signal was read
    with pytest.raises(FileExistsError, match="--resume continues it, --overwrite replaces it"):
        run_verify(a.scorer, files, tmp_path / "cut", opts, workers=0)
    other = Scorer(dataclasses.replace(a.scorer.cfg, fill=1.0))
    with pytest.raises(ValueError, match=r"other settings \(fill: 0.0 then, 1.0 now\)"):
        run_verify(other, files, tmp_path / "cut", opts, workers=0, resume=True)
    done = run_verify(a.scorer, files, tmp_path / "cut", opts, workers=0, resume=True)
    assert (done["chunks"]["resumed"], done["chunks"]["scored"]) == (2, chunks - 2)
    x, y = np.load(tmp_path / "whole" / "pair_drops.npz"), np.load(tmp_path / "cut" / "pair_drops.npz")
    for k in ("probe", "gallery", "same", "similarity", "drops", "valid", "sides", "region_similarity"):
        np.testing.assert_array_equal(x[k], y[k])
    assert done["clean"] == whole["clean"]


@pytest.mark.parametrize("net_name", ["TinyFaceNet", "TinyArcFace"])
def test_pair_audit_of_torch_face_nets_through_the_converter(net_name, shared_dir, tmp_path):
    """A MobileFaceNet-style and an ArcFace-style net (random weights) exported by converters/torch_onnx:
    the audit's drops equal torch's own forward on hand-occluded probes."""
    torch = pytest.importorskip("torch")
    import torch_nets
    from converters import torch_onnx
    from cms_jax.verify import VerifyOptions, run_verify

    torch.manual_seed(0)
    net = torch_nets.randomise_batchnorm(getattr(torch_nets, net_name)()).eval()
    path = torch_onnx.export(net, str(tmp_path / f"{net_name}.onnx"), input_size=56, card={
        "colour": "RGB", "normalisation": {"scale": 1.0, "mean": [127.5] * 3, "std": [128.0] * 3},
        "crop_policy": "tight", "crop_margin": 0.2, "output": "embedding"})
    lfw = os.path.join(shared_dir, "faces", "lfw")
    files = [os.path.join(lfw, n) for n in sorted(os.listdir(lfw))[:8]]
    scorer = Scorer(RunConfig(model=path, images=",".join(files), onnx_backend="jax"))
    s = run_verify(scorer, files, tmp_path / "out", VerifyOptions(pairs="auto:2", bootstrap=50, permutations=50),
                   workers=0)
    assert s["embeddings_per_image"] == [1] and s["engine_clean_vs_embedding_max_abs"] < 1e-4
    assert s["pairs"]["genuine"] == s["pairs"]["impostor"] == 2 and not s["skipped"]
    z = np.load(tmp_path / "out" / "pair_drops.npz")
    a = PairAudit(scorer, workers=0)
    probe, gallery = str(z["probe"][0]), str(z["gallery"][0])
    prepared, _ = a.prepare([probe, gallery])

    def torch_embed(x):  # NHWC normalised -> torch's NCHW embedding
        with torch.no_grad():
            return net(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy().astype(np.float64)

    xp, xg = (scorer.model.preprocess(prepared[f].crop[None]) for f in (probe, gallery))
    eg = torch_embed(xg)[0]
    assert z["similarity"][0] == pytest.approx(cosine(torch_embed(xp)[0], eg), abs=1e-4)
    xy, valid = scorer.vertices(prepared[probe].xy, prepared[probe].z)
    sz, vs = scorer.patch, np.nonzero(valid)[0][::60]
    copies = []
    for v in vs:
        x1, y1 = max(0, math.floor(xy[v, 0] - sz / 2)), max(0, math.floor(xy[v, 1] - sz / 2))
        c = xp[0].copy()
        c[y1:y1 + sz, x1:x1 + sz] = 0.0
        copies.append(c)
    want = z["similarity"][0] - cosine(torch_embed(np.stack(copies)), eg[None])
    np.testing.assert_allclose(z["drops"][0, vs], want, atol=3e-6)
    assert np.abs(want).max() > 3e-5  # ten times the tolerance: the squares matter


def test_a_bfloat16_pair_audit_records_its_fidelity_against_float32(audit, tmp_path):
    """Several references per probe give (N, V, R) drops: the bf16 check compares them, padding left out."""
    from cms_jax.verify import VerifyOptions, run_verify
    a, pairs, prepared, *_ = audit
    scorer = Scorer(dataclasses.replace(a.scorer.cfg, dtype="bfloat16"))
    s = run_verify(scorer, sorted(prepared), tmp_path, VerifyOptions(pairs="auto:3", bootstrap=20, permutations=20),
                   workers=0)
    assert s["dtype"] == "bfloat16" and 0.9 < s["bf16_fidelity"] <= 1.0
