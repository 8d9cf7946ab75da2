"""``verify.html``: the pair audit on one self-contained page.

Top to bottom: what was audited and how to read the page; the clean
verification metrics (TAR at each FAR with its threshold and whether the
number of impostor pairs resolves it, EER, n of each kind); the genuine and
impostor CMSs, their difference with its test, and the similarity /
dissimilarity parts, each panel with its n; per facial region, the TAR lost
when the region is hidden on the probe, with its 95% CI, as a chart and a table; and the 6 most and
6 least similar pairs of each kind side by side, each photo cropped as the
model saw it with its CIS on it (the gallery's only when the audit was
``symmetric``; otherwise the gallery is shown plain).
"""
from __future__ import annotations

import html

import numpy as np

from cms_jax import storage
from cms_jax.render import colours, panel
from cms_jax.render.faces import CropSpec, faces_cis
from cms_jax.render.html import figure, img

_CSS = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}"
        "td,th{padding:2px 8px;text-align:right}th{text-align:left}figure{display:inline-block;margin:4px;"
        "text-align:center;vertical-align:top}figcaption{font-size:12px;max-width:380px;margin:auto}"
        ".pair{display:inline-block;border:1px solid #ddd;margin:4px;padding:4px}h2{margin-top:1.6em;"
        "border-bottom:1px solid #ddd}.ci{color:#666}")

HOW_TO_READ = (
    "<p>Each pair is a probe photo and a gallery photo. The model's similarity is the cosine of their "
    "embeddings; a pair is accepted when it is above the threshold. For every point of the probe's face a small "
    "square was hidden and the similarity measured again: <b>red</b> where hiding it <b>lowers</b> the "
    "similarity (that part makes the photos match), <b>blue</b> where it <b>raises</b> it (that part argues "
    "against the match). The maps are averages over pairs on one canonical face, so different photos can be "
    "compared point by point. 'Genuine' pairs show the same person, 'impostor' pairs two different people. "
    "The region table says how many genuine pairs the deployed threshold would reject if that region were hidden "
    "(TAR lost), with a 95% bootstrap interval over pairs.</p>")


def _metrics(summary: dict) -> str:
    m = summary["clean"]
    rows = "".join(
        f"<tr><td>{far:g}</td><td>{m[f'tar@far={far:g}']['tar']:.3f}</td><td>{m[f'tar@far={far:g}']['threshold']:.4f}"
        f"</td><td>{m[f'tar@far={far:g}']['far_achieved']:.4f}</td><td>"
        f"{'yes' if m[f'tar@far={far:g}']['far_resolved'] else 'no: fewer than 1/FAR impostor pairs'}</td></tr>"
        for far in summary["fars"])
    return (f"<p>{m['n_genuine']} genuine and {m['n_impostor']} impostor pairs ({html.escape(summary['pairs']['how'])})"
            f"; {len(summary['skipped'])} skipped. EER {m['eer']:.3f} at threshold {m['eer_threshold']:.4f}. A pair "
            f"is accepted when its similarity is above the threshold.</p><table><tr><th>FAR</th><th>TAR</th>"
            f"<th>threshold</th><th>FAR achieved</th><th>resolved by n</th></tr>{rows}</table>")


def _regions(summary: dict) -> str:
    head = "".join(f"<th>TAR lost at FAR {f:g}</th>" for f in summary["fars"])
    body = ""
    for name, row in summary["regions"].items():
        cells = "".join(f"<td>{c['drop']:+.3f} <span class='ci'>[{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}]</span></td>"
                        for c in row["tar_drop"])
        ch = row["mean_similarity_change"]
        body += (f"<tr><th>{html.escape(name.replace('_', ' '))}</th>{cells}<td>{ch['genuine']:+.4f}</td>"
                 f"<td>{ch['impostor']:+.4f}</td></tr>")
    return (f"<p>{html.escape(summary['region_rule'])}.</p><table><tr><th>region hidden on the probe</th>{head}"
            f"<th>mean similarity change, genuine</th><th>impostor</th></tr>{body}</table>")


def _chart(summary: dict, far_index: int = 0) -> str:
    """Horizontal bars: TAR lost per region at the first FAR, the 95% CI as a whisker (inline SVG)."""
    far = summary["fars"][far_index]
    rows = [(name.replace("_", " "), row["tar_drop"][far_index]) for name, row in summary["regions"].items()]
    lo = min([0.0] + [c["ci"][0] for _, c in rows])
    hi = max([0.0] + [c["ci"][1] for _, c in rows])
    span = (hi - lo) or 1.0
    left, width, h = 130, 360, 22

    def x(v):
        return left + (v - lo) / span * width

    bars = ""
    for i, (name, c) in enumerate(rows):
        y = 10 + i * h
        a, b = sorted((x(0.0), x(c["drop"])))
        bars += (f"<text x='{left - 6}' y='{y + 14}' text-anchor='end'>{html.escape(name)}</text>"
                 f"<rect x='{a:.1f}' y='{y + 3}' width='{max(b - a, 1):.1f}' height='{h - 8}' "
                 f"fill='{'#c0392b' if c['drop'] > 0 else '#2e6da4'}'/>"
                 f"<line x1='{x(c['ci'][0]):.1f}' x2='{x(c['ci'][1]):.1f}' y1='{y + 11}' y2='{y + 11}' "
                 f"stroke='#222'/><text x='{left + width + 8}' y='{y + 14}'>{c['drop']:+.3f}</text>")
    y0 = 10 + len(rows) * h
    axis = (f"<line x1='{x(0.0):.1f}' x2='{x(0.0):.1f}' y1='6' y2='{y0}' stroke='#888'/>"
            f"<text x='{x(0.0):.1f}' y='{y0 + 14}' text-anchor='middle'>0</text>")
    caption = (f"TAR lost at FAR {far:g} when the region is hidden on the probe (bar; line: 95% CI; "
               f"n = {summary['clean']['n_genuine']} genuine pairs)")
    return figure(f"<svg width='{left + width + 80}' height='{y0 + 20}' font-size='12' "
                  f"font-family='system-ui,sans-serif'>{bars}{axis}</svg>", html.escape(caption))


