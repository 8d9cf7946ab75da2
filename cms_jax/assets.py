"""Named assets: where each real file comes from, and how it is found and verified.

Every file the project uses (MediaPipe bundle, canonical mesh, pretrained face
models, the official code's canonical face, sample faces) is registered here
with its public origin, SHA-256 and licence, taken from ``shared/ASSETS.md``.
Nothing is copied into the repository.

Resolution order for ``resolve(name)``:
    1. ``$CMS_JAX_ASSETS/<relpath>`` (CI sets ``CMS_JAX_ASSETS=../shared``; its
     layout is ``assets/``, ``models/``, ``faces/``). Read-only: never written.
    2. the user cache ``$CMS_JAX_CACHE`` (default ``~/.cache/cms_jax``)/<relpath>.
    3. a download from the public origin into the cache (atomic write, hash
     checked), unless ``CMS_JAX_OFFLINE=1``.
A found file whose SHA-256 differs is never used: ``AssetHashError``.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import pathlib
import tempfile
import urllib.request

_GH = "https://raw.githubusercontent.com"
_OFFICIAL = f"{_GH}/ThrupthiAnn/Canonical-Salient-Maps/main"


@dataclasses.dataclass(frozen=True)
class Asset:
    """One registered file: where it lives under the asset root and where it comes from."""

    name: str
    relpath: str  # under the asset root (same layout as shared/)
    sha256: str
    origin: str | None  # public URL; None: must be provided by hand (see `how`)
    licence: str
    how: str = ""  # how to provide it when there is no download


ASSETS: dict[str, Asset] = {a.name: a for a in [
        Asset("face_landmarker", "assets/face_landmarker.task",
                    "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff",
                    "https://storage.googleapis.com/mediapipe-models/face_landmarker/"
                    "face_landmarker/float16/1/face_landmarker.task", "Apache-2.0"),
        Asset("canonical_face_model", "assets/canonical_face_model.obj",
                    "7e229864565955f6f78671ac97d8007f129ddfe7eefdab3cade37263665cc338",
                    f"{_GH}/google-ai-edge/mediapipe/master/mediapipe/modules/face_geometry/"
                    "data/canonical_face_model.obj", "Apache-2.0"),
        Asset("gender_mini_xception", "models/gender_mini_XCEPTION.21-0.95.hdf5",
                    "7affc7bd520c48ca908eada26988d0e17fdfa1d447d8ae5675395f05ca6f943b",
                    f"{_GH}/oarriaga/face_classification/master/trained_models/gender_models/"
                    "gender_mini_XCEPTION.21-0.95.hdf5", "MIT"),
        Asset("fer2013_mini_xception", "models/fer2013_mini_XCEPTION.102-0.66.hdf5",
                    "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e",
                    f"{_GH}/oarriaga/face_classification/master/trained_models/emotion_models/"
                    "fer2013_mini_XCEPTION.102-0.66.hdf5", "MIT"),
        Asset("fsanet_1x1", "models/fsanet-1x1.onnx",
                    "d85e90cb4b9d3a87e81bbfdcfcd130cbe0e175407042e439a570aa396c44eda6",
                    f"{_GH}/omasaht/headpose-fsanet-pytorch/master/pretrained/fsanet-1x1-iter-688590.onnx",
                    "MIT"),
        Asset("fsanet_var", "models/fsanet-var.onnx",
                    "2877b1db98e3dc66468e90df8db4a21059facd1c3f107af91c6d4fe6476a03e1",
                    f"{_GH}/omasaht/headpose-fsanet-pytorch/master/pretrained/fsanet-var-iter-688590.onnx",
                    "MIT"),
        Asset("ssr_age_imdb", "models/ssr_age_imdb.h5",
                    "f51ac230a68bafdcd9699160f01e4d67a78232419ebcfae8622e0638e6dd4ca3",
                    f"{_GH}/shamangary/SSR-Net/master/pre-trained/imdb/ssrnet_3_3_3_64_1.0_1.0/"
                    "ssrnet_3_3_3_64_1.0_1.0.h5", "Apache-2.0"),
        Asset("celeba_frontal_jpg", "faces/celeba_samples/frontal.jpg",
                    "22d7b7c75057bed64fa3de03b75782d04686fda6d551ebd3e3e23d7db804ad86",
                    f"{_OFFICIAL}/data/Models/frontal.jpg", "CelebA: non-commercial research only"),
        Asset("celeba_frontal_mesh", "faces/celeba_samples/frontal_mesh.mat",
                    "1afd11ee945e1852965ef784f2a4a9ed994ef142871dc185b869e2661c342caa",
                    f"{_OFFICIAL}/data/Models/frontal_mesh.mat", "CelebA: non-commercial research only"),
]}

# Folders of many files (sample faces): per-file SHA-256 in dataset_manifest.json.
DATASETS = {
        "celeba_samples": ("faces/celeba_samples", "CelebA: non-commercial research only",
                       "the 100 CelebA samples and PRNet meshes of the official code "
                       "(github.com/ThrupthiAnn/Canonical-Salient-Maps data/SampleData, or its "
                       "CodeOcean capsule 2602708), laid out as images/ and prnet_meshes/"),
        "utkface": ("faces/utkface", "UTKFace: non-commercial research only",
                                "UTKFace aligned crops (susanqq.github.io/UTKFace), *.jpg.chip.jpg files"),
        "utkface_22k": ("faces/utkface_22k", "UTKFace: non-commercial research only",
                        "21,896 more UTKFace aligned crops (GitHub mattans/AgeProgression, "
                        "data/UTKFace/unlabeled/), 200x200 JPEG, no overlap with faces/utkface"),
        "lfw": ("faces/lfw", "LFW (UMass Amherst): for research",
                "3,004 deep-funneled LFW photos of 837 people, 2 to 8 each (GitHub braun-steven/dfi-tensorflow, "
                "data/lfw-deepfunneled/<name>/), flattened into one folder of First_Last_NNNN.jpg files"),
}


# Datasets too large for a per-file manifest: file count and the SHA-256 of their `sha256sum` listing
# ("<sha256>  <relative path>\n" per file, sorted by path), which pins every byte of every file.
DATASET_DIGESTS = {
    "utkface_22k": (21896, "dfcd2f45e558334d2cef3d75dc535ba21e9c008a527c2de39ce648c4d788a3e6"),
    "lfw": (3004, "37b5ce3910234271326f587465a0dbc91e6f68123921fccceef319aa204b4e15"),
}


def listing_digest(folder: pathlib.Path) -> tuple[int, str]:
    """``(number of files, SHA-256 of the sorted sha256sum listing)`` of every file under ``folder``."""
    rels = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    lines = "".join(f"{sha256_file(folder / r)}  {r}\n" for r in rels)
    return len(rels), hashlib.sha256(lines.encode()).hexdigest()


class AssetError(FileNotFoundError):
    """An asset could not be found or obtained."""


class AssetHashError(AssetError):
    """A file was found but its SHA-256 is not the registered one."""


def sha256_file(path: os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def asset_roots() -> list[pathlib.Path]:
    """Folders searched, in order: ``$CMS_JAX_ASSETS``, then the user cache."""
    roots = []
    if os.environ.get("CMS_JAX_ASSETS"):
        # Absolute, so paths handed out stay valid whatever the caller does with them
        # (CI sets a relative CMS_JAX_ASSETS=../shared).
        roots.append(pathlib.Path(os.environ["CMS_JAX_ASSETS"]).expanduser().absolute())
    roots.append(cache_dir())
    return roots


def cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("CMS_JAX_CACHE", "~/.cache/cms_jax")).expanduser().absolute()


def _offline() -> bool:
    return os.environ.get("CMS_JAX_OFFLINE", "") not in ("", "0", "false")


@functools.lru_cache(maxsize=None)
def _verified(path: str, mtime_ns: int, size: int, expected: str) -> str:
    """SHA-256 check, cached per (path, mtime, size) so a file is hashed once per process."""
    actual = sha256_file(path)
    if actual != expected:
        raise AssetHashError(
                f"asset file {path} has SHA-256 {actual}, expected {expected}; the file is "
                "corrupt or a different version and will not be used. Delete it or replace it "
                "with the registered file.")
    return path


def _check(path: pathlib.Path, expected: str) -> pathlib.Path:
    st = path.stat()
    return pathlib.Path(_verified(str(path), st.st_mtime_ns, st.st_size, expected))


def _download(url: str, dest: pathlib.Path, expected: str) -> pathlib.Path:
    """Download to a temporary file beside ``dest``, check the hash, then rename (atomic)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            h = hashlib.sha256()
            for block in iter(lambda: resp.read(1 << 20), b""):
                h.update(block)
                out.write(block)
        if h.hexdigest() != expected:
            raise AssetHashError(f"download of {url} has SHA-256 {h.hexdigest()}, expected {expected}")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def _obtain(label: str, relpath: str, sha: str, origin: str | None, how: str) -> pathlib.Path:
    tried = []
    for root in asset_roots():
        candidate = root / relpath
        tried.append(str(candidate))
        if candidate.is_file():
            return _check(candidate, sha)
    error = None
    if origin and not _offline():
        try:
            return _download(origin, cache_dir() / relpath, sha)
        except AssetHashError:
            raise
        except Exception as e:  # network errors of any kind: report them with the rest
            error = f"download from {origin} failed: {e}"
    raise AssetError(
            f"asset '{label}' ({relpath}) not found. Tried: {', '.join(tried)}"
            + (f"; {error}" if error else "")
            + ("; downloads are disabled (CMS_JAX_OFFLINE=1)" if origin and _offline() else "")
            + ". Provide it by setting CMS_JAX_ASSETS to a folder holding "
            f"{relpath} (e.g. CMS_JAX_ASSETS=../shared), or by placing it in the cache "
            f"{cache_dir() / relpath}" + (f" (source: {origin})" if origin else f" (source: {how})") + ".")


