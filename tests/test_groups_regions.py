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
