"""In a notebook: a few photos' CIS (Eqs. 1-5) and their CMS (Eq. 6), in one call each.

    import cms_jax
    result = cms_jax.explain("gender", ["face.jpg", "other.png"])
    cms_jax.show(result[0])     # the first photo's CIS on the photo, with a colour bar
    cms_jax.show(result)        # the CMS of the photos on the canonical face

`explain` scores exactly as the main job does: the same `RunConfig` (every
option of the job that changes numbers is a keyword), the same preparation
(`FacePreparer`: decode, MediaPipe, the model's crop), the same `Scorer`
(vertex geometry, the one engine, per-image retry and reasons) and the same
target rule (`LabelRule`). Its drops equal the job's ``drops.npz`` for the
same images and options (tests/test_notebook.py). Arrays are written once as
lossless PNG files and read back, so an array and the file it came from give
the same numbers.

`overlay` draws a result as an RGB array (a face: its CIS on its own photo,
cropped as the model saw it, or on the canonical face; a whole result: the CMS
on the canonical face), with a colour bar in the score's units; `show`
displays it in IPython (or matplotlib).
"""
from __future__ import annotations

import dataclasses
import os
import tempfile

import numpy as np

from cms_jax.accumulate import CMSAccumulator
from cms_jax.data.prepare import FacePreparer
from cms_jax.pipeline import RunConfig
from cms_jax.projection import count_normalise, splat
from cms_jax.render import colours, panel
from cms_jax.render.faces import CropSpec, faces_cis
from cms_jax.scoring.labels import LabelRule
from cms_jax.scoring.scorer import Scorer

# RunConfig fields a caller may set (images and model are explain's own arguments).
_OPTIONS = tuple(f.name for f in dataclasses.fields(RunConfig) if f.name not in ("model", "images", "max_images",
                                                                                   "label_from", "groups",
                                                                                   "reference"))


@dataclasses.dataclass
class FaceResult:
    """One photo explained: its drops (Eq. 1 per vertex) and its CIS on the canonical face (Eqs. 4-5).

    Attributes:
      source: the file, or ``array[i]`` for the i-th array given.
      crop: uint8 (H, W, 3) RGB, the model's input crop (what it saw).
      drops, valid: (V,) drop per canonical vertex and whether it was scored.
      xy: (V, 2) the vertices in crop pixels.
      side: the canonical square side f_i of this face (Algorithm 1 line 4).
      target: the output explained (the predicted class unless a target was given).
      target_name: its name.
      clean: the clean (unoccluded) confidence of ``target``.
      cis: (H_F, W_F) float32 the CIS; cis_mask: bool, where it is defined (N > 0).
    """
    source: str
    crop: np.ndarray
    drops: np.ndarray
    valid: np.ndarray
    xy: np.ndarray
    side: float
    target: int
    target_name: str
    clean: float
    cis: np.ndarray
    cis_mask: np.ndarray
    _owner: "Explanation | None" = dataclasses.field(default=None, repr=False)

    def __repr__(self) -> str:
        return (f"FaceResult({self.source!r}: {self.target_name} at confidence {self.clean:.3f}, "
                f"{int(self.valid.sum())} of {len(self.valid)} vertices scored)")


@dataclasses.dataclass
class Explanation:
    """What `explain` returns: the faces explained (index it like a list), those skipped, and their CMS.

    Attributes:
      faces: one `FaceResult` per photo scored, in the order given.
      skipped: ``{"file", "reason"}`` for every photo not scored (no face, unreadable, ...).
      cms: (H_F, W_F) float32 the CMS of the faces (Eq. 6, the ``reduce`` option).
      cms_mask: bool (H_F, W_F), where some face's CIS is defined.
      unit: what the values measure ("drop in probability", ...).
      model: the model's name; config: the `RunConfig` used; canon: the canonical face.
    """
    faces: list[FaceResult]
    skipped: list[dict]
    cms: np.ndarray
    cms_mask: np.ndarray
    unit: str
    model: str
    config: RunConfig
    canon: object
    crop_spec: CropSpec
    cache_dir: str

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, i) -> FaceResult:
        return self.faces[i]

    def __iter__(self):
        return iter(self.faces)

    def __repr__(self) -> str:
        skipped = f", {len(self.skipped)} skipped" if self.skipped else ""
        return f"Explanation({self.model}: {len(self.faces)} faces{skipped}; {self.unit})"


