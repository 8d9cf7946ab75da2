"""Per-copy window offsets of incremental inference, computed once on the host and passed in.

Every offset a windowed value carries is a function of one coordinate of the
occluding square: its first row (``y1``) or first column (``x1``). The trace
already knows that function for every square position (the ``eoff`` tables of
`window.Axis`), so an offset is a table lookup. Written as integer arithmetic
inside the program (the floor divisions of each layer's projective field,
chained through the net), XLA:CPU fused the chain into every consumer and
recomputed it per element: on a MobileFaceNet at 112 px one fusion of the
windowed pass spent 422 of 571 ms on it (jaxlib 0.10.2); its optimisation
barriers were removed by the CPU pipeline. `Offsets` instead reads each
distinct table's values from a (B, T) int32 input computed by `host_offsets`.

Tables are recorded in the order the windowed pass asks for them while the
plan is discovered; later traces find them by content. A table whose values
are all equal is a constant and needs no input.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

_COORD = (2, 0)  # src axis 0 (rows) reads a box's y1, src 1 (columns) its x1 (``occlusion.square_bounds``)


def _key(table: np.ndarray, src: int) -> tuple:
    return (int(src), np.asarray(table, np.int64).tobytes())


class Offsets:
    """The per-copy offsets of one trace of the windowed pass.

    Args:
      boxes: (B, 4) int32 squares ``(x1, x2, y1, y2)`` (traced).
      tables: the tables recorded at discovery, ``[(src, table), ...]``; None to record them.
      given: (B, T) int32 values of those tables per copy (from `host_offsets`), or None to
        compute them in the program (a gather from the constant table).
    """

    def __init__(self, boxes, tables: list | None = None, given=None):
        self.boxes, self.given = boxes, given
        self.recording = tables is None
        self.tables = [] if tables is None else tables
        self.index = {_key(t, s): i for i, (s, t) in enumerate(self.tables)}

    def __call__(self, table, src: int):
        """(B,) int32 values of ``table`` (indexed by the square's coordinate along ``src``) per copy."""
        table = np.asarray(table, np.int64)
        n = self.boxes.shape[0]
        if table.min() == table.max():
            return jnp.full((n,), int(table[0]), jnp.int32)
        key = _key(table, src)
        if key not in self.index and self.recording:
            self.index[key] = len(self.tables)
            self.tables.append((int(src), table))
        t = self.index.get(key)
        if self.given is not None and t is not None:
            return self.given[:, t]
        return jnp.asarray(table.astype(np.int32))[self.boxes[:, _COORD[src]]]


def host_offsets(tables: list, boxes: np.ndarray) -> np.ndarray:
    """(B, T) int32: every recorded table read at each box's coordinate (numpy, on the host)."""
    boxes = np.asarray(boxes)
    if not tables:
        return np.zeros((len(boxes), 1), np.int32)
    return np.stack([t[boxes[:, _COORD[s]]] for s, t in tables], axis=1).astype(np.int32)
