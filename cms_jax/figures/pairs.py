"""Fig. 15: a model's confidences phi(I, c) (Eq. 1) on pairs of images, e.g. a face with and
without eye make-up, read from a CSV of ``file_a,file_b[,label]``.

Faces are aligned and cropped as in a CMS run. The table gives every class's
confidence on both images and, when a label is given, the change of the
label's confidence from a to b.
"""
from __future__ import annotations

import csv
import os

import numpy as np

from cms_jax.figures import common, per_image
from cms_jax.pipeline import RunConfig


def read_pairs(path: str) -> list[tuple[str, str, str]]:
    """Rows (file_a, file_b, label or '') of a pairs CSV; relative paths are taken from the CSV's folder.

    A first row ``file_a,file_b[,label]`` is a header and skipped.
    """
    base = os.path.dirname(os.path.abspath(path))
    out = []
    with open(path, newline="") as fh:
        for i, row in enumerate(csv.reader(fh)):
            row = [c.strip() for c in row]
            if not row or not any(row) or row[0].startswith("#"):
                continue
            if i == 0 and row[0].lower() == "file_a":
                continue
            if len(row) not in (2, 3):
                raise ValueError(f"{path} line {i + 1}: expected file_a,file_b[,label], got {row}")
            a, b = (p if os.path.isabs(p) else os.path.join(base, p) for p in row[:2])
            out.append((a, b, row[2] if len(row) == 3 else ""))
    if not out:
        raise ValueError(f"{path}: no pair of images")
    return out


def _label_index(label: str, classes: tuple[str, ...]) -> int | None:
    if not label:
        return None
    if label in classes:
        return classes.index(label)
    if label.isdigit() and int(label) < len(classes):
        return int(label)
    raise ValueError(f"label {label!r} is neither a class name of {classes} nor a class index")


def figure(cfg: RunConfig, pairs_csv: str, out_dir: str) -> dict:
    """Write fig15.png (each pair with its confidences), fig15.json and fig15.md.

    Args:
      cfg: model (and score) settings; images are taken from the CSV.
      pairs_csv: CSV of file_a,file_b[,label] (label: class name or index).
      out_dir: output folder.

    Returns:
      The JSON dict (the table).
    """
    fm = per_image.FaceMaps(cfg)
    if fm.model.output != "classes":
        raise ValueError(f"fig15: {cfg.model} has {fm.model.output} outputs; pairs need class confidences")
    classes = tuple(fm.model.class_names)
    pairs = read_pairs(pairs_csv)
    files = sorted({p for a, b, _ in pairs for p in (a, b)})
    faces, skipped = fm.prepare(files)
    by_path = {f.path: f for f in faces}
    conf = dict(zip([f.path for f in faces], fm.confidences(np.stack([f.crop for f in faces])))) if faces else {}
    rows, tiles, titles = [], [], []
    for i, (a, b, label) in enumerate(pairs):
        if a not in conf or b not in conf:
            rows.append({"file_a": a, "file_b": b, "label": label, "error": "face not found in "
                         + " and ".join(p for p in (a, b) if p not in conf)})
            continue
        li = _label_index(label, classes)
        row = {"file_a": a, "file_b": b, "label": label,
               "conf_a": dict(zip(classes, conf[a].tolist())), "conf_b": dict(zip(classes, conf[b].tolist())),
               "pred_a": classes[int(np.argmax(conf[a]))], "pred_b": classes[int(np.argmax(conf[b]))]}
        if li is not None:
            row["label_conf_change"] = float(conf[b][li] - conf[a][li])
        rows.append(row)
        for side, p in (("a", a), ("b", b)):
            tiles.append(per_image.face_rgb(by_path[p]))
            titles.append(f"{i + 1}{side}: " + common.short_name(p, 20) + "\n" + ", ".join(f"{c} {v:.2f}" for c, v in
                                                                        zip(classes, conf[p]) if v >= 0.05)[:60])
    if tiles:
        common.panels(tiles, titles, os.path.join(out_dir, "fig15.png"), cols=min(len(tiles), 6),
                      suptitle=f"Fig. 15: {cfg.model} confidences on pairs (a, b)")
    head = "| file_a | file_b | label | " + " | ".join(f"{c} a | {c} b" for c in classes) + " | change |\n"
    md = head + "|---|---|---|" + "---:|---:|" * len(classes) + "---:|\n"
    for r in rows:
        if "error" in r:
            md += f"| {os.path.basename(r['file_a'])} | {os.path.basename(r['file_b'])} | {r['label']} | {r['error']} |\n"
            continue
        cells = " | ".join(f"{r['conf_a'][c]:.3f} | {r['conf_b'][c]:.3f}" for c in classes)
        change = f"{r['label_conf_change']:+.3f}" if "label_conf_change" in r else ""
        md += f"| {os.path.basename(r['file_a'])} | {os.path.basename(r['file_b'])} | {r['label']} | {cells} | {change} |\n"
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "fig15.md"), "w") as fh:
        fh.write(md)
    return common.write_json(os.path.join(out_dir, "fig15.json"), {
        "model": cfg.model, "classes": list(classes), "pairs": rows, "skipped": skipped})
