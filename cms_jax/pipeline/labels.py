"""What each image is scored for (phi's target in Eq. 1), decided before scoring.

* ``--label_from``: the class from the file name. The rule is built once per
  run from the model's class names, so a rule that does not fit the model
  (``utkface_gender`` on an expression model) is an error before any image is
  read, and a model whose classes are ordered (man, woman) gets the right
  indices. A file the rule cannot label is skipped with its reason; it never
  stops the run.
* ``--target``: one output for every image, by name or index. A regression
  model (head pose: yaw, pitch, roll) needs it: there is no argmax over
  regression values.
* Embedding models: the cosine similarity to the image's own clean embedding
  (default), or to the mean embedding of the other images of its identity
  (``--reference=csv:FILE``, see `references.py`).
"""
from __future__ import annotations

import numpy as np

from cms_jax import groups

RULES = ("", "utkface_gender")
_GENDER_NAMES = {"male": ("man", "male", "men", "m"), "female": ("woman", "female", "women", "f")}


def _gender_indices(model) -> dict[str, int]:
    names = [str(n).strip().lower() for n in model.class_names]
    found = {g: [i for i, n in enumerate(names) if n in words] for g, words in _GENDER_NAMES.items()}
    if getattr(model, "output", "classes") != "classes" or any(len(v) != 1 for v in found.values()):
        raise ValueError(f"--label_from=utkface_gender needs a classifier with one 'woman'/'female' and one "
                         f"'man'/'male' class; model {model.name!r} has {getattr(model, 'output', 'classes')} "
                         f"outputs named {tuple(model.class_names)}")
    return {g: v[0] for g, v in found.items()}


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
        if spec not in RULES:
            raise ValueError(f"label_from must be one of {RULES}, got {spec!r}")
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
        self._index = _gender_indices(model) if spec == "utkface_gender" else {}

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
        g = groups.utkface_groups([path], "gender")[0]
        if g is None:
            return None, "no label: the file name is not UTKFace's AGE_GENDER_RACE_… with gender 0 or 1"
        return self._index[g], None
