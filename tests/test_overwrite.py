"""``--overwrite``: a finished run is replaced (landmark cache kept); a folder without a run is never cleared."""
import os

import numpy as np
import pytest

from cms_jax.pipeline import RunConfig, run_job
from cms_jax.pipeline.overwrite import clear_run


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory, celeba_copy):
    return celeba_copy(tmp_path_factory.mktemp("faces"), 2)


def test_overwrite_replaces_a_finished_run(two_faces, tmp_path):
    out = str(tmp_path / "run")
    cfg = RunConfig(model="tiny", images=two_faces, batch_size=256)
    run_job(cfg, out, workers=0, checkpoint_every_s=0)
    first = np.load(os.path.join(out, "cms.npy"))
    cached = sorted(os.listdir(os.path.join(out, "align_cache")))
    with pytest.raises(FileExistsError, match="already holds a run checkpoint"):
        run_job(cfg, out, workers=0, checkpoint_every_s=0)
    with open(os.path.join(out, "stale_from_an_older_run.png"), "w") as f:
        f.write("x")
    with pytest.raises(ValueError, match="give one of them"):
        run_job(cfg, out, workers=0, resume=True, overwrite=True)
    summary = run_job(cfg, out, workers=0, checkpoint_every_s=0, overwrite=True)
    assert summary["images_done"] == 2
    np.testing.assert_array_equal(np.load(os.path.join(out, "cms.npy")), first)
    assert not os.path.exists(os.path.join(out, "stale_from_an_older_run.png"))
    assert sorted(os.listdir(os.path.join(out, "align_cache"))) == cached  # the landmark cache survives


def test_a_folder_without_a_run_is_refused(tmp_path):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="holds files but no cms_jax run"):
        clear_run(str(tmp_path))
    assert (tmp_path / "thesis.tex").read_text() == "precious"
    assert clear_run(str(tmp_path / "absent")) == []


def test_resume_without_a_checkpoint_says_so(two_faces, tmp_path):
    """``--resume`` on a folder with no run is refused (naming it), not silently started afresh."""
    out = tmp_path / "empty"
    cfg = RunConfig(model="tiny", images=two_faces, batch_size=256)
    with pytest.raises(FileNotFoundError, match=r"--resume: .*empty holds no run checkpoint to continue"):
        run_job(cfg, str(out), workers=0, resume=True)
    assert not (out / "drops.npz").exists() and not (out / "summary.json").exists()
