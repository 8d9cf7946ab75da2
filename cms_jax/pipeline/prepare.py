"""Host side of the job: decode, align (cached), crop, in worker processes, prefetched.

One persistent pool of worker processes, each with its own MediaPipe
FaceLandmarker; results come back in input order with a bounded number of
files in flight, so host work overlaps device scoring and memory stays flat
whatever the number of images. Landmarks are cached on disk by file content
and landmarker hash (``cms_jax.align.batch``), so a resumed or repeated run
makes no MediaPipe call for files it has seen.

Why not Grain: Grain shines for random-access training pipelines with
shuffling and sharded record files; this job reads each image once, in a fixed
order, and its per-item work is a native MediaPipe graph that must live one
per process. A process pool with a bounded window gives the same overlap with
no extra dependency.
"""
from __future__ import annotations

import collections
import dataclasses
import multiprocessing
import os
import pathlib

import numpy as np

from cms_jax.align import batch as align_batch
from cms_jax.align import cache as align_cache
from cms_jax.align import images as align_images
from cms_jax.align.crops import crop_face
from cms_jax.align.landmarker import Landmarker
from cms_jax.pipeline.progress import StageTimer


@dataclasses.dataclass
class Prepared:
    """One file after host work: a model-size crop and its landmarks, or the reason there is none."""

    path: str
    reason: str | None = None
    crop: np.ndarray | None = None      # uint8 (H, W, 3) RGB at the model input size
    xy: np.ndarray | None = None        # float32 (468, 2) landmarks in crop pixels
    z: np.ndarray | None = None         # float32 (468,) depth (for visibility)
    notes: tuple[str, ...] = ()
    seconds: dict = dataclasses.field(default_factory=dict)  # host seconds by stage (see prepare_one)


_LM = None
_SETTINGS: dict = {}


def _init(settings: dict) -> None:
    global _LM, _SETTINGS
    _SETTINGS = settings
    _LM = Landmarker(settings["model_path"], num_faces=settings["num_faces"])
    multiprocessing.util.Finalize(None, _LM.close, exitpriority=10)


def prepare_one(path: str, settings: dict | None = None, lm=None) -> Prepared:
    """Decode, align (through the cache) and crop one file; never raises for bad input.

    The result's ``seconds`` holds this file's host time by stage: ``read`` (file bytes and
    landmark cache), ``decode_align`` (decode and MediaPipe; decode only on a cache hit), ``crop``.
    """
    timer = StageTimer()
    try:
        p = _prepare(path, settings or _SETTINGS, lm or _LM, timer)
    except align_images.ImageError as e:
        p = Prepared(path, reason=e.reason)
    except Exception as e:  # one bad file never stops the run: record why
        p = Prepared(path, reason=f"error: {type(e).__name__}: {e}")
    p.seconds = dict(timer.seconds)
    return p


def _prepare(path: str, s: dict, lm, timer: StageTimer) -> Prepared:
    with timer("read"):
        data = align_images.read_bytes(path)
        cache = pathlib.Path(s["cache_dir"]) if s.get("cache_dir") else None
        d = None
        if cache is not None:
            entry = align_cache.entry_path(cache, align_cache.cache_key(data, s["model_sha"], s["num_faces"]))
            d = align_cache.read_entry(entry)
    rgb = None
    if d is None:
        with timer("decode_align"):
            d = align_batch.align_bytes(lm, path, data, keep_image=True)
        d.pop("called", None)
        rgb = d.pop("rgb", None)
        if cache is not None and d.get("reason") != align_images.UNREADABLE:
            with timer("read"):
                align_cache.write_entry(entry, d)
    if d.get("reason"):
        return Prepared(path, reason=str(d["reason"]), notes=tuple(d.get("notes", ())))
    notes = ()
    if rgb is None:  # landmarks came from the cache: decode for the crop
        with timer("decode_align"):
            rgb, notes = align_images.load_image_bytes(data, path)
    with timer("crop"):
        crop, xy = crop_face(rgb, np.asarray(d["xy"], np.float32), s["policy"], s["margin"], s["out_hw"])
    return Prepared(path, crop=np.ascontiguousarray(crop, np.uint8), xy=np.asarray(xy, np.float32),
                    z=np.asarray(d["z"], np.float32), notes=tuple(d.get("notes", ())) or tuple(notes))


def _work(path: str) -> Prepared:
    return prepare_one(path)


class FacePreparer:
    """Streams `Prepared` items for a list of files, in order, with bounded prefetch.

    Args:
      model: the FaceModel (input size and crop policy are read from it).
      canon: unused here; kept for symmetry with the scorer.
      cfg: the RunConfig (unused fields ignored).
      workers: worker processes; 0 runs in this process (tests, debugging).
      cache_dir: landmark cache folder (None disables the cache).
      in_flight: files submitted ahead of the consumer.
    """

    def __init__(self, model, canon, cfg, workers: int = 2, cache_dir: str | None = None,
                 in_flight: int = 64):
        from cms_jax.assets import resolve
        model_path = str(resolve("face_landmarker"))
        self.settings = {
            "model_path": model_path, "num_faces": 4, "cache_dir": cache_dir,
            "model_sha": align_cache.model_hash(model_path),
            "policy": model.crop_policy, "margin": float(model.crop_margin),
            "out_hw": tuple(model.input_size),
        }
        self.workers = workers
        self.in_flight = max(in_flight, 2 * max(workers, 1))
        self._pool = None
        self._lm = None
        if workers > 0:
            ctx = multiprocessing.get_context("spawn")  # the parent runs JAX threads: never fork
            self._pool = ctx.Pool(workers, _init, (self.settings,))
        else:
            self._lm = Landmarker(model_path, num_faces=4)

    def imap(self, paths):
        """Yield one `Prepared` per path, in order."""
        if self._pool is None:
            for p in paths:
                yield prepare_one(p, self.settings, self._lm)
            return
        window = collections.deque()
        it = iter(paths)
        for p in it:
            window.append(self._pool.apply_async(_work, (p,)))
            if len(window) >= self.in_flight:
                yield window.popleft().get()
        while window:
            yield window.popleft().get()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None
        if self._lm is not None:
            self._lm.close()
            self._lm = None


def label_for(cfg, path: str) -> int | None:
    """The target class from the file name when ``cfg.label_from`` says so, else None (predicted).

    'utkface_gender': UTKFace names are AGE_GENDER_RACE_...; GENDER 0 male, 1 female, while the
    gender model's classes are 0 woman, 1 man.
    """
    if not cfg.label_from:
        return None
    name = os.path.basename(path)
    try:
        gender = int(name.split("_")[1])
    except (IndexError, ValueError):
        return None
    return 1 - gender
