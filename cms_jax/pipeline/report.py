"""One self-contained HTML report per run, for a model auditor.

Top to bottom: the model's name as title; a banner when the model had no card;
what was run (model path, images, skipped images with reasons and counts,
speed, the command that reproduces it in a new shell); "How to read this page"
in plain words; the CMS as the paper's square splat (Eqs. 4-6, ``cms.npy``)
beside a smooth rendering of the same vertex values (one colour range); for a
model with classes, the pooled CMS beside one CMS per explained class (one
range, n each); one panel per group (n each) and the group differences with
their significant pixel count and test; per facial region the share of
positive saliency beside its per-pixel density; for each region the confidently
scored faces whose CIS puts the most saliency there (each photo with its own
CIS on it, Fig. 6d, captioned ``figcaption.face`` with the class it explains
and its clean confidence), the skipped files, and the raw configuration. No scripts;
every image is a data URI, and only the images shown are embedded, so the
size does not grow with the number of images scored.
"""
from __future__ import annotations

import html
import json
import os

import numpy as np

from cms_jax import storage
from cms_jax.render.colours import score_unit
from cms_jax.pipeline.report_explain import how_to_read, target_rule
from cms_jax.pipeline.report_parts import bar_chart, figure, header, img, table

MAX_SKIPPED_LISTED = 200

_CSS = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}"
        "td,th{padding:2px 8px;text-align:right;vertical-align:top}table.head th,table.chart th{text-align:left}"
        "table.head td{text-align:left}figure{display:inline-block;margin:4px;text-align:center;vertical-align:top}"
        "figcaption{font-size:13px;max-width:520px;margin:auto}pre{background:#f4f4f4;padding:8px;"
        "white-space:pre-wrap;word-break:break-all}td.bars{width:480px}.bar{display:flex;align-items:center;"
        "height:14px;margin:1px 0;font-size:12px}.bar i{display:block;height:12px;margin-right:4px}"
        ".key{margin-right:14px;font-size:13px}.key i{display:inline-block;width:12px;height:12px;margin-right:4px}"
        ".faces figure figcaption{font-size:11px;max-width:180px;overflow-wrap:anywhere}"
        ".regions{display:flex;flex-wrap:wrap;gap:24px}h2{margin-top:1.6em;border-bottom:1px solid #ddd}h3 img{vertical-align:middle;margin-left:12px}"
        ".banner{background:#fff3cd;border:2px solid #e0a800;padding:8px 12px;margin:8px 0}")


def _maps(title: str, items: dict[str, np.ndarray], width: int, caption_of=html.escape) -> str:
    if not items:
        return ""
    return f"<h2>{title}</h2>" + "".join(figure(img(im, min(width, im.shape[1]), alt=g), caption_of(g))
                                         for g, im in items.items())


def face_caption(f: dict) -> str:
    """A face's caption: file, the class (or output) its map explains, its clean confidence, the region value."""
    conf = "?" if f.get("confidence") is None else f"{f['confidence']:.3f}"
    return (f"{html.escape(os.path.basename(f['file']))}<br>explains <b>{html.escape(str(f.get('explained', '?')))}"
            f"</b>, clean confidence {conf}<br>region mean drop {f['value']:.3g}")


def _faces(top: dict[str, dict], notes: list[str], rule: str = "") -> str:
    if not top:
        return ("<h2>Faces behind each region</h2><p>(none)</p>"
                + "".join(f"<p>{html.escape(n)}</p>" for n in notes))
    out = ("<h2>Faces behind each region</h2><p>For each facial region, the images whose CIS puts the most "
           "saliency there (mean positive drop over the region's vertices, computed from drops.npz), each "
           "photo cropped as the model saw it with its own CIS projected onto it (Fig. 6d); one colour scale "
           "per row, the colours fading toward zero. Under each face: its file, the class its map explains "
           f"({html.escape(rule)}), its clean (unoccluded) confidence of that class, and that mean drop.</p>")
    out += "".join(f"<p class='rule'>{html.escape(n)}</p>" for n in notes[:1])  # the selection rule first
    for region, row in top.items():
        cells = "".join(figure(img(f["rgb"], f["rgb"].shape[1], fmt="jpeg", alt=os.path.basename(f["file"])),
                               face_caption(f), cls="face")
                        for f in row["faces"])
        out += (f"<h3>{html.escape(region.replace('_', ' '))} {img(row['legend'], alt='colour scale')}</h3>"
                f"<div class='faces'>{cells}</div>")
    return out + "".join(f"<p>{html.escape(n)}</p>" for n in notes[1:])


