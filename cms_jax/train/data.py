"""Face images -> model inputs for fine-tuning, with a stable split and a seeded order.

Two ways in: ``align`` crops each face with the project's pipeline pieces
(`cms_jax.data.prepare.FacePreparer`: MediaPipe landmarks, cached on disk,
then the model's crop policy and margin), so a model fine-tuned here sees the
same crops the CMS job will show it (the paper's Eq. 1 input ``I``); ``resize``
only resizes, for faces that are already cropped (UTKFace chips, tests).

Crops stay uint8 in host memory and are preprocessed per batch (588 UTKFace
faces at 224x224 take 88 MB; a CelebA-sized set would need a streaming reader). The batch order
is a pure function of ``(seed, step)``: epoch ``e`` is a permutation drawn
from ``numpy.random.default_rng([seed, e])``, so a resumed run sees exactly
the batches an uninterrupted one would. The train/validation split is a hash
of the file's base name, so it does not move when files are added or reordered.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Sequence

import numpy as np


@dataclasses.dataclass
class FaceSet:
    """Face crops at the model input size with their labels."""

    files: list[str]
    images: np.ndarray          # uint8 (N, H, W, 3) RGB
    labels: np.ndarray          # int64 (N,)
    skipped: list[dict] = dataclasses.field(default_factory=list)  # {'file', 'reason'}

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, mask: np.ndarray) -> "FaceSet":
        idx = np.flatnonzero(mask)
        return FaceSet([self.files[i] for i in idx], self.images[idx], self.labels[idx], self.skipped)


def is_validation(files: Sequence[str], fraction: float) -> np.ndarray:
    """Boolean mask: True for files in the validation split.

    A file is in it when the first 8 bytes of the MD5 of its base name, read as
    a number in [0, 1), fall below `fraction`: stable across runs, machines and orderings.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    u = [int.from_bytes(hashlib.md5(os.path.basename(f).encode()).digest()[:8], "big") / 2.0 ** 64
         for f in files]
    return np.asarray(u, np.float64) < fraction


def load_faces(files: Sequence[str], labels: np.ndarray, input_hw: tuple[int, int], *, mode: str = "resize",
               model=None, workers: int = 0, cache_dir: str | None = None) -> FaceSet:
    """Read and crop faces; unreadable files and files without a face are skipped with a reason.

    Args:
      files: image paths.
      labels: one int label per file.
      input_hw: (H, W) of the model input.
      mode: 'resize' (already-cropped faces) or 'align' (MediaPipe + the model's crop policy).
      model: the `FaceModel` whose crop policy and margin 'align' uses.
      workers: host worker processes for 'align' (0 = this process).
      cache_dir: landmark cache folder for 'align'.

    Returns:
      The `FaceSet` of the faces that could be used.
    """
    import cv2

    from cms_jax.align import ImageError, load_image

    if len(files) != len(labels):
        raise ValueError(f"load_faces: {len(files)} files but {len(labels)} labels")
    h, w = int(input_hw[0]), int(input_hw[1])
    kept, crops, skipped = [], [], []
    if mode == "resize":
        for i, f in enumerate(files):
            try:
                rgb = load_image(f)
            except ImageError as e:
                skipped.append({"file": f, "reason": e.reason})
                continue
            # INTER_AREA averages when shrinking (no aliasing); fine when enlarging too.
            crops.append(cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA))
            kept.append(i)
    elif mode == "align":
        if model is None:
            raise ValueError("load_faces(mode='align') needs the model (its crop policy and margin)")
        import dataclasses as dc

        from cms_jax.data.prepare import FacePreparer

        prep = FacePreparer(dc.replace(model, input_size=(h, w)), workers=workers, cache_dir=cache_dir)
        try:
            for i, p in enumerate(prep.imap(list(files))):
                if p.reason:
                    skipped.append({"file": p.path, "reason": p.reason})
                else:
                    crops.append(p.crop)
                    kept.append(i)
        finally:
            prep.close()
    else:
        raise ValueError(f"load_faces: mode must be 'resize' or 'align', got {mode!r}")
    images = np.stack(crops).astype(np.uint8) if crops else np.zeros((0, h, w, 3), np.uint8)
    return FaceSet([files[i] for i in kept], images, np.asarray(labels, np.int64)[kept], skipped)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full batches in one pass over `n` examples (the remainder is left for the next epoch's shuffle)."""
    if n < batch_size:
        raise ValueError(f"{n} training examples is fewer than one batch of {batch_size}; "
                         f"lower --batch_size or add images")
    return n // batch_size


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Indices of the examples in batch `step` (global, 0-based) of a seeded shuffled order."""
    spe = steps_per_epoch(n, batch_size)
    epoch, pos = divmod(int(step), spe)
    order = np.random.default_rng([int(seed), epoch]).permutation(n)
    return order[pos * batch_size:(pos + 1) * batch_size]


def train_batch(faces: FaceSet, preprocess, batch_size: int, seed: int, step: int,
                flip: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed batch `step`: (x float32 (B,H,W,C), y int32 (B,)).

    With `flip`, each face is mirrored left-right with probability 1/2, drawn
    from ``default_rng([seed, step, 1])`` (faces are near-symmetric; the
    labels of these tasks do not change under a mirror, head-pose yaw aside).
    """
    idx = batch_indices(len(faces), batch_size, seed, step)
    crops = faces.images[idx]
    if flip:
        m = np.random.default_rng([int(seed), int(step), 1]).random(len(idx)) < 0.5
        crops = np.where(m[:, None, None, None], crops[:, :, ::-1], crops)
    return preprocess(crops), faces.labels[idx].astype(np.int32)