def resolve(name: str) -> pathlib.Path:
    """Path of a registered asset file, found or downloaded, its SHA-256 verified.

    Raises:
        KeyError: ``name`` is not registered (the message lists the names).
        AssetError: not found anywhere and not downloadable.
        AssetHashError: found, but the hash differs (the file is never used).
    """
    if name not in ASSETS:
        raise KeyError(f"unknown asset '{name}'; registered: {', '.join(sorted(ASSETS))}")
    a = ASSETS[name]
    return _obtain(name, a.relpath, a.sha256, a.origin, a.how)


@functools.lru_cache(maxsize=1)
def dataset_manifest() -> dict[str, dict[str, str]]:
    with open(pathlib.Path(__file__).with_name("dataset_manifest.json")) as f:
        return json.load(f)


def _dataset_folder(name: str, relroot: str, how: str, check) -> pathlib.Path:
    """The first ``<root>/<relroot>`` folder among the asset roots, after ``check(folder)``."""
    tried = []
    for root in asset_roots():
        folder = root / relroot
        tried.append(str(folder))
        if folder.is_dir():
            check(folder)
            return folder
    raise AssetError(f"dataset '{name}' ({relroot}) not found. Tried: {', '.join(tried)}. "
                     f"Provide {how} and set CMS_JAX_ASSETS to the folder above {relroot}.")


