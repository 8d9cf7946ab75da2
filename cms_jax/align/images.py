"""Robust image loading for alignment (Section 3.1 input: the image I).

Every file yields either a uint8 RGB array (H, W, 3) or an ``ImageError``
whose ``reason`` is one short fixed string, so a batch can report each failure
and go on. Conversions that succeed (EXIF rotation, grayscale, palette, RGBA,
16-bit) are reported as ``notes`` by ``load_image_bytes``.
"""
from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps

MIN_SIDE = 32      # MediaPipe's detector cannot find a face in fewer pixels.
MAX_SIDE = 8000    # Larger images are refused before decoding (memory).

# The fixed reasons; tests and reports compare against these strings.
UNREADABLE = "unreadable"
NOT_AN_IMAGE = "not an image"
TRUNCATED = "truncated"
TOO_SMALL = "too small"
TOO_LARGE = "too large"
UNSUPPORTED = "unsupported pixel format"


class ImageError(Exception):
    """An input that cannot be turned into an RGB image.

    Attributes:
      reason: one of the module's fixed reason strings (e.g. ``"truncated"``).
      path: the file (or label) that failed.
      detail: free text from the decoder or the size check.
    """

    def __init__(self, reason: str, path: str = "", detail: str = ""):
        self.reason, self.path, self.detail = reason, str(path), detail
        super().__init__(f"{self.path or '<bytes>'}: {reason}" + (f" ({detail})" if detail else ""))


def read_bytes(path) -> bytes:
    """Reads a file's bytes; raises ImageError('unreadable') on any OS error."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ImageError(UNREADABLE, path, f"{type(e).__name__}: {e.strerror or e}") from None


def _to_uint8_rgb(im: Image.Image, notes: list[str], name: str) -> np.ndarray:
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit (or 32-bit int) gray: scale the full 16-bit range to 8 bits,
        # keeping relative brightness rather than clipping high values.
        a = np.asarray(im).astype(np.int64)
        if mode.startswith("I;16") or a.max() > 255:
            a = np.clip(a, 0, 65535) * 255 // 65535
        a = np.clip(a, 0, 255)
        notes.append("grayscale converted to RGB")
        return np.repeat(a.astype(np.uint8)[..., None], 3, axis=2)
    if mode in ("L", "1", "LA", "La"):
        notes.append("grayscale converted to RGB")
    elif mode == "P":
        notes.append("palette converted to RGB")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        notes.append(f"{mode} converted to RGB")
    elif mode not in ("RGBA", "RGBa", "PA"):
        raise ImageError(UNSUPPORTED, name, f"PIL mode {mode!r}")
    if mode in ("LA", "La", "RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in im.info):
        # Transparent pixels hold arbitrary colours; show them as white paper.
        notes.append("alpha composited on white")
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.uint8)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def load_image_bytes(data: bytes, name: str = "") -> tuple[np.ndarray, tuple[str, ...]]:
    """Decodes image bytes into uint8 RGB, applying EXIF orientation.

    Args:
      data: the encoded file content.
      name: label used in error messages (usually the path).

    Returns:
      (rgb uint8 (H, W, 3), notes): notes name every conversion made.

    Raises:
      ImageError: with reason ``not an image``, ``truncated``, ``too small``,
        ``too large`` or ``unsupported pixel format``.
    """
    notes: list[str] = []
    if not data:
        raise ImageError(NOT_AN_IMAGE, name, "empty file")
    with warnings.catch_warnings():
        # Size is checked below; PIL's bomb warning would only duplicate it.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as e:
            raise ImageError(TOO_LARGE, name, str(e)) from None
        except Exception as e:  # PIL raises several types for junk input.
            # A header cut short is a truncated image, not junk.
            reason = TRUNCATED if "truncat" in str(e).lower() else NOT_AN_IMAGE
            raise ImageError(reason, name, f"{type(e).__name__}: {e}") from None
        w, h = im.size
        if max(w, h) > MAX_SIDE:
            raise ImageError(TOO_LARGE, name, f"{w}x{h} px, limit {MAX_SIDE} px per side")
        if min(w, h) < MIN_SIDE:
            raise ImageError(TOO_SMALL, name, f"{w}x{h} px, need at least {MIN_SIDE} px per side")
        if any("16" in str(t[3]) for t in (im.tile or ())):
            notes.append("16-bit converted to 8-bit")  # PIL keeps the high byte.
        try:
            im.load()  # Decoding happens here; a cut file fails here, not in open().
        except (OSError, SyntaxError, ValueError) as e:
            raise ImageError(TRUNCATED, name, f"{type(e).__name__}: {e}") from None
    orientation = im.getexif().get(0x0112, 1)
    if orientation not in (1, None):
        im = ImageOps.exif_transpose(im)
        notes.append(f"EXIF orientation {orientation} applied")
    rgb = _to_uint8_rgb(im, notes, name)
    return np.ascontiguousarray(rgb), tuple(notes)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Loads an image file as uint8 RGB (H, W, 3) (contract entry point).

    Raises:
      ImageError: with ``reason`` ``unreadable`` (missing, a folder, no
        permission) or any reason of ``load_image_bytes``.
    """
    return load_image_bytes(read_bytes(path), str(path))[0]