def _image_files(images, folder: str) -> tuple[list[str], dict[str, str]]:
    """Paths for ``images`` (a path, an array, or a list of them); arrays become PNG files in ``folder``."""
    import cv2

    from cms_jax.data.image_list import expand_images
    if isinstance(images, (str, os.PathLike)):
        return expand_images(str(images)), {}
    items = [images] if isinstance(images, np.ndarray) else list(images)
    if not items:
        raise ValueError("explain: images is empty; give a path, a folder, an RGB array or a list of them")
    paths, names = [], {}
    for i, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            paths.append(str(item))
            continue
        a = np.asarray(item)
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] not in (3, 4):
            raise ValueError(f"explain: images[{i}] must be a file path or a uint8 (H, W, 3) RGB array, got "
                             f"{a.dtype} {a.shape}")
        path = os.path.join(folder, f"array_{i:05d}.png")
        if not cv2.imwrite(path, cv2.cvtColor(np.ascontiguousarray(a[..., :3]), cv2.COLOR_RGB2BGR)):
            raise OSError(f"explain: could not write images[{i}] to {path}")
        paths.append(path)
        names[path] = f"array[{i}]"
    return paths, names


def _config(model, options: dict) -> RunConfig:
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise TypeError(f"explain: unknown option(s) {', '.join(unknown)}; the options are {', '.join(_OPTIONS)}")
    name = model if isinstance(model, str) else getattr(model, "name", "model")
    cfg = RunConfig(model=str(name), **options)
    cfg.validate()
    return cfg


def explain(model, images, *, workers: int = 0, cache_dir: str | None = None, **options) -> Explanation:
    """Explain ``model`` on ``images``: each photo's CIS (Eqs. 1-5) and the CMS of all of them (Eq. 6).

    Args:
      model: a built-in model name ('gender', 'vgg_face', ...), a model file (ONNX, HDF5, ...) or a
        loaded `cms_jax.models.FaceModel`.
      images: a file, a folder or glob (as the job's ``--images``), a uint8 (H, W, 3) RGB array, or a
        list of files and arrays.
      workers: host worker processes for decoding and MediaPipe (0: in this process).
      cache_dir: the landmark cache (default: a temporary folder of this result, so `overlay` does not
        run MediaPipe again).
      **options: any option of the main job that changes numbers, as `RunConfig` names it: ``target``
        (a class or output name or index; default: each face's predicted class), ``patch_size``,
        ``score`` ('prob' or 'logit'), ``fill``, ``subdivision``, ``visibility``, ``canvas``,
        ``reduce``, ``batch_size``, ``incremental``, ``onnx_backend``, ``dtype``, ``approx_tau``.

    Returns:
      An `Explanation`.

    Raises:
      TypeError: an unknown option. ValueError: bad images or options, or no photo could be scored
        (the message gives each photo's reason).
    """
    cfg = _config(model, options)
    cache_dir = cache_dir or tempfile.mkdtemp(prefix="cms_jax_explain_")
    paths, names = _image_files(images, cache_dir)
    scorer = Scorer(cfg, model=None if isinstance(model, str) else model)  # a name: loaded as the job does
    rule = LabelRule("", scorer.model, target=cfg.target)
    preparer = FacePreparer(scorer.model, workers=workers, cache_dir=cache_dir)
    try:
        prepared = list(preparer.imap(paths))
    finally:
        preparer.close()
    skipped = [{"file": names.get(p.path, p.path), "reason": p.reason} for p in prepared if p.reason is not None]
    good = [p for p in prepared if p.reason is None]
    result, failed = (scorer.score(good, [rule(p.path)[0] for p in good]) if good else (None, []))
    skipped += [{"file": names.get(f["file"], f["file"]), "reason": f["reason"]} for f in failed]
    if result is None:
        raise ValueError("explain: no photo could be scored: "
                         + "; ".join(f"{s['file']}: {s['reason']}" for s in skipped))
    return _explanation(cfg, scorer, result, good, names, skipped, cache_dir)


