"""The main job: Canonical Model Saliency of a model over a set of face images.

  CMS_JAX_ASSETS=../shared python -m experiments.cms --model=gender \
      --images=../shared/faces/celeba_samples/images --out_dir=out/cms

Writes cms.npy (float32 canonical map, Eqs. 4-6, on a 512 px canvas by default),
cms.png (that map over the canonical face with a colour bar in the score's units,
diverging about zero when drops are negative, and the facial regions outlined),
cms_smooth.png, drops.npz (per-image vertex drops and file names), summary.json
(with the command line) and report.html (open it in a browser).
With no --images it runs on the CelebA samples from the assets. --resume
continues a killed run from its last checkpoint. A multi-host run starts one
process per host with --num_processes, --process_id and --coordinator
(host:port of process 0), or --coordinator=auto on a TPU pod or cluster;
each process may have its own --out_dir, nothing is shared on disk, and
process 0 writes the outputs. A systematic failure (no image scored, the
same exception in --max_failed_chunks chunks in a row, more than
--max_skip_fraction skipped) exits with status 2 and says why. Ctrl-C (SIGINT)
or SIGTERM (preemption) finishes the images being scored, saves a checkpoint,
prints the command that resumes and exits 130 / 143; a second one stops at once.

With --pairs the job is a pair audit of an embedding (face-recognition) model instead:
--pairs=auto:N draws N genuine and N impostor pairs (seeded, --pairs_seed) by --identity
(lfw:identity, or csv:FILE of file,person), --pairs=FILE reads probe,gallery[,same]; each
pair's drops are the cosine lost between the occluded probe and the clean gallery
(--pairs_symmetric: both ways, averaged on the canonical face). It writes verify.json /
verify.md / verify.html, the genuine and impostor maps and the TAR@FAR lost per region,
the same as experiments/verify.py (cms_jax.verify), and resumes with --resume.
"""
import sys

from absl import app, flags, logging

from cms_jax.accumulate import REDUCES
from cms_jax.groups import COMPARES
from cms_jax.models.foreign import ONNX_BACKENDS
from cms_jax.forward import DTYPES
from cms_jax.occlusion import SCORES
from cms_jax.verify import VerifyFailed
from cms_jax.pipeline import (FailurePolicy, Interrupted, RunConfig, RunFailed, catch_signals, resume_command,
                              run_job)

_MODEL = flags.DEFINE_string("model", "gender", "Built-in model name or a model file/dir (HDF5, ONNX, Orbax).")
_IMAGES = flags.DEFINE_string("images", "", "Folder, glob, .txt list or comma-separated images "
                              "(default: the CelebA samples of the assets).")
_OUT_DIR = flags.DEFINE_string("out_dir", "out/cms", "Output folder.")
_MAX_IMAGES = flags.DEFINE_integer("max_images", 0, "Use the first N images (0 = all).")
_PATCH = flags.DEFINE_integer("patch_size", 0, "Occlusion side in input pixels (0 = 15 px at 224, scaled).")
_SCORE = flags.DEFINE_enum("score", "prob", list(SCORES), "Confidence: softmax prob or raw logit.")
_FILL = flags.DEFINE_float("fill", 0.0, "Value of occluded pixels in the normalised input.")
_FILL_BLUR = flags.DEFINE_float("fill_blur", 0.0, "0: the constant --fill; > 0: each square takes its image's own "
                                "pixels blurred by a Gaussian of this sigma (input pixels); dense forward.")
_SUBDIV = flags.DEFINE_integer("subdivision", 0, "Mesh subdivision level (0: 468 vertices, 1: ~1.8k).")
_VISIBILITY = flags.DEFINE_bool("visibility", True, "Leave out vertices on back-facing triangles.")
_CANVAS = flags.DEFINE_integer("canvas", RunConfig.canvas, "Canonical canvas side in pixels (f scales with it).")
_REDUCE = flags.DEFINE_enum("reduce", "mean", list(REDUCES), "CMS = mean (Eq. 6) or sum of "
                            "CIS maps, or 'covered': each pixel's mean over the images whose CIS reaches it.")
