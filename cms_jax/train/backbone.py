"""The network to fine-tune, its optimiser, and the converted model it becomes.

Sec. 4.1.1 of the paper fine-tunes VGG-Face for each face task: the 2622-way
identity layer fc8 is replaced by a new layer with one output per class of the
task and the network is trained on. Backbones:

  vgg_face  a converted VGG-Face directory (``converters.vgg_face_dag``), its
            fc8 replaced; the card's normalisation and crop policy are kept.
  tiny      the tiny twin (`cms_jax.models.tiny_vgg` shape) for tests and --smoke.
  scratch   a small VGG-shaped net (same layers, fewer channels) from random
            weights, for a real run when no VGG-Face weights are at hand.

The result is written as a converted-model directory (Orbax ``params`` +
``model_card.json``), the format `cms_jax.models.load(path)` reads, so a
fine-tuned model goes straight into ``python -m experiments.cms --model=DIR``.
"""
from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
import optax

from cms_jax.models import vgg
from cms_jax.models.card import ModelCard

BACKBONES = ("vgg_face", "tiny", "scratch")
# From-scratch nets: inputs scaled to 0-1 and standardised, so the first layers
# start in a sane range without batch norm (VGG has none).
_SCRATCH_NORM = {"scale": 1.0 / 255.0, "mean": list(vgg.IMAGENET_MEAN), "std": list(vgg.IMAGENET_STD)}
SMALL = vgg.VGGConfig(num_classes=2, input_size=(64, 64), widths=(16, 32, 64, 64, 64), fc_width=128)


@dataclasses.dataclass(frozen=True)
class Backbone:
    """Initial weights and everything the model card needs besides them."""

    config: vgg.VGGConfig
    params: dict
    normalisation: dict
    colour: str = "RGB"
    crop_policy: str = "tight"
    crop_margin: float = 0.25
    source: str = ""


def _new_layer(rng: np.random.Generator, fan_in: int, fan_out: int) -> dict:
    # LeCun-normal kernel as `vgg.init_vgg`; zero bias so no class is favoured at the start.
    return {"kernel": rng.normal(0.0, 1.0 / np.sqrt(fan_in), (fan_in, fan_out)).astype(np.float32),
            "bias": np.zeros((fan_out,), np.float32)}


def build(backbone: str, num_classes: int, *, weights: str = "", input_size: int = 0, seed: int = 0) -> Backbone:
    """Initial network for a task with `num_classes` classes.

    Args:
      backbone: one of `BACKBONES`.
      num_classes: width of the new fc8.
      weights: converted VGG-Face directory (required for 'vgg_face').
      input_size: square input side for 'tiny' (default 32) and 'scratch' (default 64);
        'vgg_face' keeps its card's size (fc6 is tied to it).
      seed: seed of the new weights.
    """
    if num_classes < 2:
        raise ValueError(f"a classification task needs at least 2 classes, got {num_classes}")
    rng = np.random.default_rng(seed)
    if backbone == "vgg_face":
        if not weights or not os.path.isdir(weights):
            raise ValueError(f"backbone 'vgg_face' needs --weights=DIR, a converted VGG-Face directory "
                             f"(python -m converters.vgg_face_dag); got {weights!r}")
        from cms_jax.models.registry import load_checkpoint

        card = ModelCard.load(weights)
        if card.architecture != "vgg16":
            raise ValueError(f"{weights}: architecture {card.architecture!r}, expected 'vgg16'")
        src = vgg.VGGConfig.from_dict(card.config)
        if input_size and (input_size, input_size) != tuple(src.input_size):
            raise ValueError(f"{weights}: input is {src.input_size}; fc6 is tied to it, so "
                             f"--input_size={input_size} cannot be used with it")
        params = jax.tree.map(np.asarray, load_checkpoint(weights).params)
        params = {**params, "fc8": _new_layer(rng, src.fc_width, num_classes)}
        return Backbone(dataclasses.replace(src, num_classes=num_classes), params, card.normalisation,
                        card.colour, card.crop_policy, card.crop_margin, source=os.path.abspath(weights))
    if backbone in ("tiny", "scratch"):
        base = vgg.TINY if backbone == "tiny" else SMALL
        side = input_size or base.input_size[0]
        config = dataclasses.replace(base, num_classes=num_classes, input_size=(side, side))
        # Tight, margin 0.05: the framing of the UTKFace chips (MediaPipe landmark box side is
        # 0.97x the chip side, median of 20 chips), so --crop=resize and --crop=align agree.
        return Backbone(config, vgg.init_vgg(config, seed), dict(_SCRATCH_NORM), crop_policy="tight",
                        crop_margin=0.05, source=f"{backbone} from random weights (seed {seed})")
    raise ValueError(f"backbone {backbone!r}: expected one of {BACKBONES}")


