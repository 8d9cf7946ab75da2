"""Alignment on real faces: rates, geometry against the canonical mesh, cache.

All 100 CelebA samples and all 588 UTKFace chips are aligned once (2 worker
processes, a cache in a temporary folder, ~5-10 s), and every test reads that
run. Pose angles come from MediaPipe's facial transformation matrix.
"""
import glob
import os
import subprocess
import sys

import numpy as np
import pytest

from cms_jax.align import (LEFT_EYE_OUTER, RIGHT_EYE_OUTER, CanonicalFace, Landmarker,
                           align_files, load_image, similarity_fit, visible_vertices)


@pytest.fixture(scope="module")
def run(shared_dir, tmp_path_factory):
    cache = tmp_path_factory.mktemp("align_cache")
    celeba = sorted(glob.glob(os.path.join(shared_dir, "faces/celeba_samples/images/*.jpg")))
    utk = sorted(glob.glob(os.path.join(shared_dir, "faces/utkface/*.jpg")))
    assert len(celeba) == 100 and len(utk) == 588
    stats = {}
    res = align_files(celeba + utk, workers=2, cache_dir=cache, stats=stats)
    return {"celeba": res[:100], "utk": res[100:], "paths": celeba + utk, "cache": cache,
            "stats": stats, "all": res}


@pytest.fixture(scope="module")
def canon(shared_dir):
    return CanonicalFace.mediapipe()


def _angles(matrix):
    """(yaw, pitch) in degrees from the rotation part of the transformation matrix."""
    r = matrix[:3, :3]
    return (np.degrees(np.arcsin(np.clip(r[0, 2], -1, 1))),
            np.degrees(np.arcsin(np.clip(-r[1, 2], -1, 1))))


def _frontal(results, max_deg):
    return [r for r in results if r.ok and max(map(abs, _angles(r.face.matrix))) < max_deg]


def test_alignment_rates(run):
    n_celeba = sum(r.ok for r in run["celeba"])
    n_utk = sum(r.ok for r in run["utk"])
    assert n_celeba >= 98, n_celeba
    assert n_utk >= 0.97 * 588, n_utk
    assert all(r.reason == "no face" for r in run["all"] if not r.ok)
    assert run["stats"]["detect_calls"] == 688 and run["stats"]["cache_hits"] == 0


def test_landmarks_are_pixels_in_the_image(run):
    for r in run["all"]:
        if r.ok:
            h, w = r.image_hw
            assert r.face.xy.shape == (468, 2) and r.face.xy.dtype == np.float32
            c = r.face.xy.mean(0)  # the face centre lies inside the image
            assert 0 < c[0] < w and 0 < c[1] < h


def _mean_err(xy, canon, iod):
    fit, *_ = similarity_fit(xy, canon)
    return np.linalg.norm(fit[:, :2] - canon[:, :2], axis=1).mean() / iod


@pytest.mark.parametrize("subset", ["celeba", "utk"])
def test_frontal_faces_match_the_canonical_mesh(run, canon, subset):
    """Mean residual after a similarity fit is below 5% of the inter-ocular distance."""
    cv = canon.vertices.astype(np.float64)
    iod = np.linalg.norm(cv[LEFT_EYE_OUTER] - cv[RIGHT_EYE_OUTER])
    # 2-D similarity on near-frontal faces (|yaw|, |pitch| < 5 degrees).
    f5 = _frontal(run[subset], 5)
    assert len(f5) >= 10
    err2 = np.mean([_mean_err(r.face.xy, cv, iod) for r in f5])
    assert err2 < 0.05, err2
    # 3-D similarity (landmark z) absorbs the remaining head rotation, up to 10 degrees.
    f10 = _frontal(run[subset], 10)
    c3 = np.c_[cv, -canon.depth]  # canvas depth grows toward the viewer, MediaPipe z away
    err3 = np.mean([_mean_err(np.c_[r.face.xy, r.face.z], c3, iod) for r in f10])
    assert err3 < 0.05, err3
    # The check can fail: a mirrored canonical face (x flipped) is far worse.
    mirrored = cv * [-1, 1]
    err_m = np.mean([_mean_err(r.face.xy, mirrored, iod) for r in f5])
    assert err_m > 3 * err2, (err_m, err2)


def test_left_eye_on_the_same_side_everywhere(run, canon):
    """No mirror or transpose: the subject's left eye is on the canvas's right, as in images."""
    assert canon.vertices[LEFT_EYE_OUTER, 0] > canon.vertices[RIGHT_EYE_OUTER, 0]
    cv = canon.vertices.astype(np.float64)
    for r in run["all"]:
        if not r.ok:
            continue
        xy = r.face.xy
        assert xy[LEFT_EYE_OUTER, 0] > xy[RIGHT_EYE_OUTER, 0], r.path
        _, _, rot, _ = similarity_fit(xy, cv, allow_reflection=True)
        assert np.linalg.det(rot) > 0, r.path  # best fit to the canonical face is no mirror


def test_turned_heads_hide_the_far_cheek(run, canon):
    """On real faces turned > 20 degrees, vertices of the far side become invisible."""
    plus, minus = canon.pos3[:, 0] > 3, canon.pos3[:, 0] < -3  # subject's left / right cheek
    turned = [r for r in run["all"] if r.ok and abs(_angles(r.face.matrix)[0]) > 20]
    assert len(turned) >= 10
    for r in turned:
        yaw = _angles(r.face.matrix)[0]
        vis = visible_vertices(r.face.xy, canon.triangles, r.face.z)
        far, near = (plus, minus) if yaw > 0 else (minus, plus)
        assert vis[far].mean() < 0.85 and vis[near].mean() > 0.95, (r.path, yaw)


def test_second_run_makes_no_mediapipe_call(run):
    stats = {}
    again = align_files(run["paths"], workers=2, cache_dir=run["cache"], stats=stats)
    assert stats["detect_calls"] == 0 and stats["cache_hits"] == 688
    assert all(r.from_cache for r in again)
    for a, b in zip(run["all"], again):
        assert a.reason == b.reason and a.image_hw == b.image_hw
        if a.ok:
            np.testing.assert_array_equal(a.face.xy, b.face.xy)
            np.testing.assert_array_equal(a.face.matrix, b.face.matrix)


def test_workers_match_in_process(run):
    """A worker process and this process give the same landmarks."""
    r = next(r for r in run["celeba"] if r.ok)
    with Landmarker() as lm:
        face = lm.detect(load_image(r.path))
        assert lm.calls == 1
    np.testing.assert_allclose(face.xy, r.face.xy, atol=1e-3)


def test_unclosed_landmarker_exits_cleanly(shared_dir):
    """A landmarker left open is closed before MediaPipe's thread pool goes away."""
    code = ("import numpy as np; from cms_jax.align import Landmarker; "
            "lm = Landmarker(); lm.detect(np.zeros((64, 64, 3), np.uint8)); print('done')")
    root = os.path.join(os.path.dirname(__file__), "..")
    env = dict(os.environ, PYTHONPATH=os.path.abspath(root))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "done", out.stderr[-2000:]
    assert "Traceback" not in out.stderr and "Exception ignored" not in out.stderr, out.stderr[-2000:]

