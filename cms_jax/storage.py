"""Where a run's files go: local folders or object-store URLs, through `etils.epath` (as Orbax).

Every output, checkpoint and drop shard of the job goes through these
helpers, so ``--out_dir`` may be ``gs://bucket/run`` on a TPU pod whose
hosts share no disk (the backend for a scheme, e.g. ``gcsfs`` for ``gs://``,
must be installed). Writes are whole-file: a local file is written beside its
destination and renamed over it, so a reader never sees a torn file; object
stores make each upload atomic by themselves.

The first object-store path of a process prints one line naming the backend
that serves it (`announce`). For ``gs://`` through gcsfs, whose extended file
system probes each bucket's layout with the Storage Control API before every
operation and does not remember a failed probe, the probe's warning is let
through once per process instead of once per call; against an emulator
(``STORAGE_EMULATOR_HOST``, which serves the JSON API only) the probe is
switched off before gcsfs is imported, as each failed probe would wait for
its 60 s timeout.
"""
from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
import sys
import uuid

import numpy as np
from etils import epath


_announced: set[str] = set()

# gcsfs's per-call warnings when a bucket's layout cannot be read (no Storage Control API or no
# permission for it): the operation itself goes on through the JSON API, so one line says it all.
_GCSFS_LAYOUT_WARNINGS = ("Could not determine bucket type", "storage layout api")


class _FirstOnly(logging.Filter):
    """Passes the first record that contains one of ``needles``, drops its repeats."""

    def __init__(self, needles):
        super().__init__()
        self.needles, self.seen = needles, set()

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        hit = next((n for n in self.needles if n in msg), None)
        if hit is None:
            return True
        if hit in self.seen:
            return False
        self.seen.add(hit)
        return True


def _backend_name(scheme: str) -> str:
    """What `etils.epath` will use for ``scheme``: tf.io.gfile when TensorFlow is importable, else fsspec."""
    if importlib.util.find_spec("tensorflow") is not None:
        return "tf.io.gfile"
    try:
        import fsspec
        cls = fsspec.get_filesystem_class(scheme)
    except (ImportError, ValueError) as e:  # the scheme's package is missing: the first write says so
        return f"fsspec, no backend ({e})"
    top = cls.__module__.split(".")[0]
    version = getattr(sys.modules.get(top), "__version__", "?")
    return f"fsspec {cls.__module__}.{cls.__name__} ({top} {version})"


def announce(url: str) -> None:
    """Once per scheme and process: prepare the scheme's backend and print which one serves it."""
    scheme = url.split("://", 1)[0]
    if scheme in _announced:
        return
    _announced.add(scheme)
    where = ""
    if scheme in ("gs", "gcs"):
        emulator = os.environ.get("STORAGE_EMULATOR_HOST", "")
        if emulator and "gcsfs" not in sys.modules:
            os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
        if emulator:
            where = f", emulator at {emulator}"
        logging.getLogger("gcsfs").addFilter(_FirstOnly(_GCSFS_LAYOUT_WARNINGS))
    print(f"storage: {scheme}:// through etils.epath, {_backend_name(scheme)}{where}", file=sys.stderr)


def path(p) -> epath.Path:
    """``p`` as an epath (a local path or a URL such as ``gs://bucket/run``)."""
    if not is_local(p):
        announce(str(p))
    return epath.Path(p)


def is_local(p) -> bool:
    """True for a plain path, False for a URL (``scheme://...``)."""
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
