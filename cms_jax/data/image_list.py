"""Which images a run covers: a folder, a glob, a list file or paths (sorted: the run's order)."""
from __future__ import annotations

import glob
import os

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def expand_images(spec: str, max_images: int = 0) -> list[str]:
    """The sorted list of image files named by ``spec``.

    Args:
      spec: a folder (its image files, recursively), a glob pattern, a ``.txt``
        file with one path per line (relative paths are taken from the file's
        folder), or comma-separated paths.
      max_images: keep the first N of the sorted list (0 = all).

    Raises:
      ValueError: the spec names nothing.
    """
    if not spec:
        raise ValueError("images: no folder, glob or list given")
    if "," in spec and not os.path.exists(spec):
        files = [p for part in spec.split(",") for p in expand_images(part.strip())]
    elif os.path.isdir(spec):
        files = []
        for root, dirs, names in os.walk(spec):
            dirs.sort()
            files += [os.path.join(root, n) for n in names
                      if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".")]
    elif os.path.isfile(spec) and spec.lower().endswith(".txt"):
        base = os.path.dirname(os.path.abspath(spec))
        with open(spec) as f:
            files = [line.strip() for line in f if line.strip() and not line.startswith("#")]
        files = [p if os.path.isabs(p) else os.path.join(base, p) for p in files]
    elif os.path.isfile(spec):
        files = [spec]
    else:
        files = [p for p in glob.glob(spec, recursive=True) if os.path.isfile(p)]
    if not files:
        raise ValueError(f"images: {spec!r} names no image files (folder, glob, .txt list or paths)")
    files = sorted(dict.fromkeys(files))
    return files[:max_images] if max_images else files
