"""The job's writers are handed values, and its one reader reads back what they wrote.

`Fidelity` is the one record of a bfloat16 or approximate run's agreement
with float32 drops (measured once, restored from a checkpoint, first measured
value over the processes); `writers.summary` is built from a `RunRecord` and
plain values, no `Scorer`; `reader.read_run` returns exactly what
`writers.write_final` wrote.
"""
from __future__ import annotations

import types

import numpy as np
import pytest

from cms_jax.align.canonical import CanonicalFace
from cms_jax.pipeline import RunConfig, read_run, writers
from cms_jax.pipeline.record import RunRecord
from cms_jax.scoring.backend import Fidelity


def test_fidelity_takes_the_first_measured_value_and_keeps_its_own_over_none():
    rows = [Fidelity().as_dict(), Fidelity(0.97).as_dict(), Fidelity(0.5, {"pearson": 0.9}).as_dict()]
    got = Fidelity.first_of(rows)  # process order: the first process that measured one
    assert (got.bf16, got.approx) == (0.97, {"pearson": 0.9})
    mine = Fidelity(0.99)
    mine.update({"bf16_fidelity": None, "approx_fidelity": None})  # a checkpoint from before the measure
    assert mine.bf16 == 0.99 and mine.approx is None
    assert Fidelity(0.9).summary_fields("float32", 1.0) == {}
    assert Fidelity(0.9).summary_fields("bfloat16", 1.0) == {"bf16_fidelity": 0.9}
    assert Fidelity(None, {"pearson": 1.0}).summary_fields("float32", 0.5) == {"approx_fidelity": {"pearson": 1.0}}


def _record(cfg, canon, **backend):
    model = types.SimpleNamespace(name="m", input_size=(32, 32), output="classes", card_note="", crop_policy="tight",
                                  crop_margin=0.1)
    b = types.SimpleNamespace(forward="dense", forward_note="", **backend)
    return RunRecord.of(cfg, types.SimpleNamespace(model=model, canon=canon, patch=3, backend=b, backend_probe=None))


def test_summary_is_built_from_values_in_the_order_of_summary_json():
    canon = CanonicalFace.mediapipe(canvas=128)
    cfg = RunConfig(model="tiny", dtype="bfloat16", canvas=128)
    s = writers.summary(_record(cfg, canon), Fidelity(0.98), images_done=4, total=6,
                        skipped=[{"file": "a", "reason": "no face"}], seconds=2.0, sides=[10.0, 12.0, 14.0, 16.0])
    assert list(s)[:9] == ["model", "model_name", "model_input", "model_output", "crop_policy", "crop_margin",
                           "patch_size", "canonical_side", "score"]
    assert (s["model_name"], s["model_input"], s["patch_size"], s["forward"]) == ("m", [32, 32], 3, "dense")
    assert s["bf16_fidelity"] == 0.98 and "approx_fidelity" not in s and "forward_note" not in s
    assert (s["vertices"], s["canvas"], s["images_done"], s["faces_per_second"]) == (468, [128, 128], 4, 2.0)
    assert s["canonical_side"] == {"min": 10.0, "median": 13.0, "max": 16.0}
    assert s["fingerprint"] == cfg.fingerprint() and "argv" in s and "cwd" in s


def test_read_run_returns_what_write_final_wrote_and_names_what_is_missing(tmp_path):
    canon = CanonicalFace.mediapipe(canvas=128)
    with pytest.raises(FileNotFoundError, match=r"cms.npy.*drops.npz.*summary.json"):
        read_run(str(tmp_path))
    rng = np.random.default_rng(0)
    n, v = 3, canon.vertices.shape[0]
    drops = {"files": np.asarray(["a.jpg", "b.jpg", "c.jpg"]), "drops": rng.normal(size=(n, v)).astype(np.float32),
             "valid": rng.random((n, v)) > 0.2, "targets": np.zeros(n, np.int32),
             "clean": np.ones(n, np.float32), "canonical_side": np.full(n, 9.0, np.float32)}
    cms = rng.random(canon.canvas_hw).astype(np.float32)
    summary = {"score": "prob", "crop_policy": "tight", "images_done": n}
    writers.write_final(str(tmp_path), cms, canon, drops, summary)
    run = read_run(str(tmp_path))
    assert run.summary == summary
    np.testing.assert_array_equal(run.cms, cms)
    np.testing.assert_array_equal(run.sides, drops["canonical_side"])
    for k, a in drops.items():
        np.testing.assert_array_equal(run.drops[k], a)
    np.testing.assert_array_equal(run.drops["canon_xy"], canon.vertices.astype(np.float32))
