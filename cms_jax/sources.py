"""Per-file values from label sources: one reader per source, one spec syntax ``SOURCE:FIELD``.

Labels (fine-tuning), targets (``--label_from``) and groups (``--groups``,
Fig. 5 ``--by``) all name a per-file value the same way:

  utkface:FIELD              the UTKFace file name ``AGE_GENDER_RACE_DATE...``;
                             FIELD is race | gender | age_decade | age_bin
  csv:PATH                   a CSV of ``file,value`` rows (header and ``#`` lines skipped)
  celeba:PATH:ATTRIBUTE      CelebA's ``list_attr_celeba.txt`` (ATTRIBUTE / not_ATTRIBUTE)
  lfw:identity               an LFW-style name ``First_Last_0001.jpg``: the person, ``First_Last``
                             (an identity source: its values are not known before the files are)

Specs combine with ``+`` (``utkface:gender+race``, ``utkface:race+csv:PATH``): the value
is the parts' values joined by ``/`` ('female/Asian'), None when any part is None; a
part without ``SOURCE:`` takes the previous part's source.

Files are matched on their base name. A file the source says nothing about
gets None (callers skip it, with the reason `missing_reason` gives).
`reader(spec)` reads a source's table once, for streaming runs;
`values(spec)` lists every value a spec can produce before any image is read,
so every process of a multi-host run derives the same group order.
"""
from __future__ import annotations

import csv
import os
import re
from typing import Callable, Sequence

UTK_RACES = ("White", "Black", "Asian", "Indian", "Other")   # UTKFace race codes 0-4
UTK_GENDERS = ("male", "female")                             # UTKFace gender codes 0-1
# The words a model's class names may use for each gender value (matched case-insensitively).
GENDER_SYNONYMS = {"male": ("man", "male", "men", "m"), "female": ("woman", "female", "women", "f")}
UTK_FIELDS = ("race", "gender", "age_decade", "age_bin")
SPEC_HELP = "utkface:race|gender|age_decade|age_bin, csv:PATH, celeba:PATH:ATTRIBUTE or lfw:identity"
_LFW_NUMBER = re.compile(r"^(?P<person>.+)_(?P<number>\d{4})$")


def lfw_identity(path) -> str | None:
    """The person of an LFW-style file name (``Aaron_Eckhart_0001.jpg`` -> 'Aaron_Eckhart'), or None."""
    stem = os.path.basename(os.fspath(path)).split(".")[0]
    m = _LFW_NUMBER.match(stem)
    return m.group("person") if m else None


def utkface_record(path) -> dict | None:
    """``{'age', 'gender', 'race'}`` (ints) from a UTKFace file name; None if it does not parse.

    UTKFace names are ``AGE_GENDER_RACE_DATE.jpg``: gender 0 male, 1 female; race 0 White,
    1 Black, 2 Asian, 3 Indian, 4 Other. A few published files lack the race field: None.
    """
    parts = os.path.basename(os.fspath(path)).split("_")
    try:
        age, gender, race = int(parts[0]), int(parts[1]), int(parts[2])
    except (IndexError, ValueError):
        return None
    if age < 0 or gender not in (0, 1) or not 0 <= race < len(UTK_RACES):
        return None
    return {"age": age, "gender": gender, "race": race}


def age_bin_name(age: int, width: int = 10, num_bins: int = 10) -> str:
    """The paper's 10 age bins of 10 years (Sec. 4.1.1): 'age[20,30)', ..., 'age[90,inf)'."""
    k = min(int(age) // width, num_bins - 1)
    return f"age[{k * width},{(k + 1) * width})" if k < num_bins - 1 else f"age[{k * width},inf)"


def utkface_value(path, field: str) -> str | None:
    """One field of a UTKFace file name as a name ('Asian', 'female', '20s', 'age[20,30)'), or None."""
    if field not in UTK_FIELDS:
        raise ValueError(f"utkface field must be one of {UTK_FIELDS}, got {field!r}")
    r = utkface_record(path)
    if r is None:
        return None
    if field == "race":
        return UTK_RACES[r["race"]]
    if field == "gender":
        return UTK_GENDERS[r["gender"]]
    if field == "age_decade":
        return f"{r['age'] // 10 * 10}s"
    return age_bin_name(r["age"])


def read_file_table(path) -> dict[str, str]:
    """``{base file name: value}`` from a CSV of ``file,value`` rows.

    Raises:
      ValueError: no such file, or a row with one column.
    """
    if not os.path.isfile(path):
        raise ValueError(f"no CSV file {os.fspath(path)!r}")
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r and r[0].strip() and not r[0].startswith("#")]
    if rows and rows[0][0].strip().lower() in ("file", "filename", "path", "image"):
        rows = rows[1:]
    bad = [i for i, r in enumerate(rows) if len(r) < 2]
    if bad:
        raise ValueError(f"{path}: expected 'file,value' rows; row(s) {bad[:5]} have one column")
    return {os.path.basename(r[0].strip()): r[1].strip() for r in rows}


