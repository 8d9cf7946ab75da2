"""Resumable pair scoring: every scored chunk of probes is saved as it finishes, and reused on resume.

A pair audit's cost is the occluded copies (`audit.PairAudit._occlude`): V copies per
probe, chunk by chunk. `ChunkStore` writes each chunk's drops to
``<out_dir>/pair_chunks/<key>.npz`` the moment the engine returns them, the key a
hash of what the chunk holds (direction, its probes and their galleries in order), so
a run killed at any point (SIGKILL, preemption) loses at most the chunk in hand;
the same command with ``--resume`` loads the saved chunks and scores only the rest.

What would make a saved chunk wrong is recorded in ``fingerprint.json`` (model,
patch, fill, dtype, mesh, the pair list's hash): a resume whose fingerprint differs
is refused, naming the field, rather than mixing two audits. A start without
``resume`` on a folder holding chunks is refused too (``overwrite`` clears them), the
rule of the main job.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np

from cms_jax import storage

FOLDER = "pair_chunks"


def digest(obj) -> str:
    """A short stable hash of a JSON-able object."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:20]


class ChunkStore:
    """Saved chunks of one pair audit in ``out_dir/pair_chunks``.

    Attributes:
      loaded: chunks read back from disk (resume); saved: chunks written by this run.
    """

    def __init__(self, out_dir, fingerprint: dict, *, resume: bool = False, overwrite: bool = False):
        if resume and overwrite:
            raise ValueError("--resume continues the pair audit in --out_dir and --overwrite replaces it: "
                             "give one of them")
        self.dir = storage.path(out_dir) / FOLDER
        self.loaded = self.saved = 0
        meta = self.dir / "fingerprint.json"
        held = self.dir.exists() and any(p.name.endswith(".npz") for p in self.dir.iterdir())
        if held and overwrite:
            self.dir.rmtree()
            held = False
        if held and not resume:
            raise FileExistsError(f"{out_dir} holds a partial or finished pair audit ({FOLDER}/): --resume "
                                  f"continues it, --overwrite replaces it")
        if resume and meta.exists():
            old = json.loads(meta.read_text())
            changed = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
            if changed:
                raise ValueError(f"--resume: the pair audit in {out_dir} was made with other settings ("
                                 + ", ".join(f"{k}: {old.get(k)!r} then, {fingerprint.get(k)!r} now"
                                             for k in changed) + "); use --overwrite or another --out_dir")
        self.dir.mkdir(parents=True, exist_ok=True)
        storage.write_json(meta, fingerprint)

    def _file(self, key: str):
        return self.dir / f"{key}.npz"

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        """The saved arrays of chunk ``key``, or None."""
        f = self._file(key)
        if not f.exists():
            return None
        self.loaded += 1
        return storage.load_npz(f)

    def put(self, key: str, **arrays) -> None:
        """Save chunk ``key`` (`storage.write_bytes` is atomic: a kill never leaves half a file)."""
        storage.save_npz(self._file(key), **arrays)
        self.saved += 1
