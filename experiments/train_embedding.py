"""Train a face-embedding net on LFW with a margin loss, people held apart, for the pair audits.

  CMS_JAX_ASSETS=../shared python -m experiments.train_embedding --out_dir=out/lfw_embed

then audit it on the held-out people (their photos are listed in eval_images.txt):

  CMS_JAX_ASSETS=../shared python -m experiments.verify --model=out/lfw_embed/model \
      --images=out/lfw_embed/eval_images.txt --pairs=auto:300 --out_dir=out/lfw_verify

The split, the loss (CosFace) and the controls (pixel cosine, the untrained
net) are in `cms_jax.train.embedding`. Writes <out_dir>/model (output:
embedding), summary.json (split sizes, verification of the held-out people with
95% CIs over people, the controls, per-epoch history), eval_images.txt and
checkpoints/ (--resume continues at the same step with the same data order).
"""
from absl import app, flags, logging

from cms_jax.train.embedding import EmbeddingConfig, train_embedding

_IMAGES = flags.DEFINE_string("images", "", "Folder, glob or .txt list of photos (default: the lfw assets).")
_IDENTITY = flags.DEFINE_string("identity", "lfw:identity", "Identity source (SOURCE:FIELD).")
_OUT_DIR = flags.DEFINE_string("out_dir", "out/lfw_embed", "Output folder.")
_DIM = flags.DEFINE_integer("dim", 128, "Embedding width.")
_INPUT = flags.DEFINE_integer("input_size", 64, "Input side.")
_EVAL = flags.DEFINE_float("eval_fraction", 0.3, "Share of the people held out (hash of the name).")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Global batch (multiple of the device count).")
_STEPS = flags.DEFINE_integer("steps", 3000, "Optimiser steps.")
_LR = flags.DEFINE_float("lr", 1e-3, "Peak learning rate (AdamW, warmup then cosine).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the weights, data order and flips.")
_WORKERS = flags.DEFINE_integer("workers", 2, "Alignment worker processes.")
_ALIGN_CACHE = flags.DEFINE_string("align_cache", "", "Landmark cache folder (default OUT_DIR/align_cache).")
_RESUME = flags.DEFINE_bool("resume", False, "Continue from the checkpoints in --out_dir.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Seconds-long run: 300 LFW photos, 32-px input, 20 steps.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # Orbax logs every checkpoint at INFO
    images = _IMAGES.value
    if not images or _SMOKE.value:
        from cms_jax.assets import resolve_dir
        images = str(resolve_dir("lfw"))
        if _SMOKE.value:
            import glob
            import os
            import tempfile
            listing = os.path.join(tempfile.mkdtemp(), "smoke.txt")
            with open(listing, "w") as f:
                f.write("\n".join(sorted(glob.glob(os.path.join(images, "*.jpg")))[:300]))
            images = listing
    smoke = _SMOKE.value
    cfg = EmbeddingConfig(images=images, identity=_IDENTITY.value, dim=32 if smoke else _DIM.value,
                          input_size=32 if smoke else _INPUT.value, eval_fraction=_EVAL.value,
                          batch_size=16 if smoke else _BATCH.value, steps=20 if smoke else _STEPS.value,
                          lr=_LR.value, warmup=5 if smoke else 100, seed=_SEED.value,
                          checkpoint_every=10 if smoke else 500, bootstrap=50 if smoke else 300)
    s = train_embedding(cfg, _OUT_DIR.value, resume=_RESUME.value, workers=_WORKERS.value,
                        align_cache=_ALIGN_CACHE.value or None)
    sp, ev = s["split"], s["eval"]
    print(f"embedding of {sp['train_people']} people ({sp['train_photos']} photos), judged on "
          f"{sp['eval_people']} others ({sp['eval_pairs']['genuine']} genuine / {sp['eval_pairs']['impostor']} "
          f"impostor pairs): EER {ev['eer']:.3f} {s['eval_ci']['eer']}, TAR@FAR=0.01 {ev['tar@far=0.01']['tar']:.3f}; "
          f"pixels EER {s['controls']['pixel_cosine']['eer']:.3f}, untrained EER "
          f"{s['controls']['random_init']['eer']:.3f}; {s['seconds']:.0f}s -> {s['model_dir']}")


if __name__ == "__main__":
    app.run(main)
