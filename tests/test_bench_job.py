"""The pieces of the job benchmark: stage timer, and the Keras-style dense procedure against the engine.

The Keras procedure (cms_jax/bench/keras_reference.py) is checked with a numpy ``predict`` standing
in for ``model.predict_on_batch``, so no TensorFlow is needed.
"""
import time
import types

import jax
import jax.numpy as jnp
import numpy as np

from cms_jax.bench import keras_reference as kr
from cms_jax.engine import OcclusionEngine
from cms_jax.data.progress import Progress, StageTimer


def _apply(params, x):
    y = jax.lax.conv_general_dilated(x, params["conv"], (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return 4.0 * jnp.tanh(y).mean(axis=(1, 2)) @ params["dense"]


def test_stage_timer_sums_blocks_and_times_waits_for_items():
    timer = StageTimer()
    with timer("a"):
        time.sleep(0.01)
    with timer("a"):
        pass

    def slow():
        for i in range(3):
            time.sleep(0.01)
            yield i

    assert list(timer.iterate(slow(), "wait")) == [0, 1, 2]
    d = timer.as_dict()
    assert set(d) == {"a", "wait"} and d["a"] >= 0.01 and d["wait"] >= 0.03


def test_progress_line_is_throttled_and_reads_its_note_only_when_printed():
    """The one progress printer (the CMS job's images, fine-tuning's steps)."""
    import io

    out, calls = io.StringIO(), []

    def note():
        calls.append(1)
        return "loss 0.5000"

    p = Progress(10, done=2, label="finetune", unit="steps", stream=out, every_s=3600)
    p.update(1, note=note)  # the first line is always printed
    p.update(1, note=note)  # within every_s: nothing, and the note is not read
    assert len(calls) == 1 and out.getvalue().startswith("\r[finetune] 3/10 steps  ")
    assert "steps/s  loss 0.5000  ETA " in out.getvalue() and "\n" not in out.getvalue()
    p.update(6, note=note)  # the end: printed, then the line ends once
    p.update(0, note=note, force=True)
    p.close()
    assert len(calls) == 2 and out.getvalue().count("\n") == 1 and "10/10 steps" in out.getvalue()
    short = io.StringIO()
    q = Progress(5, stream=short, every_s=0)
    q.update(2, note="skipped 1")
    q.close()  # a run stopped early still ends its line
    assert short.getvalue().startswith("\r[cms] 2/5 images  ") and "skipped 1  ETA" in short.getvalue()
    assert short.getvalue().endswith("\n")


def test_occluded_copies_put_the_clean_input_first_and_fill_each_box():
    x = np.ones((6, 5, 2), np.float32)
    copies = kr.occluded_copies(x, np.array([[0, 2, 1, 3], [4, 5, 5, 6]], np.int32), fill=-1.0)
    assert copies.shape == (3, 6, 5, 2) and (copies[0] == 1).all()
    assert (copies[1, 1:3, 0:2] == -1).all() and (copies[1] == -1).sum() == 2 * 2 * 2
    assert (copies[2, 5, 4] == -1).all() and (copies[2] == -1).sum() == 2


def test_keras_procedure_gives_the_engines_drops():
    rng = np.random.default_rng(0)
    params = {"conv": jnp.asarray(rng.normal(0, 0.5, (3, 3, 1, 6)), jnp.float32),
              "dense": jnp.asarray(rng.normal(0, 1.0, (6, 3)), jnp.float32)}
    x = rng.normal(size=(24, 24, 1)).astype(np.float32)
    xy = rng.uniform(0, 24, (50, 2)).astype(np.float32)
    valid = rng.random(50) > 0.3
    model = types.SimpleNamespace(apply_fn=_apply, params=params, outputs_are_probs=False, output="classes",
                                  jittable=True)
    eng = OcclusionEngine(model, batch_size=16)
    ref = eng.run(x[None], xy[None], valid=valid[None], patch_size=5)
    predict = lambda b: np.asarray(_apply(params, jnp.asarray(b)))  # noqa: E731 -- predict_on_batch's role
    drops, target, secs = kr.keras_drops(predict, x, xy, valid, patch_size=5, fill=0.0, mode="softmax", batch=7)
    assert target == int(ref.targets[0]) and set(secs) == {"occlude", "predict"}
    np.testing.assert_allclose(drops, ref.drops[0], atol=1e-5)
    assert (drops[~valid] == 0).all()


def test_only_keras_files_get_a_keras_reference():
    assert kr.keras_file("tiny") is None and kr.keras_file("vgg_face_random") is None
    assert kr.TF_MISSING.startswith("n/a: ")


def test_flops_done_counts_every_computed_copy_at_its_programs_flops():
    """`bench.job.flops_done` (the bench's "fraction of matmul" numerator) against a hand count.

    tiny VGG at 32 px, 2 FLOPs per multiply-accumulate of its real (unpadded) taps: the closed form
    `vgg_flops` (1,242,720); XLA's count adds biases, ReLUs and pools (within 5%). A dense run computes
    ``computed`` occluded copies plus one clean pass per image at that count; an incremental run's
    copies cost less than a dense pass each, and more than nothing.
    """
    from cms_jax.bench.job import flops_done
    from cms_jax.models import flops, load
    from cms_jax.models.flops import vgg_flops
    from cms_jax.models.vgg import TINY
    from cms_jax.pipeline import RunConfig

    clean = flops(load("tiny"))
    assert vgg_flops(TINY) == 1_242_720 and abs(clean / vgg_flops(TINY) - 1) < 0.05
    cfg = RunConfig(model="tiny")
    run = {"work_items": {"computed": 10}, "images_done": 2, "patch_size": 3}
    assert flops_done(cfg, {**run, "forward": "dense"}) == 12 * clean
    per_copy = (flops_done(cfg, {**run, "forward": "incremental"}) - 2 * clean) / 10
    assert 0.05 * clean < per_copy < clean
    assert flops_done(cfg, {**run, "forward": "dense", "work_items": {}}) is None  # nothing recorded
