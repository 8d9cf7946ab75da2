"""Asset registry: every asset in shared/ASSETS.md resolves and verifies; errors are clear."""
import hashlib
import os
import re
import shutil

import pytest

from cms_jax import assets


def test_every_asset_in_assets_md_is_registered_and_verifies(shared_dir):
    text = open(os.path.join(shared_dir, "ASSETS.md")).read()
    listed = set()
    for cell in re.findall(r"^\| ((?:assets|models|faces)/[^|]+?) \|", text, re.M):
        folder = ""
        for entry in cell.split(", "):
            entry = entry if "/" in entry else folder + entry
            folder = entry.rsplit("/", 1)[0] + "/"
            if re.search(r"\.(task|obj|hdf5|onnx|h5|jpg|mat)$", entry):
                listed.add(entry)
    assert len(listed) == 9, listed
    registered = {a.relpath for a in assets.ASSETS.values()}
    assert listed - registered == set(), f"listed in ASSETS.md but not registered: {listed - registered}"
    for name, a in assets.ASSETS.items():
        path = assets.resolve(name)
        assert os.path.samefile(path, os.path.join(shared_dir, a.relpath))
        assert assets.sha256_file(path) == a.sha256
        if not a.relpath.startswith("faces/"):  # ASSETS.md prints these hashes
            assert a.sha256 in text, f"{name}: registered hash not in ASSETS.md"
    # The hashes in ASSETS.md are the ones registered.
    for sha, rel in re.findall(r"^([0-9a-f]{64})  (\S+)$", text, re.M):
        assert any(a.relpath == rel and a.sha256 == sha for a in assets.ASSETS.values()), rel


def test_datasets_resolve_with_every_file_verified(shared_dir):
    for name, n in [("celeba_samples", 200), ("utkface", 588)]:
        folder = assets.resolve_dir(name)
        assert len(assets.dataset_manifest()[name]) == n
        assert (folder / next(iter(assets.dataset_manifest()[name]))).is_file()


def test_large_dataset_is_pinned_by_its_listing_digest(shared_dir, tmp_path, monkeypatch):
    folder = assets.resolve_dir("utkface_22k")  # 21,896 files, every byte checked through one digest
    n, digest = assets.DATASET_DIGESTS["utkface_22k"]
    assert sum(1 for p in folder.iterdir() if p.is_file()) == n
    # The digest is sha256sum's listing: recompute it independently on three files.
    small = tmp_path / "faces" / "three"
    small.mkdir(parents=True)
    names = sorted(os.listdir(folder))[:3]
    for name in names:
        shutil.copy(folder / name, small / name)
    listing = "".join(f"{hashlib.sha256((small / m).read_bytes()).hexdigest()}  {m}\n" for m in names)
    assert assets.listing_digest(small) == (3, hashlib.sha256(listing.encode()).hexdigest())
    # A copy with one byte changed is refused, naming the dataset.
    copy = tmp_path / "faces" / "utkface_22k"
    shutil.copytree(folder, copy)
    with open(copy / names[0], "ab") as f:
        f.write(b"x")
    monkeypatch.setenv("CMS_JAX_ASSETS", str(tmp_path))
    with pytest.raises(assets.AssetHashError, match="utkface_22k.*a file differs"):
        assets.resolve_dir("utkface_22k")


def _copy_layout(shared_dir, tmp_path, rel):
    dst = tmp_path / rel
    dst.parent.mkdir(parents=True)
    shutil.copy(os.path.join(shared_dir, rel), dst)
    return dst


def test_corrupted_copy_is_refused_naming_file_and_both_hashes(shared_dir, tmp_path, monkeypatch):
    rel = assets.ASSETS["canonical_face_model"].relpath
    dst = _copy_layout(shared_dir, tmp_path, rel)
    with open(dst, "ab") as f:
        f.write(b"# tampered\n")
    actual = hashlib.sha256(dst.read_bytes()).hexdigest()
    monkeypatch.setenv("CMS_JAX_ASSETS", str(tmp_path))
    monkeypatch.setenv("CMS_JAX_CACHE", str(tmp_path / "cache"))
    with pytest.raises(assets.AssetHashError) as e:
        assets.resolve("canonical_face_model")
    msg = str(e.value)
    assert str(dst) in msg and actual in msg and assets.ASSETS["canonical_face_model"].sha256 in msg


def test_missing_asset_offline_names_asset_places_and_remedy(tmp_path, monkeypatch):
    monkeypatch.setenv("CMS_JAX_ASSETS", str(tmp_path / "nowhere"))
    monkeypatch.setenv("CMS_JAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CMS_JAX_OFFLINE", "1")
    with pytest.raises(assets.AssetError) as e:
        assets.resolve("gender_mini_xception")
    msg = str(e.value)
    assert "gender_mini_xception" in msg
    assert str(tmp_path / "nowhere" / "models") in msg and str(tmp_path / "cache") in msg
    assert "CMS_JAX_ASSETS" in msg and "raw.githubusercontent.com" in msg
    with pytest.raises(assets.AssetError, match="utkface"):
        assets.resolve_dir("utkface")


def test_cache_is_used_and_asset_folder_never_written(shared_dir, tmp_path, monkeypatch):
    rel = assets.ASSETS["fsanet_1x1"].relpath
    cached = _copy_layout(shared_dir, tmp_path / "cache", rel)
    empty = tmp_path / "ro"
    empty.mkdir()
    monkeypatch.setenv("CMS_JAX_ASSETS", str(empty))
    monkeypatch.setenv("CMS_JAX_CACHE", str(tmp_path / "cache"))
    assert assets.resolve("fsanet_1x1") == cached
    assert list(empty.iterdir()) == []


def test_relative_asset_folder_gives_absolute_paths(shared_dir, monkeypatch):
    monkeypatch.chdir(os.path.dirname(shared_dir))
    monkeypatch.setenv("CMS_JAX_ASSETS", os.path.basename(shared_dir))
    path = assets.resolve("canonical_face_model")
    assert path.is_absolute() and path.is_file()
    assert assets.resolve_dir("celeba_samples").is_absolute()


def test_unknown_name_lists_registered():
    with pytest.raises(KeyError, match="face_landmarker"):
        assets.resolve("no_such_thing")


def test_jax_sees_eight_devices():
    import jax
    assert jax.device_count() == 8
    assert all(d.platform == "cpu" for d in jax.devices())