def make_optimizer(name: str, lr: float, steps: int, *, schedule: str = "cosine", warmup: int = 0,
                   weight_decay: float = 1e-4, momentum: float = 0.9, freeze_conv: bool = False,
                   params: dict | None = None) -> optax.GradientTransformation:
    """adamw or sgd+momentum with a warmup + cosine (or constant) learning rate.

    Weight decay applies to kernels only (decaying biases only hurts). With
    `freeze_conv` the conv layers get zero updates, as when only the new head
    and fc layers of a pretrained VGG-Face are tuned.
    """
    if steps < 1 or lr <= 0:
        raise ValueError(f"optimizer needs steps >= 1 and lr > 0, got steps={steps}, lr={lr}")
    warmup = min(max(warmup, 0), steps - 1)
    if schedule == "cosine":
        # decay_steps counts the warmup; warmup 0 starts at the peak.
        sched = optax.warmup_cosine_decay_schedule(0.0, lr, warmup, steps, end_value=lr * 0.01)
    elif schedule == "constant":
        sched = optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])
    else:
        raise ValueError(f"schedule {schedule!r}: expected 'cosine' or 'constant'")
    if params is None:
        raise ValueError("make_optimizer needs the params tree (for the decay and freeze masks)")
    decay_mask = jax.tree_util.tree_map_with_path(lambda p, _: p[-1].key == "kernel", params)
    if name == "adamw":
        tx = optax.adamw(sched, weight_decay=weight_decay, mask=decay_mask)
    elif name == "sgd":
        tx = optax.chain(optax.add_decayed_weights(weight_decay, decay_mask),
                         optax.sgd(sched, momentum=momentum, nesterov=True))
    else:
        raise ValueError(f"optimizer {name!r}: expected 'adamw' or 'sgd'")
    if not freeze_conv:
        return tx
    labels = {layer: jax.tree.map(lambda _: "frozen" if layer.startswith("conv") else "train", sub)
              for layer, sub in params.items()}
    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def export(out_dir: str, params: dict, bb: Backbone, class_names, name: str, output: str = "classes") -> str:
    """Write the fine-tuned network as a converted-model directory; returns its absolute path.

    ``output``: the card's output kind ('embedding' for a net trained with a margin loss, whose
    fc8 is the embedding and ``class_names`` its dimensions).
    """
    import orbax.checkpoint as ocp

    config = dataclasses.replace(bb.config, num_classes=len(class_names))
    card = ModelCard(name=name, architecture="vgg16", config=config.to_dict(), input_size=tuple(config.input_size),
                     channels=config.in_channels, colour=bb.colour, normalisation=bb.normalisation,
                     crop_policy=bb.crop_policy, crop_margin=bb.crop_margin, class_names=tuple(class_names),
                     output=output, source=f"cms_jax.train fine-tune of {bb.source}")
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    # Same layout as converters.common.save_converted, which `models.load_checkpoint` reads.
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(os.path.join(out_dir, "params"), jax.tree.map(np.asarray, params), force=True)
    card.save(out_dir)
    return out_dir