def read_celeba_attr(path, attribute: str) -> dict[str, bool]:
    """One attribute of a CelebA ``list_attr_celeba.txt`` file: base name -> has it.

    Raises:
      ValueError: malformed header, unknown attribute (the message lists the known ones),
        a row with the wrong number of values, or a value other than 1 / -1.
    """
    if not os.path.isfile(path):
        raise ValueError(f"no CelebA attribute file {os.fspath(path)!r}")
    with open(path) as f:
        lines = [l for l in f.read().splitlines() if l.strip()]
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise ValueError(f"{path}: not a CelebA attribute file (line 1 must be the image count)")
    names = lines[1].split()
    if attribute not in names:
        raise ValueError(f"{path}: no attribute {attribute!r}; it has {', '.join(names)}")
    col = names.index(attribute)
    table = {}
    for n, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if len(parts) != len(names) + 1:
            raise ValueError(f"{path} line {n}: {len(parts) - 1} values for {len(names)} attributes")
        if parts[1 + col] not in ("1", "-1"):
            raise ValueError(f"{path} line {n}: {attribute} is {parts[1 + col]!r}, expected 1 or -1")
        table[parts[0]] = parts[1 + col] == "1"
    if len(table) != int(lines[0]):
        raise ValueError(f"{path}: header says {lines[0].strip()} images, found {len(table)} rows")
    return table


def parse(spec: str) -> tuple[str, str, str]:
    """``(kind, path_or_field, attribute)`` of a spec; a clear error for anything else."""
    kind, _, rest = spec.partition(":")
    if kind == "utkface":
        if rest not in UTK_FIELDS:
            raise ValueError(f"{spec!r}: utkface field must be one of {UTK_FIELDS}")
        return kind, rest, ""
    if kind == "csv" and rest:
        return kind, rest, ""
    if kind == "celeba":
        path, _, attr = rest.rpartition(":")
        if path and attr:
            return kind, path, attr
    if kind == "lfw":
        if rest != "identity":
            raise ValueError(f"{spec!r}: the lfw source has one field, identity (lfw:identity)")
        return kind, rest, ""
    raise ValueError(f"{spec!r}: expected {SPEC_HELP}")


def split(spec: str) -> list[str]:
    """The single specs of a ``+`` combination (a part without ``SOURCE:`` takes the previous source)."""
    parts, kind = [], ""
    for p in spec.split("+"):
        if ":" not in p and kind:
            p = f"{kind}:{p}"
        kind = p.partition(":")[0]
        parts.append(p)
    return parts


def check(spec: str) -> str:
    """The spec, if its syntax is right (files are read later); else a clear error."""
    for p in split(spec):
        parse(p)
    return spec


def reader(spec: str) -> Callable[[Sequence], list[str | None]]:
    """``files -> values`` for a spec, its tables read once (validated now, not at the first file)."""
    parts = split(spec)
    if len(parts) > 1:
        readers = [reader(p) for p in parts]

        def combined(files):
            cols = [r(files) for r in readers]
            return ["/".join(v) if all(v) else None for v in zip(*cols)]
        return combined
    kind, arg, attr = parse(spec)
    if kind == "utkface":
        return lambda files: [utkface_value(f, arg) for f in files]
    if kind == "lfw":
        return lambda files: [lfw_identity(f) for f in files]
    if kind == "csv":
        table = read_file_table(arg)
    else:
        table = {k: attr if v else f"not_{attr}" for k, v in read_celeba_attr(arg, attr).items()}
    return lambda files: [table.get(os.path.basename(os.fspath(f))) for f in files]


def read(spec: str, files: Sequence) -> list[str | None]:
    """The spec's value for each file (None where it has none)."""
    return reader(spec)(files)


def values(spec: str) -> tuple[str, ...]:
    """Every value the spec can produce, sorted, known before any image is read."""
    parts = split(spec)
    if len(parts) > 1:
        combos = [()]
        for p in parts:
            combos = [c + (v,) for c in combos for v in values(p)]
        return tuple(sorted("/".join(c) for c in combos))
    kind, arg, attr = parse(spec)
    if kind == "lfw":
        raise ValueError(f"{spec!r} names people, whose set is known only from the files: it is an identity "
                         f"source (experiments/verify.py --identity), not a class or group source")
    if kind == "utkface":
        return tuple(sorted({"race": UTK_RACES, "gender": UTK_GENDERS,
                             "age_decade": [f"{d * 10}s" for d in range(13)],
                             "age_bin": [age_bin_name(10 * k) for k in range(10)]}[arg]))
    if kind == "csv":
        return tuple(sorted(set(read_file_table(arg).values())))
    read_celeba_attr(arg, attr)  # validates the file and the attribute
    return tuple(sorted((attr, f"not_{attr}")))


def missing_reason(spec: str) -> str:
    """Why a file has no value under `spec` (the skip reason a run records)."""
    kind, arg, _ = parse(split(spec)[0])
    if kind == "utkface":
        return f"no label: the file name is not UTKFace's AGE_GENDER_RACE_... (needed for {spec})"
    if kind == "lfw":
        return f"no identity: the file name is not LFW's First_Last_NNNN.jpg (needed for {spec})"
    return f"no label: the file is not in {arg}"
