"""Run configuration fingerprints and image listing (what a resumed run must match)."""
import os

import pytest

from cms_jax.pipeline.config import RunConfig
from cms_jax.data.image_list import expand_images
from cms_jax.data.prepare import process_range


def test_fingerprint_ignores_speed_flags_but_not_numbers():
    a = RunConfig(model="gender", images="x", batch_size=64)
    assert a.fingerprint() == RunConfig(model="gender", images="x", batch_size=4096).fingerprint()
    assert a.fingerprint() != RunConfig(model="gender", images="x", patch_size=5).fingerprint()
    diffs = RunConfig(model="gender", images="x", patch_size=5).differences(a.to_dict())
    assert diffs == ["patch_size: 0 (checkpoint) -> 5 (now)"]
    # The forward strategy changes speed only; bfloat16 changes the numbers.
    assert a.fingerprint() == RunConfig(model="gender", images="x", incremental=True).fingerprint()
    bf16 = RunConfig(model="gender", images="x", dtype="bfloat16")
    assert bf16.differences(a.to_dict()) == ["dtype: 'float32' (checkpoint) -> 'bfloat16' (now)"]
    # A checkpoint written before a flag existed ran with its default.
    old = {k: v for k, v in a.to_dict().items() if k != "dtype"}
    assert a.differences(old) == [] and bf16.differences(old) == ["dtype: 'float32' (checkpoint) -> 'bfloat16' (now)"]


@pytest.mark.parametrize("bad,match", [(dict(score="max"), "score"), (dict(reduce="median"), "reduce"),
                                       (dict(batch_size=-1), "batch_size"), (dict(label_from="x"), "label_from"),
                                       (dict(dtype="float16"), "dtype"),
                                       (dict(group_compare="zscore"), "group_compare"),
                                       (dict(group_truth="utkface:gender", target="man"), "drop target"),
                                       (dict(group_truth="utkface:gender", label_from="utkface:gender"),
                                        "drop label_from")])
def test_validate_names_the_bad_field(bad, match):
    with pytest.raises(ValueError, match=match):
        RunConfig(**bad).validate()


def test_expand_images_folder_glob_list_and_errors(tmp_path):
    for name in ["b.jpg", "a.png", "c.txt", ".hidden.jpg", "sub/d.JPEG"]:
        p = tmp_path / name
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"x")
    folder = expand_images(str(tmp_path))
    assert [os.path.relpath(f, tmp_path) for f in folder] == ["a.png", "b.jpg", "sub/d.JPEG"]
    assert expand_images(str(tmp_path / "*.jpg")) == [str(tmp_path / "b.jpg")]
    lst = tmp_path / "list.txt"
    lst.write_text("b.jpg\n# comment\n\na.png\n")
    assert expand_images(str(lst)) == sorted([str(tmp_path / "b.jpg"), str(tmp_path / "a.png")])
    assert expand_images(str(tmp_path), max_images=2) == folder[:2]
    with pytest.raises(ValueError, match="names no image files"):
        expand_images(str(tmp_path / "*.gif"))


@pytest.mark.parametrize("n,count", [(11, 2), (11, 3), (2, 3), (0, 2), (22, 1)])
def test_process_shares_are_contiguous_disjoint_and_cover(n, count):
    """Grain's even split; the range is cut before the loader (Grain's DataLoader loses a file at 11/2)."""
    ranges = [process_range(n, k, count) for k in range(count)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))  # contiguous, in process order
    sizes = [hi - lo for lo, hi in ranges]
    assert max(sizes) - min(sizes) <= 1
    assert process_range(n) == (0, n)  # one JAX process here
    with pytest.raises(ValueError, match="outside"):
        process_range(n, count, count)


def test_a_field_added_later_keeps_old_fingerprints_and_still_counts_when_set():
    """fill_blur came after runs were made: at its default it is left out of the fingerprint (an older
    run's summary, which lacks it, is still reused and resumed), set it changes the fingerprint and is
    named among the differences from a checkpoint saved without it."""
    old = {k: v for k, v in RunConfig(model="gender", images="x").to_dict().items() if k != "fill_blur"}
    assert RunConfig(**old).fingerprint() == RunConfig(model="gender", images="x").fingerprint()
    assert RunConfig(model="gender", images="x").differences(old) == []
    blur = RunConfig(model="gender", images="x", fill_blur=2.0)
    assert blur.fingerprint() != RunConfig(**old).fingerprint()
    assert blur.differences(old) == ["fill_blur: 0.0 (checkpoint) -> 2.0 (now)"]
