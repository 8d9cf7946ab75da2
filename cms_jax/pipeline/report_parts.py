"""Pieces of the HTML report: bar charts, the header and the command line (images, figures and tables
come from `cms_jax.render.html`, shared with the pair audit's page)."""
from __future__ import annotations

import html
import os
import shlex

from cms_jax.pipeline.report_explain import card_banner, reproduce
from cms_jax.render.html import figure, img, table  # noqa: F401 (the report's pieces, shared with verify)

PALETTE = ("#b2182b", "#2166ac", "#1b7837", "#762a83", "#e08214", "#35978f", "#8c510a", "#c51b7d")


def bar_chart(rows: dict[str, dict[str, float]], unit: str = "%") -> str:
    """Horizontal bars, one group of bars per column (region), one bar per row (map), in CSS only.

    Bars are scaled so the largest value fills the width.
    """
    if not rows:
        return "<p>(none)</p>"
    names = list(rows)
    cols = list(next(iter(rows.values())))
    top = max((v for r in rows.values() for v in r.values()), default=0.0) or 1.0
    key = "".join(f"<span class='key'><i style='background:{PALETTE[i % len(PALETTE)]}'></i>{html.escape(n)}</span>"
                  for i, n in enumerate(names))
    body = ""
    for c in cols:
        bars = "".join(
            f"<div class='bar'><i style='width:{max(rows[n][c], 0) / top * 100:.2f}%;"
            f"background:{PALETTE[i % len(PALETTE)]}'></i><span>{rows[n][c]:.1f}{unit}</span></div>"
            for i, n in enumerate(names))
        body += f"<tr><th>{html.escape(c.replace('_', ' '))}</th><td class='bars'>{bars}</td></tr>"
    return f"<p>{key}</p><table class='chart'>{body}</table>"


def command_line(summary: dict) -> str:
    """The command that started the run, from summary.json's ``argv`` and ``cwd``, prefixed by its folder.

    A script inside ``cwd`` (``experiments/cms.py``, a figure's script) is shown as the module it is
    (``python -m experiments.cms ...``), another script with its path; a run started from Python
    (a notebook, a test: ``argv[0]`` no script) shows that process's argv, marked as such: its
    configuration is in the report's last section.
    """
    argv, cwd = [str(a) for a in summary.get("argv") or []], summary.get("cwd")
    if not argv:
        return "(not recorded)"
    script = argv[0]
    if script.endswith(".py"):
        rel = os.path.relpath(script, cwd) if cwd and os.path.isabs(script) else script
        if not rel.startswith(os.pardir) and not os.path.isabs(rel):
            cmd = shlex.join(["python", "-m", rel[:-3].replace(os.sep, ".")] + argv[1:])
        else:
            cmd = shlex.join(["python"] + argv)
    else:
        cmd = shlex.join(argv) + "  # started from Python (cms_jax.pipeline.run_job): see the configuration"
    return (f"cd {shlex.quote(cwd)} && " if cwd else "") + cmd


def canonical_side(summary: dict) -> str:
    """The run's canonical square side f for the header: one value, or its range over the images."""
    f = summary.get("canonical_side") or {}
    if not f:  # a summary written before the sides were per image
        old = summary.get("canonical_patch_size")
        return "?" if old is None else f"{float(old):.1f}"
    if f["min"] == f["max"]:
        return f"{f['min']:.1f}"
    return f"{f['min']:.1f}-{f['max']:.1f} (per image, median {f['median']:.1f})"


def header(summary: dict, unit: str) -> str:
    """Who, what, how fast, how: model, images, skipped (reasons and counts), speed, maps, command.

    A model loaded without a card gets a banner first (`report_explain.card_banner`); the command
    sets the run's CMS_JAX_ASSETS (summary.json ``assets``) so it works in a new shell."""
    s = summary
    skipped = s.get("images_skipped", [])
    reasons = s.get("skipped_reasons") or {}
    if not reasons:
        for k in skipped:
            reasons[str(k.get("reason"))] = reasons.get(str(k.get("reason")), 0) + 1
    why = ", ".join(f"{html.escape(r)}: {n}" for r, n in sorted(reasons.items(), key=lambda x: -x[1]))
    inp = "×".join(str(v) for v in s.get("model_input", [])) or "?"
    canvas = "×".join(str(v) for v in s.get("canvas", [])) or "?"
    rows = [
        ("Model", f"<b>{html.escape(str(s.get('model')))}</b> ({html.escape(str(s.get('model_name', '')))}, "
                  f"{html.escape(str(s.get('model_output', '')))}, input {inp} px, "
                  f"{html.escape(str(s.get('crop_policy', '')))} crop)"),
        ("Images", f"{s.get('images_done')} scored of {s.get('images_total')}; {len(skipped)} skipped"
                   + (f" ({why})" if why else "")),
        ("Speed", f"{s.get('seconds', 0):.1f} s, {s.get('faces_per_second', 0):.2f} faces/s "
                  f"({html.escape(str(s.get('forward', '')))}, {html.escape(str(s.get('dtype', '')))}"
                  f"{', ' + str(s.get('processes')) + ' processes' if s.get('processes', 1) > 1 else ''})"),
        ("Maps", f"{html.escape(unit)} (Eq. 1) at {s.get('vertices')} vertices; occlusion square "
                 f"{s.get('patch_size')} px on the input, f = {canonical_side(s)} px on "
                 f"the {canvas} px canvas; CMS = {html.escape(str(s.get('reduce', 'mean')))} of the CIS maps (Eq. 6)"),
    ]
    out = "<table class='head'>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"
    return (card_banner(s) + out + "<p>Reproduce (in a new shell):</p>"
            f"<pre>{html.escape(reproduce(s, command_line(s)))}</pre>")
