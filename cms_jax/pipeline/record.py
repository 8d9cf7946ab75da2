"""What a run's writers are handed of its setup: plain values fixed when the run starts.

The writers (`writers`, `combine`, `analysis`) never see the `Scorer`: the job
reads from it, once, the facts summary.json records of the model and of the
drops backend (patch side sz, forward strategy, the ONNX runtime probe) and
the canonical face M_F the maps are drawn on, into a `RunRecord`. What changes
while the run goes on (the sums of Eq. 6, the fidelity of a bfloat16 or
approximate run, the work-item counts, skipped images) is handed to them
separately, as values.
"""
from __future__ import annotations

import dataclasses

from cms_jax.align.canonical import CanonicalFace


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """A run's config, canonical face, and what its summary says of the model and the backend.

    Attributes:
      cfg: the `RunConfig`.
      canon: the canonical face (vertices, canvas, backdrop image).
      model: summary.json's model fields, in their order (``model_name``, ``model_input``,
        ``model_output``, ``model_card`` when the model has a card note, ``crop_policy``, ``crop_margin``).
      patch_size: the occlusion side sz in input pixels (resolved from ``--patch_size``).
      forward: 'dense' or 'incremental' (what the engine runs).
      forward_note: why an ``incremental='auto'`` run is dense ('' otherwise).
      backend_probe: ``onnx_backend='auto'`` on an ONNX model: both runtimes' rates and the choice.
      classes: the model's output names, one per column (summary.json ``model_classes``: the report
        names each explained target by them).
    """
    cfg: object
    canon: CanonicalFace
    model: dict
    patch_size: int
    forward: str
    forward_note: str = ""
    backend_probe: dict | None = None
    classes: tuple[str, ...] = ()

    @classmethod
    def of(cls, cfg, scorer) -> "RunRecord":
        """The record of ``scorer`` (the run's `Scorer`): the one place the job reads its parts."""
        m = scorer.model
        model = {"model_name": m.name, "model_input": list(m.input_size), "model_output": m.output,
                 **({"model_card": m.card_note} if getattr(m, "card_note", "") else {}),
                 "crop_policy": m.crop_policy, "crop_margin": float(m.crop_margin)}
        return cls(cfg, scorer.canon, model, int(scorer.patch), scorer.backend.forward,
                   scorer.backend.forward_note, scorer.backend_probe,
                   tuple(str(c) for c in getattr(m, "class_names", ())))
