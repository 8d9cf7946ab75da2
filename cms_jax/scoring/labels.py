"""What each image is scored for (phi's target in Eq. 1), decided before scoring.

* ``--label_from=SOURCE:FIELD``: the class from a per-file source
  (`cms_jax.sources`: ``utkface:gender``, ``csv:PATH``, ``celeba:PATH:ATTR``).
  Every value the source can give is matched to one of the model's class names
  (case-insensitive; male/man, female/woman are the same) when the rule is
  built, so a rule that does not fit the model (``utkface:gender`` on an
  expression model) is an error before any image is read, and a model whose
  classes are ordered (man, woman) gets the right indices. A file the source
  cannot label is skipped with its reason; it never stops the run.
* ``--target``: one output for every image, by name or index. A regression
  model (head pose: yaw, pitch, roll) needs it: there is no argmax over
  regression values.
* Embedding models: the cosine similarity to the image's own clean embedding
  (default), or to the mean embedding of the other images of its identity
  (``--reference=csv:FILE``, see `references.py`).
"""
from __future__ import annotations

import numpy as np

from cms_jax import sources

_SYNONYMS = sources.GENDER_SYNONYMS


def class_indices(spec: str, model) -> dict[str, int]:
    """``{source value: class index}`` for every value `spec` can give; an error naming any misfit."""
    names = [str(n).strip().lower() for n in model.class_names]
    output = getattr(model, "output", "classes")
    found = {}
    for v in sources.values(spec):
        words = _SYNONYMS.get(v.lower(), (v.lower(),))
        hits = [i for i, n in enumerate(names) if n in words]
        if output != "classes" or len(hits) != 1:
            raise ValueError(f"--label_from={spec} gives {v!r}, which matches {len(hits)} classes of model "
                             f"{model.name!r} ({output} outputs named {tuple(model.class_names)}); each value "
                             f"must name exactly one class")
        found[v] = hits[0]
    return found


def output_index(target: str, model) -> int:
    """The output named (or numbered) ``target``; a clear error when the model has no such output."""
    names = tuple(model.class_names)
    if target in names:
        return names.index(target)
    if target.lstrip("-").isdigit() and 0 <= int(target) < len(names):
        return int(target)
    raise ValueError(f"--target={target!r}: model {model.name!r} has outputs {names}; give one of these "
                     f"names or an index in [0, {len(names)})")


class LabelRule:
    """``rule(path) -> (target, None)`` or ``(None, reason)``; raises at build time on a misfit.

    The target is a class/output index, a (D,) reference embedding, or None (predicted class, or
    an embedding's own clean embedding).
    """

    def __init__(self, spec: str, model, *, target: str = "", references: dict | None = None):
        output = getattr(model, "output", "classes")
        if output == "embedding" and (spec or target):
            raise ValueError(f"model {model.name!r} outputs an embedding: it is scored by cosine similarity "
                             f"(to its own clean embedding, or --reference=csv:FILE), not by a class; "
                             f"drop --label_from/--target")
        if spec and target:
            raise ValueError("give --label_from or --target, not both")
        if output == "regression" and not target:
            raise ValueError(f"model {model.name!r} has regression outputs {tuple(model.class_names)}: there is "
                             f"no predicted class; give --target=NAME_OR_INDEX (e.g. "
                             f"--target={model.class_names[0]})")
        if references is not None and output != "embedding":
            raise ValueError(f"--reference is for embedding models; model {model.name!r} outputs {output}")
        self.spec = spec
        self._fixed = output_index(target, model) if target else None
        self._refs = references
        self._index = class_indices(spec, model) if spec else {}
        self._read = sources.reader(spec) if spec else None

    def __bool__(self) -> bool:
        return bool(self.spec) or self._fixed is not None or self._refs is not None

    def __call__(self, path: str):
        if self._fixed is not None:
            return self._fixed, None
        if self._refs is not None:
            ref = self._refs.get(path)
            return (ref, None) if isinstance(ref, np.ndarray) else (None, ref or "no reference: not in --reference")
        if not self.spec:
            return None, None
        v = self._read([path])[0]
        if v is None:
            return None, sources.missing_reason(self.spec)
        return self._index[v], None
