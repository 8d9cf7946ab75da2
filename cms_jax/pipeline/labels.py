"""Targets from file names (``--label_from``), checked against the model's classes before scoring.

A label rule maps a file to the index of the model's class it is labelled
with. It is built once per run from the model's class names, so a rule that
does not fit the model (``utkface_gender`` on an expression model) is an
error before any image is read, and a model whose classes are ordered
(man, woman) gets the right indices. A file the rule cannot label is skipped
with its reason; it never stops the run.
"""
from __future__ import annotations

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


class LabelRule:
    """``rule(path) -> (class index, None)`` or ``(None, reason)``; raises at build time on a misfit."""

    def __init__(self, spec: str, model):
        if spec not in RULES:
            raise ValueError(f"label_from must be one of {RULES}, got {spec!r}")
        self.spec = spec
        self._index = _gender_indices(model) if spec == "utkface_gender" else {}

    def __bool__(self) -> bool:
        return bool(self.spec)

    def __call__(self, path: str) -> tuple[int | None, str | None]:
        if not self.spec:
            return None, None
        g = groups.utkface_groups([path], "gender")[0]
        if g is None:
            return None, "no label: the file name is not UTKFace's AGE_GENDER_RACE_… with gender 0 or 1"
        return self._index[g], None
