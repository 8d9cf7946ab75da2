"""Verification pairs: (probe, gallery, same person?) read from a CSV or drawn from an identity source.

``--pairs=FILE``: a CSV of ``probe,gallery[,same]`` rows (header optional; ``same``
1 or 0). Files are matched to the run's images by path, else by base name. Without
a ``same`` column it comes from the identity source (``--identity=lfw:identity``,
``csv:FILE`` of ``file,person``; `cms_jax.sources`).

``--pairs=auto:N``: N genuine and N impostor pairs drawn from the images with a
seeded generator, so the same images, source, N and seed always give the same
pairs. Genuine pairs are drawn without replacement from every unordered pair of
photos of one person; impostor pairs are distinct unordered pairs of photos of
two different people, drawn uniformly over photos.
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import itertools
import os

import numpy as np

from cms_jax import sources


@dataclasses.dataclass(frozen=True)
class PairSet:
    """Verification pairs over the run's image files.

    Attributes:
      probe, gallery: file paths (the run's own), one per pair.
      same: bool (P,), True for a genuine pair (the same person).
    """

    probe: tuple[str, ...]
    gallery: tuple[str, ...]
    same: np.ndarray

    def __post_init__(self):
        if not len(self.probe) == len(self.gallery) == len(self.same):
            raise ValueError(f"PairSet: {len(self.probe)} probes, {len(self.gallery)} galleries and "
                             f"{len(self.same)} same flags")

    def __len__(self) -> int:
        return len(self.probe)

    def images(self) -> list[str]:
        """Every file in some pair, sorted, each once."""
        return sorted(set(self.probe) | set(self.gallery))

    def subset(self, keep) -> "PairSet":
        """The pairs where ``keep`` (bool (P,)) is True."""
        k = np.asarray(keep, bool)
        return PairSet(tuple(p for p, t in zip(self.probe, k) if t), tuple(g for g, t in zip(self.gallery, k) if t),
                       np.asarray(self.same)[k])


def _matcher(files):
    by_path = {os.fspath(f): os.fspath(f) for f in files}
    by_name = collections.defaultdict(list)
    for f in files:
        by_name[os.path.basename(os.fspath(f))].append(os.fspath(f))

    def match(name: str) -> str | None:
        if name in by_path:
            return by_path[name]
        hits = by_name.get(os.path.basename(name), [])
        return hits[0] if len(hits) == 1 else None
    return match


def read_pairs(path: str, files, identity: str = "") -> PairSet:
    """The pairs of a ``probe,gallery[,same]`` CSV over ``files``.

    Raises:
      ValueError: no such file, a row naming a file that is not among ``files`` (the first few are
        named), a ``same`` other than 0/1, no ``same`` column and no ``identity`` source, or a file
        the identity source cannot name.
    """
    if not os.path.isfile(path):
        raise ValueError(f"--pairs={path}: no such file")
    with open(path, newline="") as f:
        rows = [[c.strip() for c in r] for r in csv.reader(f) if r and r[0].strip() and not r[0].startswith("#")]
    if rows and rows[0][0].lower() in ("probe", "file1", "a"):
        rows = rows[1:]
    if not rows:
        raise ValueError(f"--pairs={path}: no probe,gallery rows")
    width = {len(r) for r in rows}
    if not width <= {2, 3}:
        raise ValueError(f"--pairs={path}: rows must be probe,gallery[,same]; found rows of {sorted(width)} columns")
    match = _matcher(files)
    unknown = sorted({n for r in rows for n in r[:2] if match(n) is None})
    if unknown:
        raise ValueError(f"--pairs={path}: {len(unknown)} file(s) are not among the {len(files)} images (or "
                         f"their base name is ambiguous), e.g. {unknown[:3]}")
    probe = tuple(match(r[0]) for r in rows)
    gallery = tuple(match(r[1]) for r in rows)
    if all(len(r) == 3 for r in rows):
        bad = [r[2] for r in rows if r[2] not in ("0", "1")]
        if bad:
            raise ValueError(f"--pairs={path}: same must be 1 or 0, got {bad[:3]}")
        same = np.asarray([r[2] == "1" for r in rows])
    else:
        if not identity:
            raise ValueError(f"--pairs={path} has no same column: give --identity (e.g. lfw:identity) to derive it")
        who = dict(zip(files, sources.read(identity, list(files))))
        missing = sorted({f for f in probe + gallery if who.get(f) is None})
        if missing:
            raise ValueError(f"--identity={identity} names no person for {len(missing)} paired file(s), e.g. "
                             f"{[os.path.basename(m) for m in missing[:3]]}")
        same = np.asarray([who[p] == who[g] for p, g in zip(probe, gallery)])
    self_pairs = [p for p, g in zip(probe, gallery) if p == g]
    if self_pairs:
        raise ValueError(f"--pairs={path}: {len(self_pairs)} pair(s) compare a photo with itself, e.g. "
                         f"{os.path.basename(self_pairs[0])}")
    return PairSet(probe, gallery, same)


def draw_pairs(files, identity: str, n: int, seed: int = 0) -> PairSet:
    """``n`` genuine then ``n`` impostor pairs, drawn reproducibly (see the module docstring).

    Raises:
      ValueError: ``n`` < 1, fewer than ``n`` genuine pairs among the files, or fewer than two people.
    """
    if n < 1:
        raise ValueError(f"--pairs=auto:N needs N >= 1, got {n}")
    files = sorted(os.fspath(f) for f in files)
    who = sources.read(identity, files)
    named = [(f, w) for f, w in zip(files, who) if w is not None]
    if not named:
        raise ValueError(f"--identity={identity}: 0 of {len(files)} image files name a person, e.g. "
                         f"{os.path.basename(files[0]) if files else 'none'}")
    people = collections.defaultdict(list)
    for f, w in named:
        people[w].append(f)
    genuine = [pair for w in sorted(people) for pair in itertools.combinations(people[w], 2)]
    if len(genuine) < n or len(people) < 2:
        raise ValueError(f"--pairs=auto:{n}: the {len(named)} named images of {len(people)} people give "
                         f"{len(genuine)} genuine pairs; ask for at most {len(genuine)} (and at least two people)")
    rng = np.random.default_rng(seed)
    g_pick = sorted(rng.choice(len(genuine), n, replace=False))
    names = [f for f, _ in named]
    person = np.asarray([w for _, w in named])
    impostor_total = len(names) * (len(names) - 1) // 2 - len(genuine)
    if impostor_total < n:
        raise ValueError(f"--pairs=auto:{n}: only {impostor_total} impostor pairs exist")
    seen, impostor = set(), []
    while len(impostor) < n:
        i, j = rng.integers(0, len(names), 2)
        if person[i] == person[j]:
            continue
        key = (min(i, j), max(i, j))
        if key not in seen:
            seen.add(key)
            impostor.append((names[key[0]], names[key[1]]))
    chosen = [genuine[k] for k in g_pick] + impostor
    return PairSet(tuple(p for p, _ in chosen), tuple(g for _, g in chosen),
                   np.asarray([True] * n + [False] * n))


def pairs_from_flag(spec: str, files, identity: str = "", seed: int = 0) -> PairSet:
    """``--pairs``: ``auto:N`` (drawn, needs ``identity``) or a CSV path."""
    if spec.startswith("auto:"):
        count = spec[len("auto:"):]
        if not count.isdigit():
            raise ValueError(f"--pairs={spec}: expected auto:N with N a positive integer")
        if not identity:
            raise ValueError(f"--pairs={spec} draws pairs by person: give --identity (e.g. lfw:identity)")
        return draw_pairs(files, identity, int(count), seed)
    return read_pairs(spec, files, identity)
