"""Readers for the canonical meshes: MediaPipe's OBJ and its bundle metadata.

``canonical_face_model.obj`` (an Apple ModelIO export) lists its 468 vertices
in first-use order, not in landmark order. The landmark order is recovered
from the UVs: the ``face_landmarker.task`` bundle carries the same canonical
mesh in landmark order (``geometry_pipeline_metadata_landmarks.binarypb``, a
``GeometryPipelineMetadata`` protobuf whose mesh vertex buffer holds
x, y, z, u, v per landmark), and each OBJ ``vt`` equals that landmark's
(u, 1 - v). Matching UVs gives a one-to-one vertex map; positions then agree
with the bundle's up to a translation (checked in tests).
"""
from __future__ import annotations

import functools
import struct
import zipfile

import numpy as np

_METADATA = "geometry_pipeline_metadata_landmarks.binarypb"


def read_obj(path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parses a triangle OBJ.

    Returns:
      (positions float64 (V, 3), uvs float64 (V, 2) in OBJ vertex order,
      triangles int64 (T, 3) 0-based vertex indices).
    """
    v, vt, f, fuv = [], [], [], []
    with open(path) as fh:
        for line in fh:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "v":
                v.append([float(a) for a in parts[1:4]])
            elif parts[0] == "vt":
                vt.append([float(a) for a in parts[1:3]])
            elif parts[0] == "f":
                if len(parts) != 4:
                    raise ValueError(f"{path}: only triangles are supported, got {line.strip()!r}")
                ids = [p.split("/") for p in parts[1:]]
                f.append([int(i[0]) - 1 for i in ids])
                fuv.append([int(i[1]) - 1 if len(i) > 1 and i[1] else int(i[0]) - 1 for i in ids])
    pos, tri = np.array(v, np.float64), np.array(f, np.int64)
    uv = np.full((len(pos), 2), np.nan)
    if vt:
        uv[tri.ravel()] = np.array(vt, np.float64)[np.array(fuv).ravel()]
    return pos, uv, tri


def _varint(b: bytes, i: int) -> tuple[int, int]:
    r = s = 0
    while True:
        c = b[i]
        i += 1
        r |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return r, i


def _fields(b: bytes):
    """Yields (field number, wire type, value) of one protobuf message."""
    i = 0
    while i < len(b):
        key, i = _varint(b, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, i = _varint(b, i)
        elif wt == 1:
            val, i = b[i:i + 8], i + 8
        elif wt == 2:
            n, i = _varint(b, i)
            val, i = b[i:i + n], i + n
        elif wt == 5:
            val, i = b[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wt}")
        yield num, wt, val


@functools.lru_cache(maxsize=4)
def bundle_canonical_mesh(task_path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The canonical mesh stored in a ``face_landmarker.task`` bundle.

    Returns:
      (positions float64 (468, 3), uvs float64 (468, 2), triangles (T, 3)),
      in landmark order.
    """
    with zipfile.ZipFile(task_path) as z:
        blob = z.read(_METADATA)
    # GeometryPipelineMetadata: field 1 = canonical_mesh (Mesh3d);
    # Mesh3d: 3 = vertex_buffer (float), 4 = index_buffer (uint32).
    mesh = next(v for n, wt, v in _fields(blob) if n == 1 and wt == 2)
    floats, ints = [], []
    for n, wt, v in _fields(mesh):
        if n == 3:
            floats.extend(struct.unpack(f"<{len(v) // 4}f", v) if wt == 2 else struct.unpack("<f", v))
        elif n == 4:
            if wt == 2:  # packed
                j = 0
                while j < len(v):
                    x, j = _varint(v, j)
                    ints.append(x)
            else:
                ints.append(v)
    vb = np.array(floats, np.float64).reshape(-1, 5)
    return vb[:, :3], vb[:, 3:], np.array(ints, np.int64).reshape(-1, 3)


def obj_in_landmark_order(obj_path, task_path) -> tuple[np.ndarray, np.ndarray]:
    """Reads the canonical OBJ and reorders its vertices into landmark order.

    Returns:
      (positions float64 (468, 3), triangles int64 (T, 3)) in landmark order,
      triangle winding as in the OBJ.
    """
    pos, uv, tri = read_obj(obj_path)
    _, buv, _ = bundle_canonical_mesh(str(task_path))
    target = np.stack([buv[:, 0], 1.0 - buv[:, 1]], 1)  # OBJ v runs the other way
    d = np.abs(uv[None, :, :] - target[:, None, :]).sum(-1)  # (468 landmarks, V obj)
    obj_of_lm = d.argmin(1)
    if len(pos) != len(target) or len(set(obj_of_lm.tolist())) != len(target) \
            or d.min(1).max() > 1e-4:
        raise ValueError(f"{obj_path}: its UVs do not match the landmark bundle's one to one")
    lm_of_obj = np.empty(len(pos), np.int64)
    lm_of_obj[obj_of_lm] = np.arange(len(target))
    return pos[obj_of_lm], lm_of_obj[tri]
