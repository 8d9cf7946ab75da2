"""Scoring verification pairs: which parts of the probe make it match its gallery photo (Eq. 1 per pair).

For a pair (probe, gallery) the confidence of an occluded probe copy is the
cosine between its embedding and the *clean* gallery embedding, so the drop
S_v = cos(e(P), e(G)) - cos(e(P ⊙ B_v), e(G)) says how much the square at
vertex v carries the match: positive where hiding it lowers the similarity
(evidence for "same person"), negative where hiding it raises it (evidence
against). Each pair's drops are a CIS on the canonical face (Eqs. 4-5), so
pairs aggregate into CMSs (genuine, impostor; `maps.py`).

Cost: every image is aligned once and embedded clean once (`embed_counts`),
however many pairs it is in. Every probe's V occluded copies run through
the model once and are scored against all its galleries together (the
engine's (N, R, D) references, `engine.OcclusionEngine.run`); with
``symmetric`` the gallery is also occluded against the clean probe.

Region ablation: per probe and facial region (`cms_jax.regions`, drawn on the
probe's own landmarks in the crop), one copy with the whole region set to the
fill value, embedded and compared with each gallery embedding.
"""
from __future__ import annotations

import collections
import dataclasses

import numpy as np

from cms_jax import regions
from cms_jax.data.prepare import FacePreparer
from cms_jax.verify.chunks import ChunkStore, digest
from cms_jax.verify.pairs import PairSet


@dataclasses.dataclass
class Directed:
    """One direction of the scored pairs: the occluded image's drops against the other's clean embedding.

    Attributes:
      drops: float32 (P, V) drops S_v; valid: bool (P, V); sides: float32 (P,) canonical sides
        of the occluded image; clean: float32 (P,) the engine's clean cosine (a check on the
        embeddings' one).
    """

    drops: np.ndarray
    valid: np.ndarray
    sides: np.ndarray
    clean: np.ndarray


@dataclasses.dataclass
class PairScores:
    """Scored pairs.

    Attributes:
      pairs: the pairs scored (a pair is dropped when either photo could not be scored).
      similarity: float64 (P,) clean cosine of the two embeddings (the verification score).
      forward: probe occluded, gallery clean. reverse: the other way (``symmetric`` only).
      skipped: ``{"probe", "gallery", "reason"}`` for every dropped pair.
    """

    pairs: PairSet
    similarity: np.ndarray
    forward: Directed
    reverse: Directed | None
    skipped: list[dict]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity in float64 (0 where a row is zero)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return np.where(den > 0, (a * b).sum(-1) / np.maximum(den, 1e-300), 0.0)


def _bucket(r: int) -> int:
    """References per probe padded to a power of two: few shapes, so few compiles."""
    return 1 << max(0, (r - 1).bit_length())