_BATCH = flags.DEFINE_integer("batch_size", 0, "Work items per device batch (all devices); 0: chosen for the "
                             "forward and devices (128 a CPU device when incremental, else 1024).")
_LABELS = flags.DEFINE_string("label_from", "", "Target class per file, SOURCE:FIELD (utkface:gender, csv:PATH, "
                              "celeba:PATH:ATTR): its values must name the model's classes; unlabelled files "
                              "are skipped.")
_TARGET = flags.DEFINE_string("target", "", "Score this output (name or index) for every image; required "
                              "for regression models (e.g. --model=headpose --target=yaw).")
_REFERENCE = flags.DEFINE_string("reference", "", "Embedding models: csv:FILE of file,identity; score the "
                                 "cosine to the mean embedding of the identity's other images (default: "
                                 "to the image's own clean embedding).")
_INCREMENTAL = flags.DEFINE_bool("incremental", None, "Exact incremental inference: same drops, fewer FLOPs "
                                  "(any model that runs on the device). Default (unset): 'auto', used wherever "
                                  "the model allows; --incremental refuses a black box, --noincremental scores "
                                  "densely.")
_ONNX = flags.DEFINE_enum("onnx_backend", "auto", list(ONNX_BACKENDS), "ONNX models: converted to "
                          "JAX (on the device, incremental) or run by onnxruntime on the host; auto: the "
                          "faster by a short timed probe at the start (both rates in summary.json).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", list(DTYPES), "Compute dtype of weights and inputs; "
                           "bfloat16 records bf16_fidelity (Pearson vs float32) in summary.json.")
_APPROX = flags.DEFINE_float("approx_tau", 1.0, "1 = exact. In (0, 1): approximate incremental inference "
                             "(Krypton's projective-field threshold): a window grows to at most this share of "
                             "its map's side; summary.json records approx_fidelity (vs exact, first chunk).")
_WORKERS = flags.DEFINE_integer("workers", 2, "Host worker processes (decode + MediaPipe).")
_RESUME = flags.DEFINE_bool("resume", False, "Continue from the checkpoint in --out_dir.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a finished or partial run in --out_dir (its landmark "
                               "cache is kept; a folder that holds no run is refused).")
_CKPT_S = flags.DEFINE_float("checkpoint_every_s", 30.0, "Seconds between checkpoints.")
_CHUNK = flags.DEFINE_integer("chunk_images", 16, "Images scored together (and between checkpoints at most).")
_ALIGN_CACHE = flags.DEFINE_string("align_cache", "", "Landmark cache folder (default <out_dir>/align_cache).")
_GROUPS = flags.DEFINE_string("groups", "", "Per-group CMS: utkface:race|gender|age_decade, csv:PATH or "
                              "celeba:ATTR_FILE:ATTRIBUTE.")
_GROUP_COMPARE = flags.DEFINE_enum("group_compare", "normalised", list(COMPARES), "How --groups are compared: "
                                   "normalised (each image's CIS divided by its own mean |value|: no difference "
                                   "from confidence alone) or raw drops.")
_GROUP_TRUTH = flags.DEFINE_string("group_truth", "", "True class per file, SOURCE:FIELD (e.g. utkface:gender): "
                                   "group tests use only the correctly predicted faces.")
_NPROC = flags.DEFINE_integer("num_processes", 1, "Processes in a multi-host run.")
_PID = flags.DEFINE_integer("process_id", 0, "This process's index in a multi-host run.")
_COORD = flags.DEFINE_string("coordinator", "", "host:port of process 0 for jax.distributed (multi-host), "
                             "or 'auto' (TPU pods, SLURM, Open MPI: jax finds the cluster).")
_MAX_SKIP = flags.DEFINE_float("max_skip_fraction", 0.5, "Fail (exit 2, outputs still written) when more "
                               "than this fraction of the images is skipped.")
