"""Shared plumbing of the figure functions: pipeline runs reused through drops.npz, panels, JSON.

A CMS run (Algorithm 1 over a set, Eq. 6) is computed once by the pipeline and
every figure that needs per-image drops reads its ``drops.npz``: the per-vertex
drop vector is the canonical record of a CIS, so subsets, unnormalised splats
and re-renderings need no rescoring.
"""
from __future__ import annotations

import dataclasses
import json
import os

import matplotlib.pyplot as plt
import numpy as np

from cms_jax import storage, viz
from cms_jax.align.canonical import CanonicalFace
from cms_jax.pipeline import RunConfig, read_run, run_job
from cms_jax.projection import square_coverage


@dataclasses.dataclass
class Run:
    """The outputs of one pipeline run, loaded.

    Attributes:
      out_dir: the run's folder.
      summary: its summary.json.
      cms: (H_F, W_F) float32 CMS (Eq. 6).
      files: (N,) file names of the scored images.
      drops, valid: (N, V) per-vertex drops and their mask.
      targets, clean: (N,) class scored and its unoccluded confidence.
      canon: the canonical face the run used.
      sides: (N,) float32, each image's canonical square side f_i (drops.npz's ``canonical_side``;
        all equal for ``loose`` and ``tight`` crops).
      coverage: bool (H_F, W_F), pixels some vertex square reaches at some image's side (N > 0 in Eq. 5).
    """

    out_dir: str
    summary: dict
    cms: np.ndarray
    files: np.ndarray
    drops: np.ndarray
    valid: np.ndarray
    targets: np.ndarray
    clean: np.ndarray
    canon: CanonicalFace
    sides: np.ndarray
    coverage: np.ndarray


def short_name(path: str, width: int = 24) -> str:
    """A file's base name cut to ``width`` characters (panel titles must not run into each other)."""
    name = os.path.basename(str(path))
    return name if len(name) <= width else name[:width - 1] + "…"


def smoke_images(n: int = 4) -> str:
    """Comma-separated paths of the first ``n`` CelebA samples of the assets (for --smoke)."""
    from cms_jax.assets import sample_images

    d = sample_images()
    names = sorted(p for p in os.listdir(d) if p.lower().endswith((".jpg", ".png")))[:n]
    return ",".join(str(d / p) for p in names)


def load_run(out_dir: str) -> Run:
    """Load a finished pipeline run's cms.npy, drops.npz and summary.json (a folder or an object-store URL)."""
    out = read_run(out_dir)
    summary, d = out.summary, out.drops
    cfg = summary["config"]
    canon = CanonicalFace.mediapipe(canvas=cfg["canvas"], subdivision=cfg["subdivision"])
    if d["drops"].shape[0] == 0:
        raise ValueError(f"{out_dir}: the run scored no image ({len(summary['images_skipped'])} skipped)")
    coverage = square_coverage(canon.vertices, canon.canvas_hw, out.sides)
    return Run(out_dir, summary, out.cms, d["files"], d["drops"], d["valid"].astype(bool),
               d["targets"], d["clean"], canon, out.sides, coverage)


def run_or_reuse(cfg: RunConfig, out_dir: str, *, workers: int = 2, align_cache: str | None = None,
                 show_progress: bool = True) -> Run:
    """The run of ``cfg`` in ``out_dir``: reused when finished there with the same fingerprint, else computed.

    Args:
      cfg: what to compute.
      out_dir: the run's folder (created) or object-store URL (through `storage`).
      workers: host processes for alignment (0 = in this process).
      align_cache: landmark cache folder shared between runs (default inside ``out_dir``).
      show_progress: print count, rate and ETA to stderr.
    """
    out = storage.path(out_dir)  # a folder or an object-store URL, as the job's own outputs
    summ = out / "summary.json"
    if summ.exists() and json.loads(summ.read_text()).get("fingerprint") == cfg.fingerprint():
        return load_run(out_dir)
    resume = (out / "checkpoints").is_dir()
    run_job(cfg, out_dir, workers=workers, resume=resume, align_cache=align_cache,
            show_progress=show_progress)
    return load_run(out_dir)


def run_from(cfg: RunConfig, out_dir: str, cms_dir: str = "", workers: int = 2) -> tuple[Run, RunConfig]:
    """A figure's CMS run and the config for its per-image maps.

    With ``cms_dir`` the finished run there is loaded and its own config (model, canvas,
    patch) is used over ``cfg``'s images; otherwise ``cfg`` is run (or reused) in ``out_dir/cms``.
    """
    if cms_dir:
        run = load_run(cms_dir)
        return run, config_of(run, cfg.images, cfg.max_images)
    return run_or_reuse(cfg, os.path.join(out_dir, "cms"), workers=workers), cfg


def config_of(run: Run, images: str, max_images: int = 0) -> RunConfig:
    """The run's own config (model, canvas, patch, ...) over other images: per-image maps that match its CMS."""
    return reused_config(run.summary["config"], images, max_images)


def reused_config(saved: dict, images: str, max_images: int = 0, **changes) -> RunConfig:
    """A saved run config (summary.json's) over other images, with ``changes`` (e.g. a ``label_from``).

    The run's mesh, canvas and patch are kept; its group analysis (``groups``, ``group_truth``) is
    dropped: a figure's per-image maps do not use it, and a run that tested groups on correctly
    predicted faces (``group_truth``) would refuse a target rule such as Figs. 9-10's ``label_from``.
    """
    return RunConfig(**{**saved, "images": images, "max_images": max_images, "groups": "", "group_truth": "",
                        **changes})


def cms_tile(run: Run, cms: np.ndarray | None = None, vrange=None) -> np.ndarray:
    """A map over the run's canonical face (jet, red high), uint8 RGB."""
    return viz.overlay(run.canon.image, run.cms if cms is None else cms, run.coverage, vrange=vrange)


def panels(tiles: list[np.ndarray], titles: list[str], path: str, *, cols: int | None = None,
           suptitle: str = "", size: float = 2.4) -> str:
    """Save images as a grid of titled panels (matplotlib, white gaps between panels).

    Args:
      tiles: uint8 RGB (or float gray) images.
      titles: one per tile.
      path: the PNG to write.
      cols: panels per row (default all in one row).
      suptitle: a title above the grid.
      size: inches per panel side.
    """
    if not tiles or len(tiles) != len(titles):
        raise ValueError(f"panels: need one title per tile, got {len(tiles)} tiles and {len(titles)} titles")
    cols = cols or len(tiles)
    rows = -(-len(tiles) // cols)
    height = size * rows + (0.4 if suptitle else 0)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, height), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, tile, title in zip(axes.ravel(), tiles, titles):
        ax.imshow(tile, cmap="gray" if np.ndim(tile) == 2 else None)
        ax.set_title(title, fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - (0.4 / height if suptitle else 0)))  # keep the suptitle's strip free
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100, facecolor="white")
    plt.close(fig)
    return path


def write_json(path: str, data: dict) -> dict:
    """Write ``data`` as indented JSON (numpy scalars converted) and return it."""
    def conv(o):
        if isinstance(o, (np.floating, np.integer)):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        raise TypeError(f"not JSON serialisable: {type(o)}")

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(data, fh, indent=2, default=conv)
    return data