class PairAudit:
    """Aligns, embeds and occludes the images of a `PairSet` with a run's `Scorer` (embedding model).

    Attributes:
      embed_counts: ``{path: clean embeddings computed}``; each image's is computed once.
    """

    def __init__(self, scorer, *, workers: int = 2, cache_dir: str | None = None, chunk: int = 16,
                 store: ChunkStore | None = None, stop=None):
        if getattr(scorer.model, "output", "classes") != "embedding":
            raise ValueError(f"a pair audit needs an embedding model; {scorer.model.name!r} outputs "
                             f"{scorer.model.output}")
        self.scorer, self.workers, self.cache_dir, self.chunk = scorer, workers, cache_dir, chunk
        self.store, self.stop = store, stop  # stop: a flag read between chunks (`pipeline.interrupt.StopRequest`)
        self.embed_counts: collections.Counter = collections.Counter()
        self.chunks_scored = 0

    def prepare(self, files) -> tuple[dict, dict[str, str]]:
        """``({path: Prepared}, {path: reason})``: each file aligned and cropped once."""
        preparer = FacePreparer(self.scorer.model, workers=self.workers, cache_dir=self.cache_dir)
        ok, bad = {}, {}
        try:
            for p in preparer.imap(list(files)):
                if p.reason is None:
                    ok[p.path] = p
                else:
                    bad[p.path] = p.reason
        finally:
            preparer.close()
        return ok, bad

    def _inputs(self, prepared: list) -> np.ndarray:
        return self.scorer.model.preprocess(np.stack([p.crop for p in prepared]))

    def embed(self, prepared: dict) -> dict[str, np.ndarray]:
        """``{path: (D,) float32}``: each image's clean embedding, computed once (counted)."""
        paths = sorted(prepared)
        out = {}
        for s in range(0, len(paths), 64):
            batch = paths[s:s + 64]
            e = self.scorer.backend.embed(self._inputs([prepared[p] for p in batch]))
            for p, v in zip(batch, e):
                out[p] = v.astype(np.float32)
                self.embed_counts[p] += 1
        return out

    def _chunk(self, chunk, size, prepared, emb) -> dict[str, np.ndarray]:
        """One chunk of probes through the engine: arrays keyed by name (what `ChunkStore` saves)."""
        dim = len(next(iter(emb.values())))
        labels = []
        for _, rs in chunk:
            t = np.zeros((size, dim), np.float32)  # zero rows: padding, scored 0 and dropped
            t[:len(rs)] = np.stack([emb[r] for r in rs])
            labels.append(t)
        result, bad = self.scorer.score([prepared[p] for p, _ in chunk], labels)
        self.chunks_scored += 1
        failed = {"failed_file": np.asarray([f["file"] for f in bad], str),
                  "failed_reason": np.asarray([f["reason"] for f in bad], str)}
        if result is None:
            return {"files": np.zeros(0, str), **failed}
        return {"files": np.asarray(result.files, str), "drops": np.asarray(result.drops, np.float32),
                "valid": np.asarray(result.valid), "sides": np.asarray(result.sides, np.float32),
                "clean": np.asarray(result.clean, np.float32), **failed}

    def _occlude(self, probes, refs, prepared, emb, tag: str = "forward") -> tuple[dict, dict[str, str]]:
        """Drops of each ``probes[i]`` against the embeddings of ``refs[i]`` (a list of paths).

        With a `ChunkStore`, a chunk saved by an earlier run of the same audit is read back
        instead of scored, and each newly scored one is saved at once; ``stop`` is read
        between chunks (a signal: `Interrupted` after the chunk in hand is saved).

        Returns ``({(probe, ref): (drops (V,), valid (V,), side, clean)}, {probe: reason})``.
        """
        by_size = collections.defaultdict(list)
        for p, rs in zip(probes, refs):
            by_size[_bucket(len(rs))].append((p, rs))
        out, failed = {}, {}
        done = 0
        for size in sorted(by_size):
            items = by_size[size]
            for s in range(0, len(items), self.chunk):
                chunk = items[s:s + self.chunk]
                key = digest([tag, size, chunk])
                got = self.store.get(key) if self.store is not None else None
                if got is None:
                    got = self._chunk(chunk, size, prepared, emb)
                    if self.store is not None:
                        self.store.put(key, **got)
                failed.update(zip(got["failed_file"].tolist(), got["failed_reason"].tolist()))
                row = {f: i for i, f in enumerate(got["files"].tolist())}
                for p, rs in chunk:
                    if p not in row:
                        continue
                    i = row[p]
                    for k, r in enumerate(rs):
                        out[(p, r)] = (got["drops"][i, :, k], got["valid"][i], float(got["sides"][i]),
                                       float(got["clean"][i, k]))
                done += len(chunk)
                if self.stop is not None:
                    self.stop.raise_if_set(done=done, total=len(probes), scored=len(row),
                                           resumable=self.store is not None)
        return out, failed

    def score(self, pairs: PairSet, prepared: dict, emb: dict, *, symmetric: bool = False) -> PairScores:
        """Every pair's drops (probe occluded; with ``symmetric`` the gallery too)."""
        skipped, keep = [], np.ones(len(pairs), bool)
        for k, (p, g) in enumerate(zip(pairs.probe, pairs.gallery)):
            why = [f"{x}: not aligned" for x in (p, g) if x not in prepared]
            if why:
                keep[k] = False
                skipped.append({"probe": p, "gallery": g, "reason": "; ".join(why)})
        directions = [(pairs.probe, pairs.gallery)] + ([(pairs.gallery, pairs.probe)] if symmetric else [])
        scored = []
        for direction, (occluded, other) in enumerate(directions):
            refs = collections.defaultdict(list)
            for k in np.nonzero(keep)[0]:
                if other[k] not in refs[occluded[k]]:
                    refs[occluded[k]].append(other[k])
            probes = sorted(refs)
            table, failed = self._occlude(probes, [refs[p] for p in probes], prepared, emb,
                                          tag=("forward", "reverse")[direction])
            scored.append(table)
            for k in np.nonzero(keep)[0]:
                if (occluded[k], other[k]) not in table:
                    keep[k] = False
                    skipped.append({"probe": pairs.probe[k], "gallery": pairs.gallery[k],
                                    "reason": f"{occluded[k]}: " + failed.get(occluded[k], "not scored")})
        kept = pairs.subset(keep)
        sim = cosine(np.stack([emb[p] for p in kept.probe]), np.stack([emb[g] for g in kept.gallery])) \
            if len(kept) else np.zeros(0)

        def directed(table, occluded, other):
            rows = [table[(a, b)] for a, b in zip(occluded, other)]
            if not rows:
                return Directed(np.zeros((0, 0), np.float32), np.zeros((0, 0), bool), np.zeros(0, np.float32),
                                np.zeros(0, np.float32))
            return Directed(np.stack([r[0] for r in rows]).astype(np.float32), np.stack([r[1] for r in rows]),
                            np.asarray([r[2] for r in rows], np.float32), np.asarray([r[3] for r in rows], np.float32))

        fwd = directed(scored[0], kept.probe, kept.gallery)
        rev = directed(scored[1], kept.gallery, kept.probe) if symmetric else None
        return PairScores(kept, sim, fwd, rev, skipped)

    def region_similarities(self, pairs: PairSet, prepared: dict, emb: dict, *, fill: float = 0.0,
                            names=regions.REGIONS) -> np.ndarray:
        """float64 (P, len(names)): each pair's cosine with region r of the probe set to ``fill``."""
        probes = sorted(set(pairs.probe))
        occluded = {}
        h, w = self.scorer.model.input_size
        for s in range(0, len(probes), 8):
            batch = probes[s:s + 8]
            x = self._inputs([prepared[p] for p in batch])
            copies = []
            for p, xi in zip(batch, x):
                masks = regions.region_masks(prepared[p].xy[:468], (h, w))
                copies += [np.where(masks[n][..., None], np.float32(fill), xi) for n in names]
            e = self.scorer.backend.embed(np.stack(copies).astype(np.float32))
            for j, p in enumerate(batch):
                occluded[p] = e[j * len(names):(j + 1) * len(names)]
        return np.stack([cosine(occluded[p], emb[g][None]) for p, g in zip(pairs.probe, pairs.gallery)]) \
            if len(pairs) else np.zeros((0, len(names)))
