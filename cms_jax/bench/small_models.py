"""The engine's four paths on real small models, and bf16 fidelity on real faces (throughput extras).

``bench_small`` times dense / incremental, fp32 / bf16 occlusion (Eq. 1) of a registered model on
random inputs; ``fidelity_real_faces`` sets dense bf16 drops against fp32 on UTKFace chips. Any
failure is recorded in the results and printed; the benchmark goes on.
"""
from __future__ import annotations

import numpy as np

from cms_jax import models
from cms_jax.bench.measure import timed
from cms_jax.bench.methods import JAX_METHODS, engine
from cms_jax.figures.stats import pearson


def bench_small(name: str, v: int, results: dict, methods, chunk: int, patch_size: int) -> None:
    """Engine throughput (dense and incremental, fp32 and bf16) of a real small model.

    Args:
      name: `cms_jax.models.load` name.
      v: occluded copies (vertices) per image.
      results: filled at ``results["small_models"][name]``.
      methods: method names; those of ``JAX_METHODS`` run.
      chunk: the engine's batch size.
      patch_size: square side, pixels.
    """
    try:
        model = models.load(name)
    except Exception as err:  # noqa: BLE001 -- any failure is reported, the benchmark goes on
        print(f"  {name}: skipped ({type(err).__name__}: {err})")
        results["small_models"][name] = {"skipped": f"{type(err).__name__}: {err}"}
        return
    h, w = model.input_size
    rng = np.random.default_rng(0)
    image = rng.standard_normal((1, h, w, model.channels)).astype(np.float32)
    xy = rng.uniform(0, min(h, w), (v, 2))
    row = {"input_size": [h, w], "vertices": v, "passes_per_s": {},
           "torch_reference": "n/a: no torch port of this model"}
    try:
        row["flops_per_pass"] = models.flops(model)
    except Exception as err:  # noqa: BLE001
        row["flops_per_pass"] = None
        print(f"  {name}: FLOPs unknown ({type(err).__name__}: {err})")
    for label in [m for m in methods if m in JAX_METHODS]:
        try:
            eng = engine(model, label, chunk, patch_size)
            eng.run(image, xy)
            secs = min(timed(lambda: eng.run(image, xy)) for _ in range(3))
            row["passes_per_s"][label] = (v + 1) / secs
            fl = row["flops_per_pass"]
            achieved = f", {(v + 1) / secs * fl / 1e12:.4f} TFLOP/s dense-equivalent" if fl else ""
            print(f"  {name:<10} {label:<17} {(v + 1) / secs:9.1f} passes/s{achieved}", flush=True)
        except Exception as err:  # noqa: BLE001
            row["passes_per_s"][label] = None
            row[f"{label}_error"] = f"{type(err).__name__}: {str(err)[:200]}"
            print(f"  {name:<10} {label:<17} failed: {row[f'{label}_error']}")
    results["small_models"][name] = row


def fidelity_real_faces(name: str, n_faces: int, results: dict, patch_size: int) -> None:
    """Pearson of dense bf16 vs fp32 drops of a real model on real faces (UTKFace chips, 4 px grid).

    Fills ``results["bf16_fidelity_real"]``.
    """
    try:
        import cv2

        from cms_jax.assets import resolve_dir

        model = models.load(name)
        paths = sorted(resolve_dir("utkface").glob("*.jpg"))[:n_faces]
    except Exception as err:  # noqa: BLE001 -- reported, the benchmark goes on
        print(f"  fidelity on {name}: skipped ({type(err).__name__}: {err})")
        results["bf16_fidelity_real"] = {"skipped": f"{type(err).__name__}: {err}"}
        return
    h, w = model.input_size
    gy, gx = np.mgrid[2:h:4, 2:w:4]
    xy = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)
    fp32, bf16 = engine(model, "dense_fp32", 256, patch_size), engine(model, "dense_bf16", 256, patch_size)
    corrs = []
    for path in paths:
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        pad = int(0.4 * rgb.shape[0])  # loose crop: the model was trained with context around the face
        rgb = cv2.resize(cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE), (w, h),
                         interpolation=cv2.INTER_AREA)
        image = model.preprocess(rgb[None])
        ref = fp32.run(image, xy)
        got = bf16.run(image, xy, targets=ref.targets)
        corrs.append(pearson(ref.drops, got.drops))
    results["bf16_fidelity_real"] = {"model": name, "faces": len(corrs), "vertices": len(xy),
                                     "pearson_mean": float(np.mean(corrs)), "pearson_min": float(np.min(corrs))}
    print(f"  bf16 vs fp32 drops, {name}, {len(corrs)} UTKFace faces x {len(xy)} squares: "
          f"Pearson mean {np.mean(corrs):.5f}, min {np.min(corrs):.5f}")