def _skipped(summary: dict) -> str:
    skipped = summary.get("images_skipped", [])
    rows = "".join(f"<tr><td style='text-align:left'>{html.escape(str(k['file']))}</td>"
                   f"<td style='text-align:left'>{html.escape(str(k['reason']))}</td></tr>"
                   for k in skipped[:MAX_SKIPPED_LISTED])
    more = (f"<p>... and {len(skipped) - MAX_SKIPPED_LISTED} more (all in summary.json).</p>"
            if len(skipped) > MAX_SKIPPED_LISTED else "")
    return f"<h2>Skipped images ({len(skipped)})</h2><table>{rows}</table>{more}"


def write_report(path: str, *, summary: dict, cms_png: np.ndarray, regions: dict[str, dict[str, float]],
                 groups: dict[str, np.ndarray] | None = None, diffs: dict[str, np.ndarray] | None = None,
                 notes: list[str] | None = None, densities: dict[str, dict[str, float]] | None = None,
                 smooth_png: np.ndarray | None = None, top_faces: dict[str, dict] | None = None,
                 face_notes: list[str] | None = None, classes: dict[str, np.ndarray] | None = None) -> str:
    """Write the HTML report.

    Args:
      path: the .html file.
      summary: the run's summary dict (config, counts, speed, skipped images, argv).
      cms_png: uint8 RGB rendering of the CMS on the canonical face (with its colour bar).
      regions: map name -> region -> share (%).
      groups: group name -> uint8 RGB rendering of the group's CMS.
      diffs: 'A - B' -> uint8 RGB rendering of the difference (significant pixels outlined).
      notes: sentences shown under the title (e.g. group sizes, test settings).
      densities: map name -> region -> saliency per pixel relative to the face average.
      smooth_png: the smooth rendering of the CMS's vertex values, shown beside ``cms_png``.
      top_faces: region -> {"faces": [{"file", "value", "rgb"}], "legend": rgb} (`pipeline.top_faces`).
      face_notes: the example faces' selection rule, and why some faces are not shown.
      classes: 'pooled (n=..)' and one '<class> (n=..)' panel per explained class, one colour range.
    """
    s = summary
    unit = score_unit(s)
    n = s.get("images_done")
    name = html.escape(str(s.get("model_name") or os.path.basename(str(s.get("model")))))
    parts = [
        "<!doctype html><html lang='en'><meta charset='utf-8'>"
        f"<title>CMS report: {name}</title><style>{_CSS}</style>",
        f"<h1>Canonical Model Saliency: {name}</h1>",
        header(s, unit),
        how_to_read(s, unit),
    ]
    parts += [f"<p>{html.escape(x)}</p>" for x in notes or []]
    cms = {"cms": figure(img(cms_png, max(512, cms_png.shape[1]), alt="CMS"),
                         f"CMS over {n} images: the paper's square splat (Eqs. 4-6, cms.npy). "
                         "Lines: the facial regions of the table below. Same colour range as the smooth map.")}
    if smooth_png is not None:
        cms["smooth"] = figure(img(smooth_png, max(512, smooth_png.shape[1]), alt="CMS, smooth"),
                               "The same vertex values interpolated over the mesh triangles (display only).")
    parts.append(f"<h2>CMS ({html.escape(unit)})</h2>" + "".join(cms.values()))
    parts.append(_maps("Per explained class, beside all classes pooled (one colour range; n = images)",
                       classes or {}, 360))
    parts.append(_maps("Per group (one colour range; n = images)", groups or {}, 360))
    parts.append(_maps("Differences (full colour and black outline: significant pixels, permutation test, "
                       "max-T corrected; faded: not significant)", diffs or {}, 360))
    parts.append("<h2>Saliency by facial region</h2><p>Two views of the same map. <b>Share</b>: the part of "
                 "all positive saliency inside the region (big regions score high by size alone). <b>Per-pixel "
                 "density</b>: saliency per pixel of the region relative to the face average (1 = average). "
                 "Read the density for where the model looks per unit area.</p>"
                 "<div class='regions'><div class='share'><h3>Share of positive saliency (%)</h3>"
                 + bar_chart(regions) + "</div>")
    if densities:
        parts.append("<div class='density'><h3>Per-pixel density (× face average)</h3>"
                     + bar_chart(densities, unit="×") + table(densities, "{:.2f}") + "</div>")
    parts.append("</div>")
    if top_faces is not None:
        parts.append(_faces(top_faces, face_notes or [], target_rule(s)))
    parts.append(_skipped(s))
    parts.append("<h2>Configuration</h2><details><summary>summary.json (without the skipped list)</summary><pre>"
                 + html.escape(json.dumps({k: v for k, v in s.items() if k != "images_skipped"}, indent=2,
                                          default=str)) + "</pre></details>")
    storage.write_text(path, "\n".join(parts) + "\n</html>\n")
    return path
