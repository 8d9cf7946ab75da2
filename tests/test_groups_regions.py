"""Per-group CMS, the permutation test, facial regions and the HTML report."""
import numpy as np
import pytest

from cms_jax import groups as grp
from cms_jax import regions, sources
from cms_jax.pipeline.report import write_report


def test_utkface_names_parse():
    files = ["/x/25_0_2_2017.jpg.chip.jpg", "40_1_0_2017.jpg.chip.jpg", "bad.jpg", "93_1_20170110.jpg"]
    assert sources.read("utkface:race", files) == ["Asian", "White", None, None]
    assert sources.read("utkface:gender", files) == ["male", "female", None, None]
    assert sources.read("utkface:age_decade", files) == ["20s", "40s", None, None]
    assert sources.read("utkface:age_bin", files) == ["age[20,30)", "age[40,50)", None, None]
    assert sources.read("utkface:gender+race", files) == ["male/Asian", "female/White", None, None]
    assert sources.values("utkface:gender+race")[:2] == ("female/Asian", "female/Black")
    assert len(sources.values("utkface:gender+race")) == 10
    with pytest.raises(ValueError, match="utkface field must be one of"):
        sources.read("utkface:hair", files)


def test_csv_and_celeba_groupings(tmp_path):
    (tmp_path / "g.csv").write_text("file,group\na.jpg,x\nb.jpg,y\n")
    assert sources.read(f"csv:{tmp_path / 'g.csv'}", ["/d/a.jpg", "b.jpg", "c.jpg"]) == ["x", "y", None]
    (tmp_path / "attr.txt").write_text("2\nMale Smiling\na.jpg 1 -1\nb.jpg -1 1\n")
    got = sources.read(f"celeba:{tmp_path / 'attr.txt'}:Smiling", ["a.jpg", "b.jpg"])
    assert got == ["not_Smiling", "Smiling"]
    assert sources.values(f"celeba:{tmp_path / 'attr.txt'}:Smiling") == ("Smiling", "not_Smiling")
    with pytest.raises(ValueError, match="no attribute 'Beard'"):
        sources.read(f"celeba:{tmp_path / 'attr.txt'}:Beard", ["a.jpg"])
    with pytest.raises(ValueError, match="expected utkface:race"):
        sources.read("tsv:x", ["a.jpg"])


def test_permutation_test_finds_a_planted_difference_and_nothing_else():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(30, 8, 8))
    b = rng.normal(size=(30, 8, 8))
    a[:, 2, 3] += 3.0  # a real difference at one pixel
    t = grp.permutation_test(a, b, permutations=400, alpha=0.05)
    assert t["significant"][2, 3]
    assert t["significant"].sum() == 1  # max-T controls the family-wise error over 64 pixels
    np.testing.assert_allclose(t["diff"], a.mean(0) - b.mean(0), atol=1e-6)
    assert t["p"][2, 3] == pytest.approx(1 / 401) and t["p_fwer"][2, 3] == pytest.approx(1 / 401)
    assert (t["p_fwer"] >= t["p"] - 1e-12).all()
    # Same-distribution groups: nothing significant.
    null = grp.permutation_test(rng.normal(size=(20, 6, 6)), rng.normal(size=(20, 6, 6)), permutations=200)
    assert not null["significant"].any()


def test_pairwise_tests_share_one_family_over_all_pairs_and_pixels():
    rng = np.random.default_rng(2)
    maps = rng.normal(size=(45, 6, 6))
    labels = np.repeat(["A", "B", "C"], 15)
    maps[:15, 1, 4] += 3.0  # group A differs at one pixel
    r = grp.pairwise_tests(maps, labels, ["A", "B", "C"], permutations=300)
    assert r["family"] == 3 * 36 and set(r["pairs"]) == {"A - B", "A - C", "B - C"}
    for pair in ("A - B", "A - C"):
        assert r["pairs"][pair]["significant"][1, 4] and r["pairs"][pair]["significant"].sum() == 1
    assert not r["pairs"]["B - C"]["significant"].any()
    a, b = maps[:15, 1, 4], maps[15:30, 1, 4]
    d = (a.mean() - b.mean()) / np.sqrt((14 * a.var(ddof=1) + 14 * b.var(ddof=1)) / 28)  # Cohen's d by hand
    assert r["pairs"]["A - B"]["effect"][1, 4] == pytest.approx(d, rel=1e-5)
    np.testing.assert_allclose(r["pairs"]["A - B"]["diff"], maps[:15].mean(0) - maps[15:30].mean(0), atol=1e-6)


