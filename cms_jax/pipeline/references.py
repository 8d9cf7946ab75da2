"""Reference embeddings per identity (``--reference=csv:FILE``) for embedding models.

For a face-recognition model the question is "which parts of the face carry
this person's identity". Each image is then scored (Eq. 1) by the cosine
similarity of its embedding to the mean embedding of the *other* images of
the same identity (leave-one-out, so the image never serves as its own
reference). The CSV has ``file,identity`` rows (file matched on its base
name, as in ``--groups=csv:``). A first pass aligns and embeds every listed
image of the run once (one forward each, against the V forwards of the
scoring; the landmark cache it fills serves the scoring pass). An image whose
identity has no other usable image is skipped with that reason.
"""
from __future__ import annotations

import os

import numpy as np


def read_identities(path: str) -> dict[str, str]:
    """``{base file name: identity}`` from a CSV of ``file,identity`` rows (header optional)."""
    from cms_jax.sources import read_file_table

    if not os.path.isfile(path):
        raise ValueError(f"--reference=csv:{path}: no such file")
    table = read_file_table(path)
    if not table:
        raise ValueError(f"--reference=csv:{path}: no file,identity rows")
    return table


def identity_references(spec: str, scorer, files: list[str], *, workers: int = 2,
                        cache_dir: str | None = None) -> dict[str, np.ndarray | str]:
    """``{path: reference embedding (D,)}`` for every file, or ``{path: reason}`` where there is none.

    Args:
      spec: ``csv:FILE``.
      scorer: the run's `Scorer` (its model and drops backend).
      files: the run's image list (all processes: every process needs every identity's mean).
    """
    from cms_jax.data.prepare import FacePreparer

    kind, _, path = spec.partition(":")
    if kind != "csv":
        raise ValueError(f"--reference={spec!r}: expected csv:FILE of file,identity rows")
    ident = read_identities(path)
    listed = [f for f in files if os.path.basename(f) in ident]
    out: dict[str, np.ndarray | str] = {f: "no reference: not in the --reference CSV" for f in files}
    emb: dict[str, np.ndarray] = {}
    preparer = FacePreparer(scorer.model, workers=workers, cache_dir=cache_dir)
    try:
        batch = []
        for p in list(preparer.imap(listed)) + [None]:
            if p is not None and p.reason is None:
                batch.append(p)
            if batch and (p is None or len(batch) == 64):
                e = scorer.backend.embed(scorer.model.preprocess(np.stack([b.crop for b in batch])))
                emb.update({b.path: v.astype(np.float64) for b, v in zip(batch, e)})
                batch = []
            if p is not None and p.reason is not None:
                out[p.path] = p.reason
    finally:
        preparer.close()
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for f, v in emb.items():
        i = ident[os.path.basename(f)]
        sums[i] = sums.get(i, 0.0) + v
        counts[i] = counts.get(i, 0) + 1
    for f, v in emb.items():
        i = ident[os.path.basename(f)]
        if counts[i] < 2:
            out[f] = f"no reference: identity {i!r} has no other usable image"
        else:
            out[f] = ((sums[i] - v) / (counts[i] - 1)).astype(np.float32)
    return out
