"""Fig. 1: the CMS (Eq. 6) of each face-task model side by side, over the same images.

One pipeline run per model (in ``out_dir/<name>``, reused when finished), the
landmark cache shared, a model whose files are absent reported as skipped
(`task_models.figure`, which Fig. 11 uses too). The JSON gives each map's
share per facial region (`cms_jax.regions`), its peak and how alike the maps are.
"""
from __future__ import annotations

from cms_jax.figures import task_models
from cms_jax.pipeline import RunConfig

DEFAULT_MODELS = ("gender", "expression", "headpose_bins", "age_bins")


def figure(base: RunConfig, out_dir: str, *, model_names=DEFAULT_MODELS, extra: dict[str, str] | None = None,
           workers: int = 2, align_cache: str | None = None) -> dict:
    """Write fig01.png (one CMS per model), fig01.json and fig01.md.

    Args:
      base: the run settings shared by all models (images, max_images, canvas, ...); its model is ignored.
      out_dir: output folder; each model's run goes to ``out_dir/<name>``.
      model_names: built-in model names.
      extra: more models as {title: path} (e.g. VGG-Face or a fine-tuned VGG checkpoint).
      workers: host processes for alignment.
      align_cache: landmark cache folder shared by the runs (default ``out_dir/align_cache``).

    Returns:
      The JSON dict.
    """
    todo = [(n, n) for n in model_names] + list((extra or {}).items())
    return task_models.figure(base, out_dir, todo, task="face-task", workers=workers, align_cache=align_cache,
                              name="fig01", suptitle="Fig. 1: CMS per face task (red high)")
