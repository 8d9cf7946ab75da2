"""No silent success: sources that match no file, or leave nothing to compare, stop before scoring."""
import dataclasses
import os
import subprocess
import sys

import pytest

from cms_jax.pipeline import preflight
from cms_jax.pipeline.config import RunConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UTK = ["/x/20_0_0_1.jpg", "/x/21_1_0_2.jpg", "/x/30_0_2_3.jpg", "/x/31_1_2_4.jpg"]  # White m/f, Asian m/f
CELEBA = ["/x/000001.jpg", "/x/000002.jpg", "/x/000003.jpg"]


def _cfg(**kw):
    return RunConfig(model="tiny", images="/x", **kw)


def test_groups_matching_no_file_names_the_source_count_and_an_example():
    with pytest.raises(preflight.EmptyMatch, match=r"--groups=utkface:race \(matched on UTKFace file names.*\): "
                                                   r"0 of 3 image files matched, e.g. '000001.jpg'"):
        preflight.check(_cfg(groups="utkface:race"), CELEBA)


def test_groups_all_in_one_group_or_a_group_of_one_image(tmp_path):
    one = tmp_path / "one.csv"
    one.write_text("file,group\n" + "".join(f"{os.path.basename(f)},A\n" for f in CELEBA))
    with pytest.raises(preflight.EmptyMatch, match=r"all 3 matched image files are in one group \('A'\)"):
        preflight.check(_cfg(groups=f"csv:{one}"), CELEBA)
    with pytest.raises(preflight.EmptyMatch, match=r"group\(s\) 'female' have 1 image \(e.g. '21_1_0_2.jpg'\)"):
        preflight.check(_cfg(groups="utkface:gender"), UTK[:3])
    assert preflight.check(_cfg(groups="utkface:race"), UTK) == []  # 2 White, 2 Asian: fine, nothing to say


def test_partial_match_is_a_note_not_an_error():
    notes = preflight.check(_cfg(groups="utkface:gender"), UTK + CELEBA)
    assert notes == ["--groups=utkface:gender (matched on UTKFace file names (AGE_GENDER_RACE_DATE.jpg)): 4 of 7 "
                     "image files matched; the other 3 (e.g. '000001.jpg') are in no group"]
    notes = preflight.check(_cfg(label_from="utkface:gender"), UTK + CELEBA[:1])
    assert len(notes) == 1 and "4 of 5 image files matched; the other 1 (e.g. '000001.jpg') are skipped" in notes[0]


def test_label_from_matching_no_file(tmp_path):
    table = tmp_path / "labels.csv"
    table.write_text("file,label\nsomeone_else.jpg,male\n")
    with pytest.raises(preflight.EmptyMatch, match=r"--label_from=csv:.*labels.csv \(matched on the CSV's file "
                                                   r"column \(base names\)\): 0 of 3 image files matched"):
        preflight.check(_cfg(label_from=f"csv:{table}"), CELEBA)


def test_reference_needs_an_identity_with_two_listed_images(tmp_path):
    ids = tmp_path / "ids.csv"
    ids.write_text("file,identity\nnobody.jpg,p\n")
    with pytest.raises(preflight.EmptyMatch, match=r"0 of 3 image files are listed, e.g. '000001.jpg'; the CSV "
                                                   r"names e.g. 'nobody.jpg'"):
        preflight.check(_cfg(reference=f"csv:{ids}"), CELEBA)
    ids.write_text("file,identity\n000001.jpg,p\n000002.jpg,q\n")
    with pytest.raises(preflight.EmptyMatch, match=r"2 of 3 image files are listed, but no identity has 2"):
        preflight.check(_cfg(reference=f"csv:{ids}"), CELEBA)
    ids.write_text("file,identity\n000001.jpg,p\n000002.jpg,p\n")
    assert preflight.check(_cfg(reference=f"csv:{ids}"), CELEBA) == [
        f"--reference=csv:{ids}: 2 of 3 image files have another image of their identity; the other 1 are skipped"]


def test_model_defaults_line_only_without_a_card():
    from cms_jax import models

    m = models.load("tiny")
    assert preflight.model_defaults(m) == ""  # a built-in model carries its own preprocessing
    guessed = dataclasses.replace(m, name="net", card_note="no card; from the graph or defaults: colour=RGB")
    line = preflight.model_defaults(guessed)
    assert line.startswith("model 'net' has no card, so these defaults were used (no card; from the graph or "
                           "defaults: colour=RGB)") and ".card.json" in line


def test_cli_group_audit_on_unmatched_names_stops_before_scoring(tmp_path, celeba_copy):
    images = celeba_copy(tmp_path / "faces", 3)
    out = tmp_path / "out"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-m", "experiments.cms", "--model=tiny", f"--images={images}",
                        f"--out_dir={out}", "--workers=0", "--groups=utkface:race"],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("cms: error: --groups=utkface:race") and "0 of 3 image files matched" in last
    assert "Traceback" not in r.stderr
    assert not (out / "drops.npz").exists() and not list(out.rglob("part-*.npz"))  # nothing was scored
