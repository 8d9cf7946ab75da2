"""Pair audit of a face-recognition model: what makes two photos match, on the canonical face.

  CMS_JAX_ASSETS=../shared python -m experiments.verify --model=facenet.onnx \
      --images=../shared/faces/lfw --identity=lfw:identity --pairs=auto:500 --out_dir=out/verify

Pairs come from --pairs: auto:N draws N genuine and N impostor pairs (seeded, --seed) from the
images by --identity (lfw:identity reads LFW names First_Last_NNNN.jpg; csv:FILE of
file,person), or a CSV of probe,gallery[,same]. Each pair is scored as Eq. 1 with the cosine
between the occluded probe and the clean gallery (--symmetric: also the gallery occluded
against the clean probe, the two CIS averaged on the canonical face). Writes verify.json /
verify.md (TAR@FAR, EER, per-region TAR drop with bootstrap CIs, the genuine - impostor test),
pair_drops.npz, maps.npz and a PNG per map. Scored chunks are saved as they finish
(pair_chunks/): after a kill or Ctrl-C (which finishes the chunk in hand and exits 130 / 143)
the same command with --resume scores only the rest; --overwrite replaces an earlier audit.
The main job runs the same audit with --pairs (python -m experiments.cms --pairs=...).
--smoke runs in seconds on a random 64-d tiny net over 12 LFW photos. Errors print one line
and exit 2.
"""
import sys

from absl import app, flags, logging

from cms_jax.pipeline import Interrupted, RunConfig, catch_signals, resume_command
from cms_jax.verify import VerifyFailed, VerifyOptions, lfw_images, one_line, run_pair_job

_MODEL = flags.DEFINE_string("model", "", "An embedding model: ONNX file (with its card), converted folder, "
                             "or a built-in embedding model (tiny_embed).")
_IMAGES = flags.DEFINE_string("images", "", "Folder, glob, .txt list or comma-separated images (default: LFW "
                              "from the assets).")
_IDENTITY = flags.DEFINE_string("identity", "lfw:identity", "Who is in each photo: lfw:identity or csv:FILE of "
                                "file,person.")
_PAIRS = flags.DEFINE_string("pairs", "auto:200", "auto:N (N genuine + N impostor pairs, seeded) or a CSV of "
                             "probe,gallery[,same].")
_SYMMETRIC = flags.DEFINE_bool("symmetric", False, "Also occlude the gallery against the clean probe and "
                               "average the two CIS on the canonical face.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the drawn pairs, the bootstrap and the test's samples.")
_GROUPS = flags.DEFINE_string("groups", "", "Maps per group of the probe (SOURCE:FIELD, e.g. csv:FILE).")
_FARS = flags.DEFINE_list("fars", ["0.01", "0.001"], "False-accept rates of the TAR@FAR metrics.")
_BOOT = flags.DEFINE_integer("bootstrap", 1000, "Bootstrap draws of the per-region CIs.")
_PATCH = flags.DEFINE_integer("patch_size", 0, "Occlusion side in input pixels (0 = 15 px at 224, scaled).")
_FILL = flags.DEFINE_float("fill", 0.0, "Value of occluded pixels in the normalised input.")
_INCREMENTAL = flags.DEFINE_bool("incremental", None, "Exact incremental inference (default: wherever the "
                                 "model allows).")
_BATCH = flags.DEFINE_integer("batch_size", 0, "Work items per device batch (0: chosen).")
_WORKERS = flags.DEFINE_integer("workers", 2, "Host worker processes (decode + MediaPipe).")
_OUT_DIR = flags.DEFINE_string("out_dir", "out/verify", "Output folder.")
_MAX_SKIP = flags.DEFINE_float("max_skip_fraction", 0.5, "Fail (exit 2, outputs written) when more pairs "
                               "than this fraction are skipped.")
_RESUME = flags.DEFINE_bool("resume", False, "Continue the audit in --out_dir from its saved chunks.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an earlier audit in --out_dir.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Seconds-long run: tiny_embed (random weights) on 12 LFW photos, "
                           "auto:4 pairs, 200 bootstrap draws.")


def _images() -> str:
    return _IMAGES.value or lfw_images(_SMOKE.value)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    try:
        smoke = _SMOKE.value
        cfg = RunConfig(model="tiny_embed" if smoke else (_MODEL.value or "tiny_embed"), images=_images(),
                        patch_size=_PATCH.value, fill=_FILL.value, batch_size=_BATCH.value,
                        incremental="auto" if _INCREMENTAL.value is None else _INCREMENTAL.value)
        if not smoke and not _MODEL.value:
            raise ValueError("--model: give an embedding model (an ONNX file with its card, a converted folder); "
                             "--smoke runs a random tiny one")
        opts = VerifyOptions(pairs="auto:4" if smoke else _PAIRS.value, identity=_IDENTITY.value,
                             symmetric=_SYMMETRIC.value, seed=_SEED.value, groups=_GROUPS.value,
                             fars=tuple(float(f) for f in _FARS.value), bootstrap=200 if smoke else _BOOT.value,
                             test_images=300, permutations=200 if smoke else 1000,
                             max_skip_fraction=_MAX_SKIP.value)
        with catch_signals() as stop:
            s = run_pair_job(cfg, _OUT_DIR.value, opts, workers=_WORKERS.value, resume=_RESUME.value,
                             overwrite=_OVERWRITE.value, stop=stop)
    except (ValueError, FileNotFoundError, FileExistsError, VerifyFailed) as e:
        print(f"verify: error: {e}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as e:
        print(f"\nverify: interrupted: {e}\nverify: resume with: "
              f"{resume_command(sys.argv, resume=e.resumable, prog='python -m experiments.verify')}",
              file=sys.stderr, flush=True)
        sys.exit(e.exit_code)
    print(f"{one_line(s)} -> {_OUT_DIR.value}/verify.md")


if __name__ == "__main__":
    app.run(main)