def resolve_dir(name: str, verify: bool = True) -> pathlib.Path:
    """Folder of a registered dataset; every listed file present and (by default) hash-checked.

    Datasets in `DATASET_DIGESTS` are checked by file count and listing digest instead.
    """
    if name not in DATASETS:
        raise KeyError(f"unknown dataset '{name}'; registered: {', '.join(sorted(DATASETS))}")
    relroot, _, how = DATASETS[name]

    def check_listed(folder):
        files = dataset_manifest()[name]
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            raise AssetError(f"dataset '{name}' at {folder} lacks {len(missing)} of {len(files)} "
                             f"files (first: {missing[0]}); provide {how}")
        if verify:
            for rel, sha in files.items():
                _check(folder / rel, sha)

    def check_digested(folder):
        count, digest = DATASET_DIGESTS[name]
        n = sum(1 for p in folder.rglob("*") if p.is_file())
        if n != count:
            raise AssetError(f"dataset '{name}' at {folder} has {n} files, expected {count}; provide {how}")
        if verify:
            _, got = listing_digest(folder)
            if got != digest:
                raise AssetHashError(f"dataset '{name}' at {folder}: the SHA-256 of its file listing is {got}, "
                                     f"expected {digest} (a file differs); provide {how}")

    return _dataset_folder(name, relroot, how, check_digested if name in DATASET_DIGESTS else check_listed)


def sample_images(verify: bool = True) -> pathlib.Path:
    """The folder of the CelebA sample faces (``celeba_samples/images``): the built-in default input."""
    return resolve_dir("celeba_samples", verify) / "images"
