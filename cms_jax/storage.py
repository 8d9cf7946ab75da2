"""Where a run's files go: local folders or object-store URLs, through `etils.epath` (as Orbax).

Every output, checkpoint and drop shard of the job goes through these
helpers, so ``--out_dir`` may be ``gs://bucket/run`` on a TPU pod whose
hosts share no disk (the backend for a scheme, e.g. ``gcsfs`` for ``gs://``,
must be installed). Writes are whole-file: a local file is written beside its
destination and renamed over it, so a reader never sees a torn file; object
stores make each upload atomic by themselves.
"""
from __future__ import annotations

import io
import json
import uuid

import numpy as np
from etils import epath


def path(p) -> epath.Path:
    """``p`` as an epath (a local path or a URL such as ``gs://bucket/run``)."""
    return epath.Path(p)


def is_local(p) -> bool:
    return "://" not in str(p)


def write_bytes(dest, data: bytes) -> None:
    """Write ``data`` to ``dest`` atomically (folders created)."""
    dest = path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not is_local(dest):
        dest.write_bytes(data)
        return
    tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex}.tmp"
    tmp.write_bytes(data)
    tmp.replace(dest)


def save_npz(dest, **arrays) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_bytes(dest, buf.getvalue())


def save_npy(dest, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array)
    write_bytes(dest, buf.getvalue())


def write_json(dest, obj, indent: int | None = 2) -> None:
    write_bytes(dest, json.dumps(obj, indent=indent).encode())


def write_text(dest, text: str) -> None:
    write_bytes(dest, text.encode())


def load_npz(src) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(path(src).read_bytes())) as z:
        return {k: z[k] for k in z.files}


def load_npy(src) -> np.ndarray:
    return np.load(io.BytesIO(path(src).read_bytes()))