_MAX_FAILED = flags.DEFINE_integer("max_failed_chunks", 3, "Stop (exit 2) when the same exception recurs "
                                   "in this many consecutive chunks.")
_PAIRS = flags.DEFINE_string("pairs", "", "A pair audit of an embedding model: auto:N (N genuine + N impostor "
                             "pairs drawn by --identity) or a CSV of probe,gallery[,same]. Empty: the CMS job.")
_IDENTITY = flags.DEFINE_string("identity", "lfw:identity", "--pairs: who is in each photo (lfw:identity, or "
                                "csv:FILE of file,person).")
_PAIRS_SYM = flags.DEFINE_bool("pairs_symmetric", False, "--pairs: also occlude the gallery against the clean "
                               "probe; the two CIS are averaged on the canonical face.")
_PAIRS_SEED = flags.DEFINE_integer("pairs_seed", 0, "--pairs: seed of the drawn pairs, the bootstrap and the "
                                   "permutation test.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Seconds-long run: tiny model, 4 CelebA samples (with --pairs: "
                           "tiny_embed on 12 LFW photos).")


_USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, RunFailed, VerifyFailed)


def _fail(message, verbosity):
    """Print one `cms: error: ...` line (a traceback too at --verbosity>=1) and exit 2."""
    if verbosity >= 1:
        import traceback
        traceback.print_exc()
    print(f"cms: error: {message}", file=sys.stderr)
    sys.exit(2)


_HELP_GROUPS = (
    ("Basic", "model images out_dir max_images resume overwrite groups label_from target"),
    ("Group tests", "group_compare group_truth"),
    ("Scoring", "score patch_size fill fill_blur subdivision visibility canvas reduce reference incremental dtype approx_tau"
                " onnx_backend max_skip_fraction max_failed_chunks"),
    ("Performance", "workers batch_size chunk_images checkpoint_every_s align_cache"),
    ("Multi-host", "num_processes process_id coordinator"),
    ("Pair audits (face recognition)", "pairs identity pairs_symmetric pairs_seed"),
    ("Testing", "smoke"),
)


def _print_help():
    """The job's flags, grouped, basic ones first; absl's full list stays under --helpfull."""
    print(__doc__.strip().splitlines()[0] + "\n\nUsage: cms-jax [flags]  (or python -m experiments.cms [flags])")
    for title, names in _HELP_GROUPS:
        print(f"\n{title}:")
        for name in names.split():
            flag = flags.FLAGS[name]
            prefix = "--[no]" if flag.boolean else "--"
            default = "unset" if flag.default is None else repr(flag.default)
            print(f"  {prefix}{name}: {flag.help}\n    (default: {default})")
    print("\nAll flags, absl's included: --helpfull")


def _parse_flags(argv):
    """absl's parser, but a bad flag value is a user error: one line and exit 2, not exit 1."""
    if any(a in ("--help", "-help", "-h", "--helpshort", "-?") for a in argv[1:]):
        _print_help()
        sys.exit(0)
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        print(f"cms: error: {e}", file=sys.stderr)
        print("cms: run with --help for the flags", file=sys.stderr)
        sys.exit(2)


def main(argv):
    """Runs the job; user errors (bad config, missing files, RunFailed) end in one line and exit 2."""
    verbosity = flags.FLAGS.verbosity  # read now: _main lowers absl's verbosity for Orbax
    try:
        with catch_signals():  # from here on a signal stops the run cleanly (a checkpoint if any scored)
            _main(argv)
    except _USER_ERRORS as e:
        _fail(f"the run failed: {e}" if isinstance(e, RunFailed) else str(e), verbosity)
    except Interrupted as e:
        print(f"\ncms: interrupted: {e}", file=sys.stderr)
        print(f"cms: {'resume with' if e.resumable else 'nothing was scored yet; start again with'}: "
              f"{resume_command(sys.argv, resume=e.resumable)}", file=sys.stderr, flush=True)
        sys.exit(e.exit_code)


