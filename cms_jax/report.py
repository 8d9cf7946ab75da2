"""One self-contained HTML report per run: maps, groups, regions, skipped images, configuration."""
from __future__ import annotations

import base64
import html
import json

import cv2
import numpy as np

from cms_jax import storage


def _img(rgb: np.ndarray, width: int = 256) -> str:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise ValueError("could not encode an image for the report")
    data = base64.b64encode(buf.tobytes()).decode()
    return f'<img width="{width}" src="data:image/png;base64,{data}">'


def _table(rows: dict[str, dict[str, float]], fmt: str = "{:.1f}") -> str:
    if not rows:
        return "<p>(none)</p>"
    cols = list(next(iter(rows.values())))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td>{fmt.format(v[c])}</td>" for c in cols) + "</tr>"
        for name, v in rows.items())
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


def write_report(path: str, *, summary: dict, cms_png: np.ndarray, regions: dict[str, dict[str, float]],
                 groups: dict[str, np.ndarray] | None = None, diffs: dict[str, np.ndarray] | None = None,
                 notes: list[str] | None = None, densities: dict[str, dict[str, float]] | None = None) -> str:
    """Write the HTML report.

    Args:
      path: the .html file.
      summary: the run's summary dict (config, counts, speed, skipped images).
      cms_png: uint8 RGB rendering of the CMS on the canonical face.
      regions: map name -> region -> share (%).
      groups: group name -> uint8 RGB rendering of the group's CMS.
      diffs: 'A - B' -> uint8 RGB rendering of the difference (significant pixels outlined).
      notes: sentences shown under the title (e.g. group sizes, test settings).
      densities: map name -> region -> saliency per pixel relative to the face average.
    """
    s = summary
    parts = [
        "<!doctype html><meta charset='utf-8'><title>CMS report</title>",
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;text-align:right}"
        "figure{display:inline-block;margin:4px;text-align:center}</style>",
        f"<h1>Canonical Model Saliency: {html.escape(str(s.get('model')))}</h1>",
        f"<p>{s.get('images_done')} of {s.get('images_total')} images, "
        f"{len(s.get('images_skipped', []))} skipped, {s.get('seconds', 0):.1f} s "
        f"({s.get('faces_per_second', 0):.2f} faces/s); {s.get('vertices')} vertices, patch "
        f"{s.get('patch_size')} px, score {html.escape(str(s.get('score')))}.</p>",
    ]
    parts += [f"<p>{html.escape(n)}</p>" for n in notes or []]
    parts.append(f"<h2>CMS</h2><figure>{_img(cms_png)}<figcaption>all images (red high)</figcaption></figure>")
    if groups:
        parts.append("<h2>Per group</h2>" + "".join(
            f"<figure>{_img(im, 200)}<figcaption>{html.escape(g)}</figcaption></figure>" for g, im in groups.items()))
    if diffs:
        parts.append("<h2>Differences (white outline: significant pixels, permutation test, max-T corrected)</h2>" + "".join(
            f"<figure>{_img(im, 200)}<figcaption>{html.escape(g)}</figcaption></figure>" for g, im in diffs.items()))
    parts.append("<h2>Share of saliency by facial region (%)</h2>" + _table(regions))
    if densities:
        parts.append("<h2>Saliency per pixel by region, relative to the face average</h2>"
                     + _table(densities, "{:.2f}"))
    skipped = s.get("images_skipped", [])
    parts.append(f"<h2>Skipped images ({len(skipped)})</h2><table>" + "".join(
        f"<tr><td style='text-align:left'>{html.escape(str(k['file']))}</td>"
        f"<td style='text-align:left'>{html.escape(str(k['reason']))}</td></tr>" for k in skipped) + "</table>")
    parts.append("<h2>Configuration</h2><pre>" + html.escape(json.dumps(s.get("config", {}), indent=2)) + "</pre>")
    storage.write_text(path, "\n".join(parts))
    return path