def _face(f, scale, caption: str) -> str:
    if f.rgb is None:
        return f"<figure><figcaption>{html.escape(caption)}: {html.escape(f.reason or 'no face')}</figcaption></figure>"
    shown = panel.overlay(f.rgb, f.cis, f.mask, scale, 0.6) if f.cis is not None else f.rgb
    return figure(img(shown, 150, "jpeg"), html.escape(caption))


def _pairs(z: dict, canon, crop: CropSpec, cache_dir, k: int = 6) -> str:
    sim, same = z["similarity"], z["same"].astype(bool)
    symmetric = "reverse_drops" in z
    out = ""
    for kind, rows in (("genuine", np.nonzero(same)[0]), ("impostor", np.nonzero(~same)[0])):
        order = rows[np.argsort(-sim[rows], kind="stable")]
        for label, pick in ((f"most similar {kind} pairs", order[:k]), (f"least similar {kind} pairs", order[::-1][:k])):
            if not len(pick):
                continue
            probes = faces_cis(z["probe"][pick], z["drops"][pick], z["valid"][pick], canon, crop, size=150,
                               cache_dir=cache_dir)
            if symmetric:
                galleries = faces_cis(z["gallery"][pick], z["reverse_drops"][pick], z["reverse_valid"][pick], canon,
                                      crop, size=150, cache_dir=cache_dir)
            else:
                galleries = faces_cis(z["gallery"][pick], np.zeros_like(z["drops"][pick]),
                                      np.zeros_like(z["valid"][pick]), canon, crop, size=150, cache_dir=cache_dir)
                for g in galleries:
                    g.cis = None
            shown = [f.cis[f.mask] for f in probes + galleries if f.cis is not None and f.mask.any()]
            scale = colours.fit(np.concatenate(shown) if shown else np.zeros(1), unit="cosine", diverging=True)
            cells = ""
            for i, p, g in zip(pick, probes, galleries):
                cells += (f"<div class='pair'>{_face(p, scale, 'probe ' + str(z['probe'][i]).rsplit('/', 1)[-1])}"
                          f"{_face(g, scale, 'gallery ' + str(z['gallery'][i]).rsplit('/', 1)[-1])}"
                          f"<div>similarity {sim[i]:.3f}</div></div>")
            out += f"<h3>{label} (of {len(rows)})</h3>{img(panel.legend_for(scale, 300))}<div>{cells}</div>"
    note = "" if symmetric else "<p>The gallery photos are shown without a map: this audit occluded the probe only " \
                                "(--symmetric occludes both).</p>"
    return note + out


def write_verify_report(path, summary: dict, panels: dict[str, np.ndarray], z: dict, canon, model, patch: int,
                        cache_dir=None) -> None:
    """Write the page (module docstring). ``panels``: caption -> RGB map panel (captions carry the n)."""
    crop = CropSpec(model.crop_policy, float(model.crop_margin), tuple(model.input_size), float(patch))
    maps = "".join(figure(img(rgb, 360), html.escape(cap)) for cap, rgb in panels.items())
    t = summary["difference_test"]
    test = (f"<p>genuine − impostor: {t['significant_pixels']} significant pixels on the {t['test_canvas']} test "
            f"canvas, n = {t['images']} ({html.escape(t['test'])}).</p>" if t.get("tested")
            else f"<p>genuine − impostor not tested: {html.escape(t['reason'])}.</p>")
    h = summary["split_half"]
    stable = (f"<p>Stability: the pairs split in two halves by the probe's person ({h['people'][0]} and "
              f"{h['people'][1]} people); the two halves' maps correlate r = {h['genuine']:.2f} (genuine), "
              f"{h['impostor']:.2f} (impostor), {h.get('difference', float('nan')):.2f} (difference). Maps with "
              f"a low r are mostly noise at this n.</p>" if h["tested"] else "")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>Pair audit: {html.escape(summary['model'])}"
            f"</title><style>{_CSS}</style></head><body><h1>Pair audit: {html.escape(summary['model'])}</h1>"
            f"<h2>How to read this page</h2>{HOW_TO_READ}<h2>Verification</h2>{_metrics(summary)}"
            f"<h2>Where the model looks</h2>{test}{stable}<div>{maps}</div>"
            f"<h2>Regions</h2>{_chart(summary)}{_regions(summary)}<h2>Pairs</h2>{_pairs(z, canon, crop, cache_dir)}</body></html>")
    storage.write_text(path, page)
