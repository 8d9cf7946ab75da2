"""The main job end to end on real faces with the tiny model: outputs, bad inputs, resume rules."""
import dataclasses
import json
import math
import os

import cv2
import jax
import numpy as np
import pytest

from cms_jax.pipeline import RunConfig, run_job


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory, shared_dir, celeba_copy):
    """Five CelebA faces plus three bad files: truncated JPEG, text named .jpg, a faceless image."""
    d = tmp_path_factory.mktemp("images")
    celeba_copy(d, 5)
    src = os.path.join(shared_dir, "faces", "celeba_samples", "images")
    data = open(os.path.join(src, sorted(os.listdir(src))[0]), "rb").read()
    (d / "zz_truncated.jpg").write_bytes(data[: len(data) // 3])
    (d / "zz_text.jpg").write_text("not an image")
    cv2.imwrite(str(d / "zz_blank.png"), np.full((120, 100, 3), 128, np.uint8))
    return str(d)


@pytest.fixture(scope="module")
def finished_run(image_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run"))
    cfg = RunConfig(model="tiny", images=image_dir, batch_size=256)
    summary = run_job(cfg, out, workers=0, chunk_images=3, checkpoint_every_s=0)
    return cfg, out, summary


def test_outputs_have_real_content(finished_run):
    cfg, out, summary = finished_run
    assert summary["images_total"] == 8 and summary["images_done"] == 5
    reasons = {os.path.basename(s["file"]): s["reason"] for s in summary["images_skipped"]}
    assert reasons.keys() == {"zz_truncated.jpg", "zz_text.jpg", "zz_blank.png"}
    assert reasons["zz_blank.png"] == "no face" and reasons["zz_text.jpg"] == "not an image"
    assert reasons["zz_truncated.jpg"] == "truncated"
    assert (summary["forward"], summary["dtype"]) == ("dense", "float32") and "bf16_fidelity" not in summary
    on_disk = json.load(open(os.path.join(out, "summary.json")))
    from cms_jax import models, occlusion
    h = models.load("tiny").input_size[0]
    assert (on_disk["model"], on_disk["patch_size"], on_disk["vertices"], on_disk["canvas"]) == (
        "tiny", occlusion.default_patch_size(h), 468, [cfg.canvas, cfg.canvas])  # 15 px at 224, scaled to h
    assert (on_disk["images_total"], on_disk["images_done"], on_disk["forward"], on_disk["dtype"]) == (
        8, 5, "dense", "float32")
    assert sorted(os.path.basename(x["file"]) for x in on_disk["images_skipped"]) == sorted(reasons)
    assert on_disk["seconds"] > 0 and on_disk["faces_per_second"] == pytest.approx(5 / on_disk["seconds"], rel=1e-2)
    cms = np.load(os.path.join(out, "cms.npy"))
    assert cms.dtype == np.float32 and cms.shape == (cfg.canvas, cfg.canvas) and np.isfinite(cms).all()
    assert np.abs(cms).max() > 0
    png = cv2.imread(os.path.join(out, "cms.png"))
    assert png.shape == (cfg.canvas, cfg.canvas, 3) and png.std() > 10
    d = np.load(os.path.join(out, "drops.npz"))
    assert d["drops"].shape == (5, 468) and len(d["files"]) == 5
    assert d["valid"].sum(1).min() > 300  # frontal CelebA faces: most vertices visible
    # The CMS is the mean of the per-image CIS maps rendered from the stored drops (Eqs. 4-6),
    # recomputed here in plain numpy from the paper's definitions, not with the accumulator.
    assert d["canonical_side"].shape == (5,) and d["canonical_side"].dtype == np.float32
    assert (d["canonical_side"] == d["canonical_side"][0]).all()  # a 'tight' crop: one side for every image
    np.testing.assert_allclose(_numpy_cms(d, cfg.canvas), cms, rtol=1e-5, atol=1e-6)
    assert os.path.exists(os.path.join(out, "report.html"))
    regions = json.load(open(os.path.join(out, "regions.json")))["regions"]["all images"]
    # Each region's share is its part of the CMS's positive mass, recomputed from cms.npy and the masks.
    from cms_jax.regions import region_masks
    pos = np.clip(cms.astype(np.float64), 0, None)
    masks = region_masks(d["canon_xy"][:468], (cfg.canvas, cfg.canvas))
    want = {k: 100.0 * pos[m].sum() / pos.sum() for k, m in masks.items()}
    assert set(regions["share"]) == set(want)
    for k in want:
        assert regions["share"][k] == pytest.approx(want[k], abs=1e-6), k
    assert max(want.values()) < 100.0  # saliency spreads over several regions


def _numpy_cms(d, canvas: int) -> np.ndarray:
    """Eqs. 4-6 by hand: splat each valid vertex's drop on its f x f square (the official
    ``x1 = max(0, floor(x - f/2)); x2 = min(floor(x1 + f), W)``), divide by the count map where
    N > 0, and average the CIS maps over all scored images."""
    total = np.zeros((canvas, canvas))
    for drops, valid, f in zip(d["drops"], d["valid"], d["canonical_side"].astype(np.float64)):
        p_star, n = np.zeros((canvas, canvas)), np.zeros((canvas, canvas))
        for (x, y), v in zip(d["canon_xy"].astype(np.float64)[valid], drops[valid].astype(np.float64)):
            x1, y1 = max(0.0, math.floor(x - f / 2)), max(0.0, math.floor(y - f / 2))
            x2, y2 = min(math.floor(x1 + f), canvas), min(math.floor(y1 + f), canvas)
            p_star[int(y1):int(y2), int(x1):int(x2)] += v
            n[int(y1):int(y2), int(x1):int(x2)] += 1
        total += np.where(n > 0, p_star / np.maximum(n, 1), 0.0)
    return total / len(d["drops"])


def test_drops_written_with_one_scalar_side_are_read_for_loose_and_tight_runs_only(finished_run, tmp_path):
    """drops.npz from before per-image sides (one ``canonical_patch_size``) stays readable where it was exact."""
    from cms_jax.pipeline.reader import canonical_sides
    cfg, out, summary = finished_run
    d = dict(np.load(os.path.join(out, "drops.npz")))
    np.testing.assert_array_equal(canonical_sides(d, summary), d["canonical_side"])
    old = {k: v for k, v in d.items() if k != "canonical_side"} | {"canonical_patch_size": d["canonical_side"][0]}
    np.testing.assert_array_equal(canonical_sides(old, summary), d["canonical_side"])
    with pytest.raises(ValueError, match="'whole'-crop run scored before the sides were per face; rerun it"):
        canonical_sides(old, {**summary, "crop_policy": "whole"})


def test_existing_checkpoint_needs_resume_and_matching_flags(finished_run):
    cfg, out, _ = finished_run
    with pytest.raises(FileExistsError, match="--resume"):
        run_job(cfg, out, workers=0)
    with pytest.raises(ValueError, match=r"patch_size: 0 \(checkpoint\) -> 3 \(now\)"):
        run_job(dataclasses.replace(cfg, patch_size=3), out, workers=0, resume=True)


def test_resume_of_a_finished_run_changes_nothing(finished_run):
    cfg, out, summary = finished_run
    before = np.load(os.path.join(out, "cms.npy"))
    again = run_job(cfg, out, workers=0, resume=True)
    assert again["images_done"] == summary["images_done"]
    np.testing.assert_array_equal(np.load(os.path.join(out, "cms.npy")), before)


@pytest.fixture(scope="module")
def gender_run(image_dir, tmp_path_factory):
    """The gender mini-XCEPTION (separable convs, batch norm, residual adds), dense fp32, 3 faces."""
    out = str(tmp_path_factory.mktemp("gender"))
    cfg = RunConfig(model="gender", images=image_dir, max_images=3, batch_size=512)
    run_job(cfg, out, workers=0, chunk_images=3)
    return cfg, out


def test_gender_run_drops_equal_a_hand_occluded_forward(gender_run):
    """The main job's numbers on a real model: drops of the stored crops' vertices recomputed by hand.

    Each face is cropped as the job did (landmarks from the run's cache), a square is cut out with
    numpy at the official rule around chosen vertices, and the gender model's own forward (the
    converted Keras graph, batch 1, no engine, mesh or occlusion code) gives phi(I) - phi(I_v) of the
    class the job scored: Eq. 1, computed without the pipeline.
    """
    from cms_jax import models
    from cms_jax.data.prepare import FacePreparer

    cfg, out = gender_run
    d, s = np.load(os.path.join(out, "drops.npz")), json.load(open(os.path.join(out, "summary.json")))
    sz = s["patch_size"]
    assert (s["model"], sz, s["score"]) == ("gender", 4, "prob")
    model = models.load("gender")
    assert model.outputs_are_probs  # a softmax head: phi is the output itself
    prep = FacePreparer(model, workers=0, cache_dir=os.path.join(out, "align_cache"))
    try:
        faces = list(prep.imap([str(f) for f in d["files"]]))
    finally:
        prep.close()
    forward = jax.jit(model.apply_fn)  # the model alone, one batch shape
    for i, face in enumerate(faces):
        x = model.preprocess(face.crop[None])[0]
        valid = np.nonzero(d["valid"][i])[0]
        strongest = valid[np.argsort(-np.abs(d["drops"][i, valid]))[:4]]
        picks = np.concatenate([strongest, valid[np.linspace(0, len(valid) - 1, 8).astype(int)]])
        batch = [x]
        for px, py in face.xy[picks]:
            x1, y1 = max(0, math.floor(px - sz / 2)), max(0, math.floor(py - sz / 2))
            occluded = x.copy()
            occluded[y1:y1 + sz, x1:x1 + sz] = cfg.fill  # slicing clips at the border, as min(x1 + sz, W)
            batch.append(occluded)
        probs = np.asarray(forward(model.params, np.stack(batch)))
        c = int(d["targets"][i])
        assert c == int(np.argmax(probs[0])) and abs(float(d["clean"][i]) - probs[0, c]) < 1e-6
        np.testing.assert_allclose(d["drops"][i, picks], probs[0, c] - probs[1:, c], rtol=0, atol=2e-6)
        assert np.abs(d["drops"][i, strongest]).min() > 1e-3  # the strongest drops are real changes
    # each distinct (image, square) was scored once; the counts add up to the vertices scored
    items = s["work_items"]
    assert items["vertices"] == int(d["valid"].sum())
    assert 0 < items["unique"] < items["vertices"] and items["unique"] <= items["computed"]


def test_incremental_scoring_gives_the_dense_drops(gender_run, tmp_path):
    cfg, out = gender_run
    inc = str(tmp_path / "inc")
    summary = run_job(dataclasses.replace(cfg, incremental=True), inc, workers=0, chunk_images=3)
    assert (summary["forward"], summary["dtype"]) == ("incremental", "float32") and "bf16_fidelity" not in summary
    a, b = np.load(os.path.join(out, "drops.npz")), np.load(os.path.join(inc, "drops.npz"))
    assert list(a["files"]) == list(b["files"]) and len(a["files"]) == 3
    np.testing.assert_array_equal(a["targets"], b["targets"])
    assert np.abs(a["drops"]).max() > 1e-3
    np.testing.assert_allclose(b["drops"], a["drops"], rtol=0, atol=1e-5)


def test_bfloat16_run_records_its_fidelity_to_float32(gender_run, tmp_path):
    cfg, out = gender_run
    bf = str(tmp_path / "bf16")
    run_job(dataclasses.replace(cfg, dtype="bfloat16"), bf, workers=0, chunk_images=3)
    s = json.load(open(os.path.join(bf, "summary.json")))
    assert (s["forward"], s["dtype"]) == ("dense", "bfloat16")
    assert 0.9 < s["bf16_fidelity"] <= 1.0
    # Recorded = Pearson of this run's drops with the float32 run's, computed here from the two files
    # (one chunk of 3 faces: the whole run was compared).
    a, b = np.load(os.path.join(out, "drops.npz")), np.load(os.path.join(bf, "drops.npz"))
    np.testing.assert_array_equal(a["targets"], b["targets"])
    keep = a["valid"] & b["valid"]
    assert s["bf16_fidelity"] == pytest.approx(np.corrcoef(a["drops"][keep], b["drops"][keep])[0, 1], abs=1e-6)
    with pytest.raises(ValueError, match=r"dtype: 'float32' \(checkpoint\) -> 'bfloat16' \(now\)"):
        run_job(dataclasses.replace(cfg, dtype="bfloat16"), out, workers=0, resume=True)


def test_approximate_run_records_its_fidelity_to_exact_drops(gender_run, tmp_path):
    cfg, out = gender_run
    ap = str(tmp_path / "approx")
    run_job(dataclasses.replace(cfg, incremental=True, approx_tau=0.5), ap, workers=0, chunk_images=3)
    s = json.load(open(os.path.join(ap, "summary.json")))
    assert (s["forward"], s["config"]["approx_tau"]) == ("incremental", 0.5)
    fid = s["approx_fidelity"]
    # Recorded = this run's drops against the exact float32 run's, computed here from the two files
    # (one chunk of 3 faces: the whole run was compared); tau 0.5 really approximates.
    a, b = np.load(os.path.join(out, "drops.npz")), np.load(os.path.join(ap, "drops.npz"))
    np.testing.assert_array_equal(a["targets"], b["targets"])
    keep = a["valid"] & b["valid"]
    diff = np.abs(a["drops"][keep] - b["drops"][keep])
    assert fid["approx_tau"] == 0.5 and fid["vertices"] == int(keep.sum())
    assert fid["pearson"] == pytest.approx(np.corrcoef(a["drops"][keep], b["drops"][keep])[0, 1], abs=1e-5)
    assert fid["max_abs_diff"] == pytest.approx(diff.max(), abs=1e-5) and diff.max() > 1e-3
    with pytest.raises(ValueError, match=r"approx_tau: 1.0 \(checkpoint\) -> 0.5 \(now\)"):
        run_job(dataclasses.replace(cfg, approx_tau=0.5, incremental=True), out, workers=0, resume=True)
    with pytest.raises(ValueError, match=r"approx_tau=0.5 approximates incremental inference; --noincremental"):
        run_job(dataclasses.replace(cfg, approx_tau=0.5), str(tmp_path / "dense"), workers=0)


def test_incremental_refuses_a_black_box_model():
    from cms_jax.models.blackbox import callable_model
    from cms_jax.models.base import make_preprocess
    from cms_jax.scoring.scorer import Scorer
    box = callable_model(lambda x: np.ones((len(x), 2), np.float32), name="hostbox", input_size=(32, 32),
                         channels=3, class_names=("a", "b"), preprocess=make_preprocess("RGB", 1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match=r"model 'hostbox'.*black box.*Drop --incremental"):
        Scorer(RunConfig(model="hostbox", incremental=True), model=box)
    auto = Scorer(RunConfig(model="hostbox", incremental="auto"), model=box)  # the main job's default
    assert auto.backend.forward == "dense" and "black box" in auto.backend.forward_note
    assert Scorer(RunConfig(model="tiny", incremental="auto")).backend.forward == "incremental"
    with pytest.raises(ValueError, match="incremental must be True, False or 'auto'"):
        RunConfig(incremental="yes").validate()
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'bfloat16'"):
        RunConfig(dtype="float16").validate()


def test_a_chunk_that_fails_to_score_costs_only_its_bad_image(finished_run):
    """Scoring is retried image by image; the bad image is reported, the rest are kept."""
    from cms_jax.data.prepare import FacePreparer
    from cms_jax.scoring.scorer import Scorer
    cfg, out, _ = finished_run
    scorer = Scorer(cfg)
    prep = FacePreparer(scorer.model, workers=0)
    items = list(prep.imap(sorted(os.path.join(cfg.images, f) for f in os.listdir(cfg.images))[:3]))
    prep.close()
    items[1].crop = np.zeros((1, 1, 3), np.uint8)  # a crop of the wrong size: the chunk cannot be stacked
    res, failed = scorer.score(items, [None] * 3)
    assert [os.path.basename(f) for f in res.files] == [os.path.basename(items[0].path), os.path.basename(items[2].path)]
    assert len(failed) == 1 and failed[0]["file"] == items[1].path and "scoring failed" in failed[0]["reason"]


def test_whole_crops_give_each_image_the_canonical_side_of_its_face(tmp_path, shared_dir):
    """Issue 15: a ``whole`` crop resizes the whole image, so the face fills a different part of each input.

    A CelebA photo and the same photo padded with a grey border to twice its size, through a ``whole``-crop
    model: the face spans about half as many input rows in the padded one, so its canonical side
    f_i = sz * (face rows on the canvas) / (face rows in its input) is about twice the photo's (the paper's
    f = sz * H_F / H_I gave both the same). The run's CMS is the mean of the two CIS maps splatted by hand,
    in numpy loops, each at its own side; figures and the report read the same sides back.
    """
    from cms_jax import models
    from cms_jax.align.canonical import CanonicalFace
    from cms_jax.figures import common
    from cms_jax.pipeline.analysis import analyse
    from cms_jax.data.prepare import FacePreparer
    from cms_jax.pipeline.run import run_cms
    from cms_jax.scoring.scorer import Scorer
    from cms_jax.projection import paper_canonical_side, splat

    src = os.path.join(shared_dir, "faces", "celeba_samples", "images")
    bgr = cv2.imread(os.path.join(src, sorted(os.listdir(src))[0]))
    h, w = bgr.shape[:2]
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a_photo.png"), bgr)
    cv2.imwrite(str(images / "b_padded.png"), cv2.copyMakeBorder(bgr, h // 2, h - h // 2, w // 2, w - w // 2,
                                                                 cv2.BORDER_CONSTANT, value=(128, 128, 128)))
    model = dataclasses.replace(models.load("tiny"), crop_policy="whole")
    cfg = RunConfig(model="tiny", images=str(images), batch_size=256)
    out, cache = str(tmp_path / "run"), str(tmp_path / "cache")
    summary = run_cms(cfg, out, scorer=Scorer(cfg, model=model), workers=0, align_cache=cache, show_progress=False)
    d = np.load(os.path.join(out, "drops.npz"))
    assert [os.path.basename(f) for f in d["files"]] == ["a_photo.png", "b_padded.png"]
    sides = d["canonical_side"]
    assert sides.dtype == np.float32 and sides.shape == (2,)

    # By hand: the face's rows in each crop (the job's landmarks, from its cache) against the canvas's.
    prep = FacePreparer(model, workers=0, cache_dir=cache)
    try:
        faces = list(prep.imap([str(f) for f in d["files"]]))
    finally:
        prep.close()
    canon = CanonicalFace.mediapipe(canvas=cfg.canvas)
    sz = summary["patch_size"]
    assert sz == 2
    want = [sz * np.ptp(canon.vertices[:, 1]) / np.ptp(face.xy[:, 1]) for face in faces]
    np.testing.assert_allclose(sides, want, rtol=1e-6)
    assert 1.8 < sides[1] / sides[0] < 2.2  # half the face rows in the input: twice the side
    old = paper_canonical_side(sz, cfg.canvas, model.input_size[0])  # the old rule: 16 px for both
    assert abs(sides[0] - old) > 1 and abs(sides[1] - old) > 1
    assert summary["canonical_side"] == pytest.approx({"min": want[0], "median": np.mean(want), "max": want[1]},
                                                      rel=1e-6)

    # The CMS (Eq. 6) is the mean of Algorithm 1's lines 8-14 at each image's own side.
    hf, wf = canon.canvas_hw
    cis = []
    for drops, valid, f in zip(d["drops"], d["valid"], sides.astype(np.float64)):
        p, n = np.zeros((hf, wf)), np.zeros((hf, wf))
        for (cx, cy), s in zip(canon.vertices[valid], drops[valid]):
            x1, y1 = max(0, math.floor(cx - f / 2)), max(0, math.floor(cy - f / 2))
            x2, y2 = min(math.floor(x1 + f), wf), min(math.floor(y1 + f), hf)
            p[y1:y2, x1:x2] += s
            n[y1:y2, x1:x2] += 1
        cis.append(np.where(n > 0, p / np.maximum(n, 1), 0.0))
    assert np.abs(cis[0] - cis[1]).max() > 1e-3 and np.abs(d["drops"]).max() > 1e-4
    np.testing.assert_allclose(np.load(os.path.join(out, "cms.npy")), np.mean(cis, axis=0), rtol=0, atol=1e-6)

    # What reads the run back uses the same sides: a figure's Run and the report's analysis.
    run = common.load_run(out)
    np.testing.assert_array_equal(run.sides, sides)
    ones = np.ones(len(canon.vertices), np.float32)
    np.testing.assert_array_equal(run.coverage, np.logical_or(*[splat(ones, canon.vertices, (hf, wf), float(f))[1] > 0
                                                                for f in sides]))
    res = analyse(out, canon, None, summary, align_cache=cache)
    assert sum(res["regions"]["all images"]["share"].values()) == pytest.approx(100.0, abs=1e-6)
