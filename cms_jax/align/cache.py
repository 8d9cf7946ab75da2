"""The alignment cache: one small .npz per (file content, landmarker, settings).

The key is sha256 over a format version, the landmarker bundle's sha256, the
settings and the file's bytes, so renamed or copied files hit the cache and a
changed model misses it. Entries are written to a temporary file and renamed,
so concurrent writers (worker processes, several jobs) never leave half a file.
An entry is the plain dict that ``batch.align_bytes`` returns.
"""
from __future__ import annotations

import functools
import hashlib
import os
import pathlib
import zipfile

import numpy as np

from cms_jax import storage

_CACHE_VERSION = "align-v1"


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_hash(model_path: str) -> str:
    """sha256 of the landmarker bundle (memoised on path and mtime)."""
    return _file_sha256(str(model_path), os.stat(model_path).st_mtime_ns)


def cache_key(data: bytes, model_sha: str, num_faces: int) -> str:
    """Cache key of one file's content under one model and setting."""
    h = hashlib.sha256(f"{_CACHE_VERSION}|{model_sha}|{num_faces}|".encode())
    h.update(data)
    return h.hexdigest()


def entry_path(cache_dir, key: str) -> pathlib.Path:
    """Where the entry of ``key`` lives under ``cache_dir`` (256 sub-folders)."""
    return pathlib.Path(cache_dir) / key[:2] / f"{key}.npz"


def read_entry(path) -> dict | None:
    """The cached dict at ``path``, or None when absent or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # absent or a torn write: align again
    d["reason"] = str(d["reason"]) or None
    d["notes"] = tuple(str(n) for n in d.get("notes", ()))
    if "hw" in d and d["hw"].size == 0:
        d["hw"] = None
    return d


def write_entry(path, d: dict) -> None:
    """Stores an ``align_bytes`` dict atomically at ``path``."""
    arrays = {k: np.asarray(v) for k, v in d.items()
              if k in ("xy", "z", "matrix", "box", "num_faces")}
    arrays["reason"] = np.asarray(d.get("reason") or "")
    arrays["notes"] = np.asarray(list(d.get("notes", ())), dtype=str)
    arrays["hw"] = np.asarray(d.get("hw") if d.get("hw") is not None else [], np.int64)
    storage.save_npz(path, **arrays)  # written beside the entry, then renamed: never half a file
