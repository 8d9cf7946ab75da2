"""Checks made once, before any image is read: a run that would say nothing stops instead.

A group audit whose ``--groups`` source matches none of the image files
(``utkface:race`` on CelebA names) would otherwise score every face and exit 0
with no group section; a ``--label_from`` that labels no file would skip them
all. `check` reads only file names and the sources' tables and raises
`EmptyMatch` (a ValueError, so the command prints one line and exits 2) with
the flag, the source, how many files matched and an example file name:

* ``--groups``: no file in any group, every file in one group, or a group of
  fewer than 2 images (its per-pixel test, Welch's t, needs two);
* ``--label_from``: no file labelled;
* ``--reference``: no file listed, or no identity with 2 listed images (the
  leave-one-out mean needs another image of the same person).

A partial match is not an error (unmatched files are skipped or left out of
the groups, with their reason); `check` returns one line saying how many, for
stderr. `model_defaults` is the line a model loaded without a card gets.
"""
from __future__ import annotations

import collections
import os

from cms_jax import sources


class EmptyMatch(ValueError):
    """A label, group or reference source that leaves nothing to compute."""


def _source_words(spec: str) -> str:
    kind = sources.split(spec)[0].partition(":")[0]
    return {"utkface": "UTKFace file names (AGE_GENDER_RACE_DATE.jpg)",
            "csv": "the CSV's file column (base names)",
            "celeba": "the CelebA attribute file's image names",
            "lfw": "LFW file names (First_Last_NNNN.jpg)"}.get(kind, kind)


def _example(files) -> str:
    return repr(os.path.basename(os.fspath(files[0]))) if files else "none"


def _values(flag: str, spec: str, files: list[str]) -> tuple[list, str]:
    """Each file's value under ``spec``; `EmptyMatch` when none has one. Also a partial-match line."""
    vals = sources.read(spec, files)
    hit = sum(v is not None for v in vals)
    missed = [f for f, v in zip(files, vals) if v is None]
    where = f"--{flag}={spec} (matched on {_source_words(spec)})"
    if not hit:
        raise EmptyMatch(f"{where}: 0 of {len(files)} image files matched, e.g. {_example(files)}; check that "
                         f"the source names these files")
    note = (f"{where}: {hit} of {len(files)} image files matched; the other {len(missed)} "
            f"(e.g. {_example(missed)}) are {'skipped' if flag == 'label_from' else 'in no group'}") if missed else ""
    return vals, note


def _groups(spec: str, files: list[str]) -> str:
    vals, note = _values("groups", spec, files)
    sizes = collections.Counter(v for v in vals if v is not None)
    if len(sizes) < 2:
        (only, n), = sizes.items()
        raise EmptyMatch(f"--groups={spec}: all {n} matched image files are in one group ({only!r}); a group "
                         f"audit compares at least two groups")
    small = sorted(g for g, n in sizes.items() if n < 2)
    if small:
        ex = next(f for f, v in zip(files, vals) if v == small[0])
        raise EmptyMatch(f"--groups={spec}: group(s) {', '.join(map(repr, small))} have 1 image (e.g. "
                         f"{_example([ex])}) of {len(files)} files; each group needs at least 2 for its test. "
                         f"Add images, or regroup with --groups=csv:FILE")
    return note


def _reference(spec: str, files: list[str]) -> str:
    from cms_jax.pipeline.references import read_identities

    kind, _, path = spec.partition(":")
    if kind != "csv":
        raise ValueError(f"--reference={spec!r}: expected csv:FILE of file,identity rows")
    ident = read_identities(path)
    listed = [f for f in files if os.path.basename(f) in ident]
    if not listed:
        raise EmptyMatch(f"--reference={spec} (matched on the CSV's file column, base names): 0 of {len(files)} "
                         f"image files are listed, e.g. {_example(files)}; the CSV names e.g. "
                         f"{next(iter(ident))!r}")
    sizes = collections.Counter(ident[os.path.basename(f)] for f in listed)
    paired = sum(n for n in sizes.values() if n >= 2)
    if not paired:
        raise EmptyMatch(f"--reference={spec}: {len(listed)} of {len(files)} image files are listed, but no "
                         f"identity has 2 of them (e.g. {_example(listed)} is the only image of "
                         f"{ident[os.path.basename(listed[0])]!r}); each image is scored against its identity's "
                         f"other images")
    if paired < len(files):
        return (f"--reference={spec}: {paired} of {len(files)} image files have another image of their "
                f"identity; the other {len(files) - paired} are skipped")
    return ""


def check(cfg, files: list[str]) -> list[str]:
    """Raise `EmptyMatch` for a ``--groups``/``--label_from``/``--reference`` that leaves nothing to do.

    Args:
      cfg: the run's `RunConfig`.
      files: the run's whole image list (every process checks the same list).

    Returns:
      Lines for stderr about partial matches (empty when every file matched).
    """
    notes = []
    if cfg.label_from:
        notes.append(_values("label_from", cfg.label_from, files)[1])
    if cfg.groups:
        notes.append(_groups(cfg.groups, files))
    if cfg.reference:
        notes.append(_reference(cfg.reference, files))
    return [n for n in notes if n]


def model_defaults(model) -> str:
    """The line a model loaded without a card gets (its guessed preprocessing), else ''."""
    note = str(getattr(model, "card_note", "") or "")
    if not note.startswith("no card"):
        return ""
    return (f"model {model.name!r} has no card, so these defaults were used ({note}); if they are not how "
            f"the model was trained the maps are wrong: write <model file>.card.json (README: 'Bring your own "
            f"ONNX or PyTorch model')")
