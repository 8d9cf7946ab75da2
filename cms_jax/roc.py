"""Verification metrics from pair similarities: TAR at a fixed FAR, EER, and bootstrap CIs.

A pair is accepted when its cosine similarity is strictly above the threshold.
The threshold for a false-accept rate ``far`` is the (k+1)-th highest impostor
similarity, k = floor(far * n_impostor): at most k impostors are accepted
(fewer with ties), so the achieved FAR never exceeds the nominal one. With fewer
than 1/far impostor pairs that means accepting none (``far_resolved`` False:
the FAR is not resolved by the sample and the TAR is at FAR 0).

EER: the threshold, among all observed similarities, where FAR(t) = P(impostor >
t) and FRR(t) = P(genuine <= t) are closest; the EER is their mean there.

Region ablations compare each region-occluded similarity with the clean one on
the same pairs: ``drop`` is TAR(clean) - TAR(occluded) at the clean threshold
(the deployed system, its threshold unchanged), ``drop_recalibrated`` with each
condition's own threshold for the FAR. CIs are percentile intervals of a paired,
stratified bootstrap (genuine and impostor pairs resampled separately; the same
draws for clean and occluded).
"""
from __future__ import annotations

import numpy as np

FARS = (1e-2, 1e-3)


def threshold_at_far(impostor: np.ndarray, far: float) -> float:
    """The acceptance threshold (accept ``s > t``) whose FAR on ``impostor`` is at most ``far``."""
    s = np.sort(np.asarray(impostor, np.float64))[::-1]
    if not len(s):
        raise ValueError("threshold_at_far: no impostor similarities")
    k = int(np.floor(far * len(s) + 1e-9))
    return float(s[k]) if k < len(s) else -np.inf


def tar_at(genuine: np.ndarray, threshold: float) -> float:
    """Share of genuine pairs accepted (similarity > threshold)."""
    return float(np.mean(np.asarray(genuine, np.float64) > threshold))


def eer(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """``(EER, threshold)`` over every observed similarity as a threshold (module docstring)."""
    g, i = np.sort(np.asarray(genuine, np.float64)), np.sort(np.asarray(impostor, np.float64))
    if not len(g) or not len(i):
        raise ValueError(f"eer: needs genuine and impostor similarities, got {len(g)} and {len(i)}")
    t = np.unique(np.concatenate([g, i, [-np.inf]]))
    far = 1.0 - np.searchsorted(i, t, side="right") / len(i)  # P(impostor > t)
    frr = np.searchsorted(g, t, side="right") / len(g)        # P(genuine <= t)
    k = int(np.argmin(np.abs(far - frr)))
    return float((far[k] + frr[k]) / 2), float(t[k])


def metrics(genuine: np.ndarray, impostor: np.ndarray, fars=FARS) -> dict:
    """TAR at each FAR (with its threshold, and whether the sample resolves it), EER, n of each."""
    out = {"n_genuine": int(len(genuine)), "n_impostor": int(len(impostor))}
    for far in fars:
        t = threshold_at_far(impostor, far)
        out[f"tar@far={far:g}"] = {"tar": tar_at(genuine, t), "threshold": t,
                                   "far_achieved": float(np.mean(np.asarray(impostor) > t)),
                                   "far_resolved": bool(far * len(impostor) >= 1)}
    e, t = eer(genuine, impostor)
    out["eer"], out["eer_threshold"] = e, t
    return out


def _drops(gc, ic, go, io, far):
    t = threshold_at_far(ic, far)
    fixed = tar_at(gc, t) - tar_at(go, t)
    recal = tar_at(gc, t) - tar_at(go, threshold_at_far(io, far))
    return fixed, recal


def ablation_drop(gen_clean, imp_clean, gen_occ, imp_occ, far: float, *, draws: int = 1000,
                  seed: int = 0, level: float = 0.95) -> dict:
    """TAR@FAR lost when a region is hidden, with paired bootstrap CIs (module docstring).

    Args:
      gen_clean, imp_clean: clean similarities of the genuine and impostor pairs.
      gen_occ, imp_occ: the same pairs' similarities with the region occluded on the probe.
      far: the false-accept rate.
    """
    gc, ic, go, io = (np.asarray(a, np.float64) for a in (gen_clean, imp_clean, gen_occ, imp_occ))
    if gc.shape != go.shape or ic.shape != io.shape:
        raise ValueError("ablation_drop: clean and occluded similarities must be of the same pairs")
    fixed, recal = _drops(gc, ic, go, io, far)
    rng = np.random.default_rng(seed)
    boot = np.empty((draws, 2))
    for b in range(draws):
        gi, ii = rng.integers(0, len(gc), len(gc)), rng.integers(0, len(ic), len(ic))
        boot[b] = _drops(gc[gi], ic[ii], go[gi], io[ii], far)
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return {"far": far, "drop": fixed, "ci": [float(np.percentile(boot[:, 0], lo)), float(np.percentile(boot[:, 0], hi))],
            "drop_recalibrated": recal,
            "ci_recalibrated": [float(np.percentile(boot[:, 1], lo)), float(np.percentile(boot[:, 1], hi))],
            "draws": draws, "level": level}
