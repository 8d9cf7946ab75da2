"""Fig. 15's digital eye make-up (`cms_jax.figures.makeup`): where the paint goes, what it does to
a crop, the paired statistics, and the script on the shipped gender model."""
import json

import cv2
import numpy as np
import pytest

from cms_jax.figures import makeup
from script_runner import PANEL, run_script


@pytest.fixture(scope="module")
def canon_xy(shared_dir):
    from cms_jax.align.canonical import CanonicalFace
    return CanonicalFace.mediapipe(canvas=128).vertices[:468].astype(np.float64)


def test_masks_lie_on_the_eyes_and_on_the_cheeks(canon_xy):
    """The make-up covers the eyes and the lid-to-brow strip; the control the same mass on the cheeks."""
    from cms_jax.regions import region_masks
    hw = (128, 128)
    regions = region_masks(canon_xy, hw)
    eyes, cheeks = makeup.eye_makeup_mask(canon_xy, hw), makeup.cheek_control_mask(canon_xy, hw)
    assert eyes.shape == cheeks.shape == hw and 0 <= eyes.min() and eyes.max() <= 1
    assert eyes.sum() > 20 and cheeks.sum() == pytest.approx(eyes.sum(), rel=0.01)

    def share(mask, names):
        return mask[np.logical_or.reduce([regions[n] for n in names])].sum() / mask.sum()

    ys, xs = np.mgrid[:128, :128]
    idx = [i for side in ("right", "left") for i in makeup.UPPER_LID[side] + makeup.LOWER_LID[side]
           + makeup.BROW_LOWER[side]]
    (x0, y0), (x1, y1) = canon_xy[idx].min(0) - 2, canon_xy[idx].max(0) + 2
    box = (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
    assert eyes[box].sum() / eyes.sum() > 0.99  # between the brows' lower edge and the lower lids
    assert share(eyes, ["eyes"]) > 0.5  # mostly the lids; regions.py gives the lid-brow gap to the cheeks
    assert share(eyes, ["nose", "mouth", "forehead", "outside_face"]) < 0.01
    lowest_lid = canon_xy[[i for side in ("right", "left") for i in makeup.LOWER_LID[side]], 1].max()
    assert cheeks[ys > lowest_lid].sum() / cheeks.sum() > 0.95
    assert cheeks[ys < canon_xy[list(makeup.MOUTH_CENTRE), 1].min()].sum() / cheeks.sum() > 0.99
    assert share(cheeks, ["jaw_and_cheeks"]) > 0.85
    assert share(cheeks, ["eyes", "eyebrows", "mouth"]) < 0.02
    # Each eye gets its own paint: the mask is symmetric about the face's vertical axis.
    mid = canon_xy[:, 0].min() + np.ptp(canon_xy[:, 0]) / 2
    ys, xs = np.nonzero(eyes > 0.1)
    assert (xs < mid).sum() == pytest.approx((xs >= mid).sum(), rel=0.2)


def test_the_control_follows_the_face(canon_xy):
    """Rotating the face rotates both masks with it (down = towards the mouth, not the image's down)."""
    hw = (128, 128)
    rot = cv2.getRotationMatrix2D((64, 64), 90, 1.0)  # counter-clockwise: the mouth points right
    xy_r = canon_xy @ rot[:, :2].T + rot[:, 2]
    for fn in (makeup.eye_makeup_mask, makeup.cheek_control_mask):
        expected = cv2.warpAffine(fn(canon_xy, hw), rot, hw[::-1])
        got = fn(xy_r, hw)
        assert got.sum() == pytest.approx(expected.sum(), rel=0.05), fn.__name__
        blur = [cv2.GaussianBlur(m, (0, 0), 1.5) for m in (got, expected)]  # placement, not line rasterisation
        assert np.abs(blur[0] - blur[1]).sum() / expected.sum() < 0.1, fn.__name__


def test_paint_only_darkens_under_the_mask():
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    mask = np.zeros((16, 16), np.float32)
    mask[4:8, 4:8], mask[10, 10] = 0.5, 1.0
    out = makeup.paint(crop, mask)
    assert out.dtype == np.uint8 and (out <= crop).all()
    np.testing.assert_array_equal(out[mask == 0], crop[mask == 0])
    np.testing.assert_array_equal(out[10, 10], 0)
    np.testing.assert_allclose(out[4:8, 4:8], np.round(crop[4:8, 4:8] * 0.5), atol=0.5)


def test_bad_landmarks_are_named():
    with pytest.raises(ValueError, match=r"\(468, 2\) finite landmarks.*\(10, 2\)"):
        makeup.eye_makeup_mask(np.zeros((10, 2)), (64, 64))
    nan = np.full((468, 2), 30.0)
    nan[5] = np.nan
    with pytest.raises(ValueError, match="finite"):
        makeup.cheek_control_mask(nan, (64, 64))
    with pytest.raises(ValueError, match="0.00 px apart"):
        makeup.eye_makeup_mask(np.full((468, 2), 30.0), (64, 64))


def test_evaluate_counts_and_intervals():
    clean = np.array([0.9, 0.8, 0.6, 0.3, 0.2, 0.1])
    eyes = np.array([0.7, 0.4, 0.7, 0.1, 0.2, 0.0])
    cheeks = np.array([0.9, 0.9, 0.55, 0.3, 0.3, 0.1])
    r = makeup.evaluate(clean, eyes, cheeks, np.array([1, 1, 1, 0, 0, 0], bool))
    m, w = r["man"], r["woman"]
    assert m["faces"] == 3 and w["faces"] == 3 and m["predicted_man"] == 3 and w["predicted_man"] == 0
    assert m["eyes_minus_clean"]["mean"] == pytest.approx((-0.2 - 0.4 + 0.1) / 3)
    assert m["eyes_minus_clean"]["share_fell"] == pytest.approx(2 / 3)
    lo, hi = m["eyes_minus_clean"]["ci95"]
    assert -0.4 - 1e-9 <= lo <= m["eyes_minus_clean"]["mean"] <= hi <= 0.1 + 1e-9
    assert m["eyes_minus_cheeks"]["mean"] == pytest.approx(((0.7 - 0.9) + (0.4 - 0.9) + (0.7 - 0.55)) / 3)
    assert m["flipped_to_woman"] == {"eyes": 1, "cheeks": 0}  # 0.8 -> 0.4 flips; 0.6 -> 0.55 stays 'man'
    assert m["p_man"]["cheeks"] == pytest.approx(2.35 / 3)
    assert w["cheeks_minus_clean"]["mean"] == pytest.approx(0.1 / 3)


def test_the_gender_class_is_found_by_name(shared_dir):
    from cms_jax import models
    model = models.load("gender")
    assert makeup._man_index("utkface:gender", model) == list(model.class_names).index("man")
    with pytest.raises(ValueError, match="matches 0 classes"):
        makeup._man_index("utkface:race", model)


def test_fig15_makeup_smoke(tmp_path, shared_dir):
    """The script's phi(man) of each clean face is the gender model's softmax on that face's crop."""
    from cms_jax import models
    from cms_jax.figures import per_image
    from cms_jax.pipeline import RunConfig

    run_script("fig15_makeup", "--smoke", f"--out_dir={tmp_path}")
    r = json.loads((tmp_path / "fig15_makeup.json").read_text())["models"]["gender"]
    assert 0 < r["faces"] <= 6 and r["man"]["faces"] + r["woman"]["faces"] == r["faces"]
    z = np.load(tmp_path / "fig15_makeup_0.npz")
    files = [str(f) for f in z["files"]]
    model = models.load("gender")
    fm = per_image.FaceMaps(RunConfig(model="gender"), model=model)
    faces, _ = fm.prepare(files)
    x = model.preprocess(np.stack([f.crop for f in faces]))
    logits = np.asarray(model.apply_fn(model.params, x), np.float64)
    probs = logits if model.outputs_are_probs else np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(z["p_man_clean"], probs[:, list(model.class_names).index("man")], atol=1e-5)
    assert (np.abs(z["p_man_eyes"] - z["p_man_clean"]) > 1e-6).all()  # the paint reaches the model
    assert r["mask_mass"]["cheeks"] == pytest.approx(r["mask_mass"]["eyes"], rel=0.02)
    rows = (tmp_path / "fig15_makeup.md").read_text().strip().splitlines()
    assert len(rows) == 2 + sum(r[g]["faces"] > 0 for g in ("man", "woman"))
    im = cv2.imread(str(tmp_path / "fig15_makeup_0.png"))
    assert im is not None and im.shape[1] == 6 * PANEL
