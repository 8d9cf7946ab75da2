"""A figure reuses a CMS run's config (`common.reused_config`), e.g. Figs. 9-10 with their own target rule."""
import pytest

from cms_jax.figures.common import reused_config
from cms_jax.pipeline import RunConfig


def group_truth_run() -> dict:
    """The saved config of a group run on correctly predicted faces (RESULTS.md's 21,630-face run)."""
    return RunConfig(model="gender", images="faces", canvas=256, patch_size=6, groups="utkface:gender",
                     group_truth="utkface:gender").to_dict()


def test_a_group_truth_run_is_reused_with_a_true_class_target():
    saved = group_truth_run()
    with pytest.raises(ValueError, match="group_truth"):  # what the figure met before: the saved config as is
        RunConfig(**{**saved, "label_from": "utkface:gender"}).validate()
    cfg = reused_config(saved, "other_faces", 1000, label_from="utkface:gender")
    cfg.validate()
    assert (cfg.images, cfg.max_images, cfg.label_from) == ("other_faces", 1000, "utkface:gender")
    assert (cfg.canvas, cfg.patch_size, cfg.model) == (256, 6, "gender")  # the CMS's geometry is kept
    assert (cfg.groups, cfg.group_truth) == ("", "")
