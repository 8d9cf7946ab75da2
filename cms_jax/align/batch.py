"""Aligning many files (M_I for every image): worker processes and a disk cache.

MediaPipe is CPU-bound and single-threaded per graph, so throughput comes from
one FaceLandmarker per worker process (created once by the pool initializer,
which also makes the worker exit when this process dies: ``cms_jax.workers``).
Each file's outcome is cached by content and landmarker hash (cache.py), so a
second run over the same files makes no MediaPipe call
(``stats['detect_calls'] == 0``).
"""
from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import pathlib
import time

import numpy as np

from cms_jax.align import images
from cms_jax.align.cache import cache_key, entry_path, model_hash, read_entry, write_entry
from cms_jax.align.landmarker import Face, Landmarker
from cms_jax.workers import exit_with_parent, parent_token

NO_FACE = "no face"


@dataclasses.dataclass(frozen=True)
class AlignResult:
    """The outcome for one file: a face, or the reason there is none.

    Attributes:
      path: the input path as given.
      face: the (largest) face, or None.
      reason: None when aligned; else an ``images`` reason or ``"no face"``.
      notes: conversions made and events worth reporting (e.g. several faces).
      image_hw: (H, W) of the decoded image, when it decoded.
      from_cache: True when read from the disk cache (no MediaPipe call).
    """
    path: str
    face: Face | None
    reason: str | None
    notes: tuple[str, ...] = ()
    image_hw: tuple[int, int] | None = None
    from_cache: bool = False

    @property
    def ok(self) -> bool:
        return self.face is not None


def align_bytes(lm: Landmarker, name: str, data: bytes, keep_image: bool = False) -> dict:
    """Decodes and aligns one file's bytes; never raises for bad input.

    Returns:
      A plain dict (picklable, cacheable): ``reason`` (None when aligned),
      ``notes``, ``called`` (1 if MediaPipe ran), and when decoded ``hw``;
      when aligned ``xy``, ``z``, ``matrix``, ``box``, ``num_faces``; with
      ``keep_image`` also ``rgb``, the decoded image (never cached), so a
      caller that crops needs no second decode.
    """
    try:
        rgb, notes = images.load_image_bytes(data, name)
    except images.ImageError as e:
        return {"reason": e.reason, "notes": (e.detail,) if e.detail else (), "called": 0}
    face = lm.detect(rgb)
    out = {"reason": None if face else NO_FACE, "notes": notes, "hw": rgb.shape[:2], "called": 1}
    if keep_image:
        out["rgb"] = rgb
    if face is not None:
        out.update(xy=face.xy, z=face.z, matrix=face.matrix, box=face.box, num_faces=face.num_faces)
        if face.num_faces > 1:
            out["notes"] = notes + (f"several faces ({face.num_faces}): took the largest",)
    return out


def _align_path(lm: Landmarker, path: str, key_of) -> dict:
    """Reads and aligns one file; adds its cache ``key`` when ``key_of`` is given."""
    try:
        data = images.read_bytes(path)
    except images.ImageError as e:
        return {"reason": e.reason, "notes": (e.detail,), "called": 0}
    d = align_bytes(lm, path, data)
    if key_of is not None:
        # Keyed on the bytes actually aligned (the file may change meanwhile).
        d["key"] = key_of(data)
    return d


_WORKER: dict = {}


def _worker_init(model_path: str, num_faces: int, key_of, parent: tuple[int, bool]) -> None:
    exit_with_parent(*parent)  # first: a worker never outlives the job (cms_jax/workers.py)
    lm = Landmarker(model_path, num_faces=num_faces)
    _WORKER.update(lm=lm, key_of=key_of)
    # Pool workers leave through os._exit: close the graph in multiprocessing's
    # own exit hook rather than relying on interpreter shutdown.
    multiprocessing.util.Finalize(None, lm.close, exitpriority=10)


def _worker_run(item: tuple[int, str]) -> tuple[int, dict]:
    i, path = item
    return i, _align_path(_WORKER["lm"], path, _WORKER["key_of"])


def _to_result(path: str, d: dict, from_cache: bool) -> AlignResult:
    face = None
    if d.get("reason") is None:
        face = Face(xy=np.asarray(d["xy"], np.float32), z=np.asarray(d["z"], np.float32),
                    matrix=np.asarray(d["matrix"], np.float32), num_faces=int(d["num_faces"]),
                    box=np.asarray(d["box"], np.float32))
    hw = tuple(int(v) for v in d["hw"]) if d.get("hw") is not None else None
    return AlignResult(path=path, face=face, reason=d.get("reason"),
                       notes=tuple(str(n) for n in d.get("notes", ())),
                       image_hw=hw, from_cache=from_cache)


def align_files(paths, workers: int = 2, cache_dir=None, num_faces: int = 4,
                model_path=None, stats: dict | None = None,
                start_method: str = "spawn") -> list[AlignResult]:
    """Aligns a list of image files, in order; every file gets a result.

    Args:
      paths: image file paths.
      workers: worker processes; 0 or 1 aligns in this process.
      cache_dir: folder of the disk cache; None disables it.
      num_faces: faces MediaPipe looks for (the largest is kept).
      model_path: the ``face_landmarker.task`` bundle; default: the asset.
      stats: optional dict, filled with ``files``, ``aligned``, ``cache_hits``,
        ``detect_calls`` (MediaPipe calls made) and ``seconds``.
      start_method: multiprocessing start method; ``spawn`` is safe when the
        parent already runs JAX threads.

    Returns:
      One ``AlignResult`` per path, in the order given.
    """
    t0 = time.perf_counter()
    from cms_jax.assets import resolve
    model_path = str(model_path or resolve("face_landmarker"))
    paths = [str(p) for p in paths]
    cache = pathlib.Path(cache_dir) if cache_dir is not None else None
    msha = model_hash(model_path) if cache is not None else ""
    key_of = functools.partial(cache_key, model_sha=msha, num_faces=num_faces) if cache else None
    results: list[AlignResult | None] = [None] * len(paths)
    # Only indices travel to the workers, which read the files themselves:
    # memory stays flat however many files there are.
    todo, hits = [], 0
    for i, p in enumerate(paths):
        if cache is not None:
            try:
                d = read_entry(entry_path(cache, key_of(images.read_bytes(p))))
            except images.ImageError:
                d = None  # the worker reports it
            if d is not None:
                results[i], hits = _to_result(p, d, True), hits + 1
                continue
        todo.append((i, p))

    calls = 0
    if todo:
        if workers <= 1 or len(todo) < 2 * workers:
            with Landmarker(model_path, num_faces=num_faces) as lm:
                outs = [(i, _align_path(lm, p, key_of)) for i, p in todo]
        else:
            ctx = multiprocessing.get_context(start_method)
            chunk = max(1, min(32, len(todo) // (4 * workers)))
            # The pool is started and joined in this thread, so the parent-death signal is safe.
            parent = parent_token(pdeathsig=True)
            with ctx.Pool(workers, _worker_init, (model_path, num_faces, key_of, parent)) as pool:
                outs = list(pool.imap_unordered(_worker_run, todo, chunksize=chunk))
                pool.close()
                pool.join()
        for i, d in outs:
            calls += d.pop("called")
            key = d.pop("key", None)
            results[i] = _to_result(paths[i], d, False)
            if key is not None:
                write_entry(entry_path(cache, key), d)
    if stats is not None:
        stats.update(files=len(paths), aligned=sum(r.ok for r in results), cache_hits=hits,
                     detect_calls=calls, seconds=time.perf_counter() - t0)
    return results
