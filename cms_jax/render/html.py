"""Pieces of self-contained HTML pages (the job's report, the pair audit's): embedded images, figures, tables.

Every image is a ``data:`` URI, so a page is one file with no scripts; maps are PNG
(exact colours), photos JPEG (small).
"""
from __future__ import annotations

import base64
import html

import cv2
import numpy as np


def img(rgb: np.ndarray, width: int | None = None, fmt: str = "png", alt: str = "") -> str:
    """An ``<img>`` holding ``rgb`` (uint8 RGB) as a data URI; ``width`` in CSS px (default: its own)."""
    ext, params = (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 85]) if fmt == "jpeg" else (".png", [])
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(np.asarray(rgb, np.uint8)[..., ::-1]), params)
    if not ok:
        raise ValueError("could not encode an image for the report")
    data = base64.b64encode(buf.tobytes()).decode()
    w = width or rgb.shape[1]
    return (f'<img width="{w}" height="{int(round(w * rgb.shape[0] / rgb.shape[1]))}" alt="{html.escape(alt)}" '
            f'src="data:image/{fmt};base64,{data}">')


def figure(image_html: str, caption: str, cls: str = "") -> str:
    """An image with its caption; ``cls`` is the caption's class (e.g. 'face', which the browser test reads)."""
    attr = f" class='{cls}'" if cls else ""
    return f"<figure>{image_html}<figcaption{attr}>{caption}</figcaption></figure>"


def table(rows: dict[str, dict[str, float]], fmt: str = "{:.1f}") -> str:
    """Rows of numbers: ``{row name: {column: value}}``."""
    if not rows:
        return "<p>(none)</p>"
    cols = list(next(iter(rows.values())))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td>{fmt.format(v[c])}</td>" for c in cols) + "</tr>"
        for name, v in rows.items())
    return f"<table><tr><th></th>{head}</tr>{body}</table>"
