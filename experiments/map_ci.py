"""95% bootstrap CIs over faces for a CMS's region densities and shares, and for the Pearson between CMSs.

  CMS_JAX_ASSETS=../shared python -m experiments.map_ci --runs=out/utk22k_gender --raw --single \
      --out_dir=out/map_ci_gender

Several finished runs of experiments/cms.py (or of any figure's CMS run) on the same faces,
e.g. one model per task (Fig. 1), two gender models (Fig. 11) or one model under several
occluders (the sensitivity runs):

  python -m experiments.map_ci --runs=out/a,out/b,out/c --names=gender,age,race --out_dir=out/map_ci

Every run is read from its drops.npz (no rescoring) and resampled on the faces all runs
scored, the same draws for every run (`cms_jax.figures.map_ci`). --raw adds the mean raw
splat P* (Eq. 4, Fig. 4's unnormalised map); --single adds the Spearman of each face's CIS
with the CMS (Fig. 14). Writes map_ci.json and map_ci.md (also printed). --smoke runs a
3-face tiny-model CMS twice (two patch sizes) and compares them.
"""
import json
import os

from absl import app, flags, logging

from cms_jax.figures import common, map_ci
from cms_jax.pipeline import RunConfig

_RUNS = flags.DEFINE_list("runs", [], "Finished run folders (experiments/cms.py outputs).")
_NAMES = flags.DEFINE_list("names", [], "A name per run (default: the folder names).")
_DRAWS = flags.DEFINE_integer("draws", 200, "Bootstrap draws (faces resampled with replacement).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the draws.")
_RAW = flags.DEFINE_bool("raw", False, "Also the mean unnormalised splat P* (Eq. 4; Fig. 4).")
_SINGLE = flags.DEFINE_bool("single", False, "Also each face's CIS against the CMS (Spearman; Fig. 14).")
_OUT_DIR = flags.DEFINE_string("out_dir", "out/map_ci", "Output folder.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Seconds: two tiny-model runs (patch 3 and 5) on 3 CelebA samples.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if _SMOKE.value:
        runs = {f"patch {p}": common.run_or_reuse(
            RunConfig(model="tiny", images=common.smoke_images(3), batch_size=256, patch_size=p),
            os.path.join(_OUT_DIR.value, f"cms_patch{p}"), workers=0, show_progress=False) for p in (3, 5)}
    else:
        if not _RUNS.value:
            raise app.UsageError("--runs: give at least one finished run folder (or --smoke)")
        names = _NAMES.value or [os.path.basename(os.path.normpath(r)) for r in _RUNS.value]
        if len(names) != len(_RUNS.value) or len(set(names)) != len(names):
            raise app.UsageError(f"--names: one distinct name per run ({len(_RUNS.value)} runs), got {names}")
        runs = {n: common.load_run(r) for n, r in zip(names, _RUNS.value)}
    result = map_ci.report(runs, draws=20 if _SMOKE.value else _DRAWS.value, seed=_SEED.value,
                           raw=_RAW.value or _SMOKE.value, single=_SINGLE.value or _SMOKE.value)
    md = map_ci.markdown(result)
    common.write_json(os.path.join(_OUT_DIR.value, "map_ci.json"), result)
    with open(os.path.join(_OUT_DIR.value, "map_ci.md"), "w") as f:
        f.write(md)
    print(md)
    print(json.dumps({"faces": result["faces"], "runs": list(result["runs"])}))


if __name__ == "__main__":
    app.run(main)
