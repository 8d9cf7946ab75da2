"""Model cards: the JSON that travels with every converted checkpoint.

A card records what is needed to feed a model correctly and rebuild it:
architecture and its config, input size, channels, colour order,
normalisation, crop policy and margin, class names and output kind. The
preprocessing of the paper's Eq. 1 input ``I`` is therefore never guessed.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

CARD_FILE = "model_card.json"


@dataclasses.dataclass(frozen=True)
class ModelCard:
    """Everything about a model except its weights.

    Attributes:
      name: model name.
      architecture: 'vgg16' | 'keras_graph'.
      config: architecture config (``VGGConfig.to_dict()`` or the Keras ``model_config``).
      input_size: (H, W).
      channels: 1 or 3.
      colour: 'RGB' | 'BGR' | 'GRAY'.
      normalisation: {'scale': s, 'mean': [...], 'std': [...]}: ``(x*s - mean)/std`` on 0-255 input.
      crop_policy: 'loose' | 'tight' | 'whole'.
      crop_margin: extra context, fraction of the face-box side.
      class_names: output names.
      output: 'classes' | 'regression' | 'embedding'.
      outputs_are_probs: True when the network ends in a softmax.
      source: where the weights came from (file name, origin).
    """

    name: str
    architecture: str
    config: dict
    input_size: tuple[int, int]
    channels: int
    colour: str
    normalisation: dict
    crop_policy: str
    crop_margin: float
    class_names: tuple[str, ...]
    output: str = "classes"
    outputs_are_probs: bool = False
    source: str = ""

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["input_size"] = list(self.input_size)
        d["class_names"] = list(self.class_names)
        return json.dumps(d, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "ModelCard":
        d: dict[str, Any] = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"model card has unknown fields {unknown}")
        d["input_size"] = tuple(d["input_size"])
        d["class_names"] = tuple(d["class_names"])
        return cls(**d)

    def save(self, directory: str | os.PathLike) -> str:
        path = os.path.join(os.fspath(directory), CARD_FILE)
        with open(path, "w") as f:
            f.write(self.to_json())
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "ModelCard":
        path = os.path.join(os.fspath(directory), CARD_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no {CARD_FILE} in {directory}: not a converted cms_jax model")
        with open(path) as f:
            return cls.from_json(f.read())
