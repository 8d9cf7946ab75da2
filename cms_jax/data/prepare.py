"""Host side of the job: decode, align (cached), crop, in Grain worker processes, prefetched.

The input pipeline is a Grain ``DataLoader`` over the image list: each worker
process creates its own MediaPipe FaceLandmarker lazily, on its first file;
results come back in input order with bounded prefetch, so host work overlaps
device scoring and memory stays flat whatever the number of images. Its
iterator state (a few integers per worker) goes into the run's Orbax
checkpoint, so a resumed run continues at the exact image. Landmarks are
cached on disk by file content and landmarker hash (``cms_jax.align.batch``),
so a resumed or repeated run makes no MediaPipe call for files it has seen.
Each worker exits by itself when the job dies, however it dies (``cms_jax.workers``).

Sharding: each JAX process takes its ``grain.ShardByJaxProcess`` share of the
sorted list as a contiguous range (Grain's ``even_split``). The range is cut
here and given to the loader unsharded, because Grain 0.2.18's ``DataLoader``
drops the last record of the longer shards when the list does not divide
evenly (11 files on 2 processes: file 5 is never read).
"""
from __future__ import annotations

import dataclasses
import pathlib
import traceback

import grain.python as grain
import numpy as np

from cms_jax.align import batch as align_batch
from cms_jax.align import cache as align_cache
from cms_jax.align import images as align_images
from cms_jax.align.crops import crop_face
from cms_jax.align.landmarker import Landmarker
from cms_jax.data import failures
from cms_jax.data.progress import StageTimer
from cms_jax.workers import exit_with_parent, parent_token


@dataclasses.dataclass
class Prepared:
    """One file after host work: a model-size crop and its landmarks, or the reason there is none."""

    path: str
    reason: str | None = None
    crop: np.ndarray | None = None      # uint8 (H, W, 3) RGB at the model input size
    xy: np.ndarray | None = None        # float32 (468, 2) landmarks in crop pixels
    z: np.ndarray | None = None         # float32 (468,) depth (for visibility)
    notes: tuple[str, ...] = ()
    error: tuple[str, str] | None = None  # (signature, traceback) of an unexpected exception
    seconds: dict = dataclasses.field(default_factory=dict)  # host seconds by stage (see prepare_one)


_LM = None  # this worker's landmarker, created on its first file


def _landmarker(settings: dict):
    global _LM
    if _LM is None:
        _LM = Landmarker(settings["model_path"], num_faces=settings["num_faces"])
    return _LM


def prepare_one(path: str, settings: dict, lm=None) -> Prepared:
    """Decode, align (through the cache) and crop one file; never raises for bad input.

    The result's ``seconds`` holds this file's host time by stage: ``read`` (file bytes and
    landmark cache), ``decode_align`` (decode and MediaPipe; decode only on a cache hit), ``crop``.
    """
    timer = StageTimer()
    try:
        p = _prepare(path, settings, lm or _landmarker(settings), timer)
    except align_images.ImageError as e:
        p = Prepared(path, reason=e.reason)
    except Exception as e:  # one bad file never stops the run: record why (a streak of them does)
        p = Prepared(path, reason=f"error: {type(e).__name__}: {e}",
                     error=(failures.signature(e, path), traceback.format_exc()))
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


class _PrepareFace(grain.MapTransform):
    """Grain transform: one file path -> `Prepared` (the landmarker is created lazily per worker).

    Unpickling it is the first thing a Grain worker does with the pipeline, so that is where the
    worker ties its life to the job's (``cms_jax.workers``; the ``DataLoader`` has no init hook).
    """

    def __init__(self, settings: dict):
        self.settings = settings

    def __getstate__(self) -> dict:
        # Grain pickles the pipeline in the thread that starts the worker, right before starting it.
        return {"settings": self.settings, "parent": parent_token()}

    def __setstate__(self, state: dict) -> None:
        self.settings = state["settings"]
        exit_with_parent(*state["parent"])  # a no-op where it was pickled

    def map(self, path: str) -> Prepared:
        return prepare_one(path, self.settings)


def grain_flags_parsed() -> None:
    """Grain reads absl flags; mark them parsed when the caller is a library user, not an absl app."""
    from absl import flags
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def process_range(n: int, index: int | None = None, count: int | None = None) -> tuple[int, int]:
    """A process's contiguous share ``[start, end)`` of ``n`` files: this JAX process's
    (``grain.ShardByJaxProcess``) by default, or process ``index`` of ``count``."""
    # Private on purpose: Grain's public `grain.sharding` exports only the options (no `even_split`),
    # and this is the very split its own samplers apply, so the share matches Grain's exactly.
    from grain._src.core.sharding import even_split
    if index is None:
        return even_split(n, grain.ShardByJaxProcess(drop_remainder=False))
    if not 0 <= index < count:
        raise ValueError(f"process index {index} outside [0, {count})")
    return even_split(n, grain.ShardOptions(index, count, drop_remainder=False))


class FacePreparer:
    """Streams `Prepared` items for a list of files, in order, through a Grain loader.

    Args:
      model: the FaceModel (input size and crop policy are read from it).
      workers: Grain worker processes; 0 runs in this process (tests, debugging).
      cache_dir: landmark cache folder (None disables the cache).
      in_flight: files prepared ahead of the consumer, over all workers.
    """

    def __init__(self, model, workers: int = 2, cache_dir: str | None = None, in_flight: int = 64):
        from cms_jax.assets import resolve
        model_path = str(resolve("face_landmarker"))
        self.settings = {
            "model_path": model_path, "num_faces": 4, "cache_dir": cache_dir,
            "model_sha": align_cache.model_hash(model_path),
            "policy": model.crop_policy, "margin": float(model.crop_margin),
            "out_hw": tuple(model.input_size),
        }
        self.workers = int(workers)
        self.in_flight = max(in_flight, 2 * max(workers, 1))
        self._lm = Landmarker(model_path, num_faces=4) if workers == 0 else None
        self._iterators = []

    def loader(self, paths: list[str], state: bytes | None = None):
        """A Grain iterator of `Prepared`, one per path, in order, from ``state`` when given.

        ``iterator.get_state()`` (bytes) after consuming k items resumes at item k.
        """
        grain_flags_parsed()
        if self._lm is not None:
            global _LM
            _LM = self._lm  # workers=0: this process's landmarker
        loader = grain.DataLoader(
            data_source=list(paths),
            sampler=grain.IndexSampler(len(paths), shard_options=grain.NoSharding(), shuffle=False,
                                       num_epochs=1),
            operations=[_PrepareFace(self.settings)], worker_count=self.workers,
            worker_buffer_size=max(1, self.in_flight // max(self.workers, 1)))
        it = iter(loader)
        self._iterators.append(it)
        if state is not None:
            it.set_state(state)
        return it

    def imap(self, paths):
        """Yield one `Prepared` per path, in order."""
        paths = list(paths)
        if paths:
            yield from self.loader(paths)

    def close(self) -> None:
        """Stop the worker processes of every loader and close this process's landmarker."""
        global _LM
        for it in self._iterators:
            close = getattr(getattr(it, "_iterator", it), "close", None)
            if close is not None:
                close()
        self._iterators = []
        if self._lm is not None:
            if _LM is self._lm:
                _LM = None
            self._lm.close()
            self._lm = None