def test_one_family_keeps_the_run_wise_error_where_per_pair_corrections_do_not():
    """Six groups of pure noise (15 pairs), 20 runs: corrected per pair, most runs find some "difference";
    corrected over the run's whole family, about alpha of them do."""
    per_pair = joint = 0
    groups = list("ABCDEF")
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        maps, labels = rng.normal(size=(60, 4, 4)), np.repeat(groups, 10)
        joint += any(p["significant"].any() for p in grp.pairwise_tests(
            maps, labels, groups, permutations=200, seed=seed)["pairs"].values())
        per_pair += any(grp.permutation_test(maps[labels == a], maps[labels == b], permutations=200,
                                             seed=seed)["significant"].any()
                        for i, a in enumerate(groups) for b in groups[i + 1:])
    assert joint <= 3 and per_pair >= 6, (joint, per_pair)


def test_per_image_normalisation_removes_a_pure_confidence_effect():
    """Group B's maps are group A's shape at 3x the magnitude (a less confident group loses more
    probability from every square): raw drops differ everywhere, normalised maps nowhere."""
    rng = np.random.default_rng(3)
    shape = np.abs(rng.normal(size=(6, 6))) + 0.2
    a = shape * rng.uniform(0.8, 1.2, (20, 1, 1)) + rng.normal(0, 0.02, (20, 6, 6))
    b = 3 * shape * rng.uniform(0.8, 1.2, (20, 1, 1)) + rng.normal(0, 0.06, (20, 6, 6))
    maps, labels = np.concatenate([a, b]), np.repeat(["A", "B"], 20)
    raw = grp.pairwise_tests(maps, labels, ["A", "B"], permutations=200)["pairs"]["A - B"]
    assert raw["significant"].mean() > 0.9
    normed, usable = grp.normalise_per_image(maps, np.ones((6, 6), bool))
    assert usable.all() and np.abs(normed).mean(axis=(1, 2)) == pytest.approx(np.ones(40))
    assert not grp.pairwise_tests(normed, labels, ["A", "B"], permutations=200)["pairs"]["A - B"]["significant"].any()
    zero, ok = grp.normalise_per_image(np.zeros((2, 3, 3)), np.ones((3, 3), bool))
    assert not ok.any() and (zero == 0).all()


def test_regions_partition_the_canvas_and_sit_where_faces_have_them():
    from cms_jax.align import CanonicalFace
    canon = CanonicalFace.mediapipe(canvas=128)
    masks = regions.region_masks(canon.vertices, canon.canvas_hw)
    stack = np.stack(list(masks.values()))
    assert (stack.sum(0) == 1).all()  # disjoint and covering
    ys = {k: np.nonzero(m)[0].mean() for k, m in masks.items() if m.any()}
    assert ys["forehead"] < ys["eyebrows"] < ys["eyes"] < ys["nose"] < ys["mouth"]
    # A map that is 1 on the mouth only puts 100% there.
    shares = regions.region_shares(masks["mouth"].astype(float), masks)
    assert shares["mouth"] == pytest.approx(100.0) and sum(shares.values()) == pytest.approx(100.0)
    table, md = regions.shares_table({"m": masks["eyes"] * 2.0 - 1.0}, masks)
    assert table["m"]["share"]["eyes"] == pytest.approx(100.0) and "| m |" in md
    # Density: a uniform map is 1.0 everywhere; the eyes-only map is 1 / (eye area fraction) on the eyes.
    flat = regions.region_density(np.ones(canon.canvas_hw), masks)
    assert all(v == pytest.approx(1.0) for v in flat.values())
    dens = table["m"]["density"]
    assert dens["eyes"] == pytest.approx(masks["eyes"].size / masks["eyes"].sum()) and dens["nose"] == 0.0


def test_report_is_self_contained_html(tmp_path):
    png = np.zeros((16, 16, 3), np.uint8)
    path = write_report(str(tmp_path / "r.html"), summary={
        "model": "gender", "images_done": 3, "images_total": 4, "seconds": 1.0, "faces_per_second": 3.0,
        "images_skipped": [{"file": "bad<1>.jpg", "reason": "no face"}], "config": {"patch_size": 4}},
        cms_png=png, regions={"all": {"eyes": 50.0, "nose": 50.0}}, groups={"White": png})
    text = open(path).read()
    assert text.count("data:image/png;base64,") == 2
    assert "bad&lt;1&gt;.jpg" in text and "no face" in text and "50.0" in text