def _explanation(cfg, scorer, result, good, names, skipped, cache_dir) -> Explanation:
    canon, model = scorer.canon, scorer.model
    acc = CMSAccumulator(canon.canvas_hw, reduce=cfg.reduce)
    state = acc.add_drops(acc.empty_state(), result.drops, result.valid, canon.vertices, result.sides)
    unit = colours.score_unit({"model_output": model.output, "score": cfg.score, "reduce": cfg.reduce,
                               "config": {"target": cfg.target}})
    by_path = {p.path: p for p in good}
    out = Explanation([], skipped, acc.result(state).astype(np.float32), np.asarray(state["covered"]) > 0,
                      unit, model.name, cfg, canon,
                      CropSpec(model.crop_policy, float(model.crop_margin), tuple(model.input_size),
                               float(scorer.patch)), cache_dir)
    for i, path in enumerate(result.files):
        p = by_path[path]
        xy, _ = scorer.vertices(p.xy, p.z)
        p_star, count = splat(result.drops[i], canon.vertices, canon.canvas_hw, float(result.sides[i]),
                              result.valid[i])
        t = int(result.targets[i]) if np.ndim(result.targets[i]) == 0 else -1
        name = model.class_names[t] if 0 <= t < len(model.class_names) else (cfg.target or "embedding")
        out.faces.append(FaceResult(names.get(path, path), np.asarray(p.crop, np.uint8), result.drops[i],
                                    result.valid[i], xy, float(result.sides[i]), t, str(name),
                                    float(result.clean[i]), np.asarray(count_normalise(p_star, count), np.float32),
                                    count > 0, _owner=out))
    return out


def overlay(item, *, on: str = "", size: int = 352, scale: colours.Scale | None = None) -> np.ndarray:
    """``item`` drawn as uint8 (h, w, 3) RGB with a colour bar in the score's units.

    Args:
      item: a `FaceResult` (default ``on='photo'``: its CIS projected onto its photo, cropped as the
        model saw it) or an `Explanation` (its CMS on the canonical face).
      on: 'photo' or 'canonical' (a face's CIS on the canonical face; the only choice for a CMS).
      size: width in pixels.
      scale: the colours (default: the map's own range, diverging around 0 when it has negatives;
        pass one `cms_jax.render.colours.joint` scale to compare several maps).
    """
    import cv2
    if isinstance(item, Explanation):
        if on not in ("", "canonical"):
            raise ValueError(f"overlay: a CMS lives on the canonical face; on={on!r} is for a single face")
        values, mask, owner = item.cms, item.cms_mask, item
    elif isinstance(item, FaceResult):
        owner = item._owner
        if owner is None:
            raise ValueError("overlay: this FaceResult was not made by cms_jax.explain")
        if on in ("", "photo"):
            shown = faces_cis([_file_of(item, owner)], item.drops[None], item.valid[None], owner.canon,
                              owner.crop_spec, size=size, cache_dir=owner.cache_dir)[0]
            if shown.reason is not None:
                raise ValueError(f"overlay: cannot draw {item.source} on its photo: {shown.reason}")
            sc = scale or colours.fit(shown.cis, shown.mask, unit=owner.unit)
            return panel.map_panel(shown.rgb, shown.cis, shown.mask, sc)
        if on != "canonical":
            raise ValueError(f"overlay: on must be 'photo' or 'canonical', got {on!r}")
        values, mask = item.cis, item.cis_mask
    else:
        raise TypeError(f"overlay: expected a FaceResult or an Explanation from cms_jax.explain, got "
                        f"{type(item).__name__}")
    sc = scale or colours.fit(values, mask, unit=owner.unit)
    rgb = panel.map_panel(owner.canon.image, values, mask, sc)
    h = int(round(rgb.shape[0] * size / rgb.shape[1]))
    return cv2.resize(rgb, (size, h), interpolation=cv2.INTER_AREA) if size != rgb.shape[1] else rgb


def _file_of(face: FaceResult, owner: Explanation) -> str:
    if face.source.startswith("array[") and face.source.endswith("]"):
        return os.path.join(owner.cache_dir, f"array_{int(face.source[6:-1]):05d}.png")
    return face.source


def show(item, **kwargs) -> None:
    """Display `overlay` (``item``, ``kwargs``) in IPython/Jupyter, else in a matplotlib window."""
    rgb = overlay(item, **kwargs)
    try:
        from IPython import get_ipython
        from IPython.display import display
        if get_ipython() is not None:
            from PIL import Image
            display(Image.fromarray(rgb))
            return
    except ImportError:
        pass
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise RuntimeError("show: needs IPython or matplotlib; use cms_jax.overlay(...) for the RGB array and "
                           "cms_jax.viz.save_png to write it") from e
    plt.figure(figsize=(rgb.shape[1] / 100, rgb.shape[0] / 100))
    plt.imshow(rgb)
    plt.axis("off")
    plt.show()