def _pair_audit():
    """--pairs: the pair audit of `cms_jax.verify` with this job's model, images and occlusion flags."""
    from cms_jax.verify import VerifyOptions, lfw_images, one_line, run_pair_job

    misplaced = [f"--{n}" for n in ("label_from", "target", "reference") if flags.FLAGS[n].present]
    if misplaced or _NPROC.value > 1:
        raise ValueError(f"--pairs: {', '.join(misplaced) or '--num_processes > 1'} does not apply to a pair "
                         f"audit (the target of each copy is its gallery's embedding; one process)")
    smoke = _SMOKE.value
    images = _IMAGES.value or lfw_images(smoke)
    cfg = RunConfig(model="tiny_embed" if smoke else _MODEL.value, images=images, max_images=_MAX_IMAGES.value,
                    patch_size=_PATCH.value, fill=_FILL.value, subdivision=_SUBDIV.value,
                    visibility=_VISIBILITY.value, canvas=_CANVAS.value, batch_size=_BATCH.value,
                    groups=_GROUPS.value, onnx_backend=_ONNX.value, dtype=_DTYPE.value,
                    incremental="auto" if _INCREMENTAL.value is None else _INCREMENTAL.value)
    opts = VerifyOptions(pairs="auto:4" if smoke else _PAIRS.value, identity=_IDENTITY.value,
                         symmetric=_PAIRS_SYM.value, seed=_PAIRS_SEED.value, groups=_GROUPS.value,
                         bootstrap=200 if smoke else 1000, permutations=200 if smoke else 1000,
                         max_skip_fraction=_MAX_SKIP.value)
    with catch_signals() as stop:
        s = run_pair_job(cfg, _OUT_DIR.value, opts, workers=_WORKERS.value, resume=_RESUME.value,
                         overwrite=_OVERWRITE.value, stop=stop, cache_dir=_ALIGN_CACHE.value or None)
    print(f"{one_line(s)} -> {_OUT_DIR.value}/verify.html")


def _main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # Orbax logs every checkpoint step at INFO
    if _PAIRS.value:
        return _pair_audit()
    cfg = RunConfig(model="tiny" if _SMOKE.value else _MODEL.value, images=_IMAGES.value,
                    max_images=4 if _SMOKE.value else _MAX_IMAGES.value, patch_size=_PATCH.value,
                    score=_SCORE.value, fill=_FILL.value, fill_blur=_FILL_BLUR.value, subdivision=_SUBDIV.value,
                    visibility=_VISIBILITY.value, canvas=_CANVAS.value, reduce=_REDUCE.value,
                    batch_size=_BATCH.value, label_from=_LABELS.value, groups=_GROUPS.value,
                    target=_TARGET.value, reference=_REFERENCE.value, onnx_backend=_ONNX.value,
                    group_compare=_GROUP_COMPARE.value, group_truth=_GROUP_TRUTH.value,
                    incremental="auto" if _INCREMENTAL.value is None else _INCREMENTAL.value, dtype=_DTYPE.value,
                    approx_tau=_APPROX.value)
    summary = run_job(cfg, _OUT_DIR.value, resume=_RESUME.value, overwrite=_OVERWRITE.value,
                      workers=_WORKERS.value,
                      num_processes=_NPROC.value, process_id=_PID.value, coordinator=_COORD.value,
                      checkpoint_every_s=_CKPT_S.value, chunk_images=_CHUNK.value,
                      align_cache=_ALIGN_CACHE.value or None,
                      policy=FailurePolicy(_MAX_FAILED.value, _MAX_SKIP.value))
    if summary is not None:
        print(f"CMS of {summary['model']} over {summary['images_done']}/{summary['images_total']} images "
              f"({len(summary['images_skipped'])} skipped) in {summary['seconds']:.1f}s "
              f"({summary['faces_per_second']:.2f} faces/s) -> {_OUT_DIR.value}/report.html")


def console():
    """The `cms-jax` console command (pyproject.toml [project.scripts]): the main job."""
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    console()
