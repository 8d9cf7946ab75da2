"""The report's words: what each face explains, which faces are shown, how to read the page.

Plain functions of summary.json (and of drops.npz's ``targets``/``clean``), so
the report states, for every example face, the NAME of the class (or output,
or reference) whose confidence drop it shows, its clean confidence (Eq. 1's
phi(I, c) before any occlusion) and the rule that chose that target.
"""
from __future__ import annotations

import html
import os
import shlex

import numpy as np

CONFIDENT_PROB = 0.8  # a probability model's example faces: clean confidence >= max(this, the run's median)


def explained_name(summary: dict, target: int | None) -> str:
    """The name of what image ``target`` (drops.npz ``targets``) explains: class, output or reference."""
    out, cfg = summary.get("model_output", "classes"), summary.get("config") or {}
    if out == "embedding":
        return "identity reference" if cfg.get("reference") else "own clean embedding"
    names = summary.get("model_classes") or []
    if target is not None and 0 <= int(target) < len(names):
        return str(names[int(target)])
    if out == "regression":
        return str(cfg.get("target") or "output")
    return "?" if target is None else f"output {int(target)}"


def target_rule(summary: dict) -> str:
    """Which target each image's drops are of: the predicted class, a label source, or one fixed output."""
    cfg, out = summary.get("config") or {}, summary.get("model_output", "classes")
    if out == "embedding":
        return ("cosine similarity to the image's identity reference (--reference)" if cfg.get("reference")
                else "cosine similarity to the image's own clean embedding")
    if cfg.get("target"):
        return f"the fixed output --target={cfg['target']} for every image"
    if cfg.get("label_from"):
        return f"each image's label from --label_from={cfg['label_from']}"
    return "the class the model predicts for the clean image"


def confident(clean: np.ndarray | None, summary: dict, k: int) -> tuple[np.ndarray | None, str]:
    """Which images may be shown as examples, and the rule in words.

    Probabilities: clean confidence >= max(0.8, the run's median); other scores (logits, cosine,
    regression): >= the run's median. When fewer than ``k`` images qualify, the ``k`` most
    confident are allowed, and the rule says so. None (no ``clean`` in drops.npz): every image.
    """
    if clean is None or not len(clean):
        return None, "Example faces: any image (this run's drops.npz has no clean confidences)."
    c = np.asarray(clean, np.float64)
    med = float(np.median(c))
    prob = summary.get("model_output", "classes") == "classes" and summary.get("score", "prob") == "prob"
    cut = max(CONFIDENT_PROB, med) if prob else med
    rule = (f"clean confidence >= max({CONFIDENT_PROB}, the run's median {med:.3g}) = {cut:.3g}" if prob
            else f"clean confidence >= the run's median {med:.3g}")
    ok = c >= cut
    text = f"Example faces are chosen only among confidently scored images: {rule} ({int(ok.sum())} of {len(c)})."
    if ok.sum() < k:
        ok = np.zeros(len(c), bool)
        ok[np.argsort(-c, kind="stable")[:k]] = True
        text += f" Too few qualify: the {int(ok.sum())} most confident images are used instead."
    return ok, text


def reproduce(summary: dict, command: str) -> str:
    """``command`` (report_parts.command_line) with the run's CMS_JAX_ASSETS set, so it works in a new shell."""
    assets = summary.get("assets")
    if not assets or "&& " not in command:
        return command if not assets else f"CMS_JAX_ASSETS={shlex.quote(assets)} {command}"
    cd, cmd = command.split("&& ", 1)
    return f"{cd}&& CMS_JAX_ASSETS={shlex.quote(assets)} {cmd}"


def card_banner(summary: dict) -> str:
    """A visible warning when the model was loaded without a card (defaults guessed), else ''."""
    note = str(summary.get("model_card") or "")
    if not note.startswith("no card"):
        return ""
    model = str(summary.get("model"))
    card = os.path.splitext(model)[0] + ".card.json" if model.endswith(".onnx") else model + ".card.json"
    return ("<div class='banner'><b>No model card:</b> this model was scored with guessed defaults "
            "(normalisation, colour, crop, class names). " + html.escape(note) + ". If any of these is "
            f"wrong the maps are wrong: write a card <code>{html.escape(card)}</code> beside the model file "
            "(JSON with e.g. <code>normalisation</code>, <code>colour</code>, <code>crop_policy</code>, "
            "<code>class_names</code>) and run again.</div>")


def how_to_read(summary: dict, unit: str) -> str:
    """The page in plain words: what is measured, what the colours mean, share vs density."""
    what = target_rule(summary)
    return (
        "<h2>How to read this page</h2><ul class='read'>"
        f"<li>Each face was covered by a small grey square at many points. For each point we measured how much "
        f"the model's confidence fell (<i>{html.escape(unit)}</i>). The confidence is that of {html.escape(what)}; "
        "a big drop means that spot mattered to the model.</li>"
        "<li>These drops, drawn on one shared face shape, form each image's saliency map (CIS: canonical image "
        "saliency). The CMS (canonical model saliency) is their average over all images: it pools every class "
        "together. The per-class panels split it by the class explained.</li>"
        "<li>Red: covering that spot lowered the confidence (the model relies on it). Blue: covering it raised "
        "the confidence. White or no colour: no effect. Maps of the same kind share one colour scale; 0 is "
        "marked on each colour bar.</li>"
        "<li>Region chart: <b>share</b> is the part of all positive saliency that falls in a region (large "
        "regions get more just by being large); <b>per-pixel density</b> divides by the region's area. To see "
        "where the model looks per unit area, read the density.</li>"
        "<li>Group differences are tested with a permutation test (groups' labels shuffled many times), "
        "corrected for testing every pixel at once (max-T); outlined pixels are significant.</li></ul>")
