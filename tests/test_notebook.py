"""The notebook API (`cms_jax.explain`, `overlay`, `show`): the main job's numbers, in one call."""
import os

import cv2
import numpy as np
import pytest

import cms_jax
from cms_jax.pipeline import RunConfig, run_job
from cms_jax.models import load
from cms_jax.projection import canonical_map

NAMES = load("tiny").class_names


@pytest.fixture(scope="module")
def photos(tmp_path_factory, celeba_copy):
    """Three CelebA faces and a faceless image."""
    d = tmp_path_factory.mktemp("photos")
    celeba_copy(d, 3)
    cv2.imwrite(str(d / "zz_blank.png"), np.full((120, 100, 3), 128, np.uint8))
    return sorted(str(p) for p in d.iterdir())


@pytest.fixture(scope="module")
def job_and_explained(photos, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("job"))
    cfg = RunConfig(model="tiny", images=",".join(photos), batch_size=256)
    run_job(cfg, out, workers=0, chunk_images=2, checkpoint_every_s=0)
    return out, cms_jax.explain("tiny", photos, batch_size=256)


def test_explain_equals_the_main_job(job_and_explained):
    out, ex = job_and_explained
    job = np.load(os.path.join(out, "drops.npz"))
    files = [str(f) for f in job["files"]]
    assert [f.source for f in ex] == files and len(ex) == 3
    for face, drops, valid in zip(ex, job["drops"], job["valid"]):
        np.testing.assert_array_equal(face.valid, valid)
        np.testing.assert_allclose(face.drops, drops, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ex.cms, np.load(os.path.join(out, "cms.npy")), rtol=0, atol=1e-6)
    assert [(os.path.basename(s["file"]), s["reason"]) for s in ex.skipped] == [("zz_blank.png", "no face")]
    np.testing.assert_array_equal([f.target for f in ex], job["targets"])
    np.testing.assert_allclose([f.clean for f in ex], job["clean"], atol=1e-6)


def test_each_face_carries_its_cis_class_and_confidence(job_and_explained):
    _, ex = job_and_explained
    canon = ex.canon
    for face in ex:
        ref = canonical_map(face.drops, canon.vertices, canon.canvas_hw, face.side, face.valid)  # Eqs. 4-5
        np.testing.assert_allclose(face.cis, ref, atol=1e-7)
        assert face.cis_mask.any() and not face.cis[~face.cis_mask].any()
        assert face.target_name == NAMES[face.target]
        assert 0.0 < face.clean <= 1.0 and face.crop.dtype == np.uint8
    # Eq. 6 (mean): the CMS is the mean of the CIS maps over the faces.
    np.testing.assert_allclose(ex.cms, np.mean([f.cis for f in ex], axis=0), atol=1e-6)
    assert "probability" in ex.unit and "3 faces, 1 skipped" in repr(ex)


def test_an_array_gives_the_numbers_of_its_file(photos, job_and_explained):
    _, ex = job_and_explained
    rgb = cv2.cvtColor(cv2.imread(photos[0]), cv2.COLOR_BGR2RGB)
    one = cms_jax.explain("tiny", rgb, batch_size=256)
    assert [f.source for f in one] == ["array[0]"]
    np.testing.assert_allclose(one[0].drops, ex[0].drops, atol=1e-6)


def test_overlay_draws_a_face_and_the_cms(job_and_explained):
    _, ex = job_and_explained
    photo = cms_jax.overlay(ex[0], size=200)
    canonical = cms_jax.overlay(ex[0], on="canonical", size=256)
    cms = cms_jax.overlay(ex, size=256)
    assert photo.dtype == np.uint8 and photo.shape[1] == 200 and photo.shape[2] == 3
    assert canonical.shape == cms.shape == (256, 256, 3)
    assert photo.std() > 5 and not np.array_equal(canonical, cms)
    with pytest.raises(ValueError, match="canonical face"):
        cms_jax.overlay(ex, on="photo")


def test_bad_calls_say_what_is_wrong(photos):
    with pytest.raises(TypeError, match="unknown option.*patch_sise.*patch_size"):
        cms_jax.explain("tiny", photos[:1], patch_sise=4)
    with pytest.raises(ValueError, match=r"images\[0\] must be a file path or a uint8 \(H, W, 3\) RGB array"):
        cms_jax.explain("tiny", [np.zeros((8, 8), np.float32)])
    with pytest.raises(ValueError, match="no photo could be scored: .*zz_blank.png: no face"):
        cms_jax.explain("tiny", photos[-1:])
    with pytest.raises(ValueError, match="score must be"):
        cms_jax.explain("tiny", photos[:1], score="softmax")
