"""Per-group CMS, difference maps and a permutation test, from stored drop vectors.

The bias question: does a model look at different parts of the face for
different groups? Each image's CIS (Eqs. 4-5) is rendered from its stored
drop vector (no rescoring), a group's CMS is the mean of its CIS maps
(Eq. 6), and the per-pixel significance of a difference between two groups
is estimated by permuting group labels (two-sided Welch t, max-T family-wise correction).
"""
from __future__ import annotations

import numpy as np

from cms_jax import sources
from cms_jax.projection import canonical_map


def parse_grouping(spec: str, files) -> list[str | None]:
    """Each file's group under a ``SOURCE:FIELD`` spec (`cms_jax.sources`); None where it has none."""
    return sources.read(spec, files)


def cis_maps(drops, valid, canon_xy, canvas_hw, f) -> np.ndarray:
    """Every image's CIS map (N, H_F, W_F) float32, rendered from its drop vector (Eqs. 4-5).

    ``f``: the canonical side, one for all images or (N,), each image's own (drops.npz's ``canonical_side``).
    """
    sides = np.broadcast_to(np.asarray(f, np.float64), (len(drops),))
    return np.stack([canonical_map(d, canon_xy, canvas_hw, s, v) for d, v, s in zip(drops, valid, sides)])


def _welch_t(sa, sqa, na, sb, sqb, nb):
    ma, mb = sa / na, sb / nb
    va = np.maximum(sqa / na - ma ** 2, 0) * na / (na - 1)
    vb = np.maximum(sqb / nb - mb ** 2, 0) * nb / (nb - 1)
    se = np.sqrt(va / na + vb / nb)
    return np.where(se > 0, (ma - mb) / np.maximum(se, 1e-30), 0.0)


def permutation_test(maps_a: np.ndarray, maps_b: np.ndarray, *, permutations: int = 1000,
                     alpha: float = 0.05, seed: int = 0) -> dict[str, np.ndarray]:
    """Per-pixel two-sided permutation test of mean(maps_a) - mean(maps_b), corrected by max-T.

    Group labels are permuted; at each permutation the Welch t statistic of
    every pixel is computed and the largest |t| over the map is kept. A pixel
    is significant when its observed |t| exceeds the (1 - alpha) quantile of
    that maximum (Westfall-Young max-T), which controls the family-wise error
    over all pixels with a feasible number of permutations (a per-pixel
    p-value with BH would need more permutations than pixels / alpha).

    Returns:
      ``diff`` (H, W) observed mean difference, ``t`` (H, W) Welch t,
      ``p`` (H, W) uncorrected permutation p-values, ``p_fwer`` (H, W) max-T
      corrected p-values, ``significant`` (H, W) bool (``p_fwer < alpha``).
    """
    na, nb = len(maps_a), len(maps_b)
    if na < 2 or nb < 2:
        raise ValueError(f"permutation test needs >= 2 images per group, got {na} and {nb}")
    hw = maps_a.shape[1:]
    x = np.concatenate([maps_a, maps_b]).reshape(na + nb, -1).astype(np.float64)
    x2 = x * x
    tot, tot2 = x.sum(0), x2.sum(0)
    t_obs = _welch_t(x[:na].sum(0), x2[:na].sum(0), na, x[na:].sum(0), x2[na:].sum(0), nb)
    rng = np.random.default_rng(seed)
    exceed = np.zeros(x.shape[1])
    max_t = np.zeros(permutations)
    abs_obs = np.abs(t_obs) - 1e-12
    for lo in range(0, permutations, 64):  # 64 permutations at once: their group sums are one matmul
        r = min(64, permutations - lo)
        pick = np.zeros((r, na + nb))
        for i in range(r):
            pick[i, rng.permutation(na + nb)[:na]] = 1.0
        sa, sqa = pick @ x, pick @ x2
        t = np.abs(_welch_t(sa, sqa, na, tot - sa, tot2 - sqa, nb))
        exceed += (t >= abs_obs).sum(0)
        max_t[lo:lo + r] = t.max(1)
    p = (1.0 + exceed) / (1.0 + permutations)
    p_fwer = (1.0 + (max_t[None, :] >= np.abs(t_obs)[:, None] - 1e-12).sum(1)) / (1.0 + permutations)
    diff = x[:na].mean(0) - x[na:].mean(0)
    return {"diff": diff.reshape(hw).astype(np.float32), "t": t_obs.reshape(hw), "p": p.reshape(hw),
            "p_fwer": p_fwer.reshape(hw), "significant": p_fwer.reshape(hw) < alpha}


COMPARES = ("normalised", "raw")  # how group maps are compared (`--group_compare`)


def normalise_per_image(maps: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each CIS divided by its own mean |value| over ``mask``: the map's shape, not its magnitude.

    Probability drops scale with the clean confidence (a face near the decision boundary loses
    more than a confident one from the same square), so two groups the model is unequally sure
    of differ "everywhere" in raw drops. Dividing every image's map by its own scale compares
    where each face's saliency lies, whatever its size.

    Returns:
      ``(maps, usable)``: the normalised (N, ...) maps and bool (N,), False for a map that is 0
      on the whole mask (no saliency to distribute; left at 0 and left out of the tests).
    """
    m = np.asarray(maps, np.float64)
    scale = np.abs(m[:, mask]).mean(1)
    usable = scale > 0
    shape = (-1,) + (1,) * (m.ndim - 1)
    return (m / np.where(usable, scale, 1.0).reshape(shape)).astype(np.float32), usable


def pairwise_tests(maps: np.ndarray, labels, groups, *, permutations: int = 1000, alpha: float = 0.05,
                   seed: int = 0) -> dict:
    """Every pair of ``groups`` tested per feature, corrected over all pairs *and* features together.

    ``maps`` (N, ...) holds the images of all groups (pixels of a CIS, or a region table);
    ``labels`` (N,) names each image's group. At each permutation all labels are shuffled at
    once, every pair's Welch t is computed for every feature, and the largest |t| over pairs and
    features is kept (Westfall-Young max-T over the whole family), so a run's many pair tests
    share one family-wise error rate instead of each being corrected only within itself.

    Returns:
      ``{"pairs": {"A - B": {"diff", "t", "effect", "p_fwer", "significant", "images"}}, "family": n,
      "permutations", "alpha"}``; ``effect`` is the standardised difference (Cohen's d, pooled SD).
    """
    import itertools

    labels = np.asarray(labels)
    groups = list(groups)
    keep = np.isin(labels, groups)
    x = np.asarray(maps, np.float64)[keep]
    lab = labels[keep]
    shape = x.shape[1:]
    x = x.reshape(len(x), -1)
    x2 = x * x
    n = np.asarray([(lab == g).sum() for g in groups])
    if (n < 2).any():
        raise ValueError(f"pairwise_tests needs >= 2 images per group, got {dict(zip(groups, n.tolist()))}")
    pairs = list(itertools.combinations(range(len(groups)), 2))
    onehot = np.stack([lab == g for g in groups]).astype(np.float64)

    def all_t(oh):  # (..., G, N) -> (..., pairs, features)
        s, q = oh @ x, oh @ x2
        return np.stack([_welch_t(s[..., a, :], q[..., a, :], n[a], s[..., b, :], q[..., b, :], n[b])
                         for a, b in pairs], -2)

    t_obs = all_t(onehot)
    rng = np.random.default_rng(seed)
    max_t = np.zeros(permutations)
    for lo in range(0, permutations, 16):
        r = min(16, permutations - lo)
        oh = np.stack([onehot[:, rng.permutation(len(lab))] for _ in range(r)])
        max_t[lo:lo + r] = np.abs(all_t(oh)).reshape(r, -1).max(1)
    p_fwer = (1.0 + (max_t[None, None, :] >= np.abs(t_obs)[..., None] - 1e-12).sum(-1)) / (1.0 + permutations)
    out = {}
    for k, (a, b) in enumerate(pairs):
        xa, xb = x[lab == groups[a]], x[lab == groups[b]]
        diff = xa.mean(0) - xb.mean(0)
        pooled = np.sqrt(((n[a] - 1) * xa.var(0, ddof=1) + (n[b] - 1) * xb.var(0, ddof=1)) / (n[a] + n[b] - 2))
        effect = np.where(pooled > 0, diff / np.maximum(pooled, 1e-30), 0.0)
        out[f"{groups[a]} - {groups[b]}"] = {
            "diff": diff.reshape(shape).astype(np.float32), "t": t_obs[k].reshape(shape),
            "effect": effect.reshape(shape).astype(np.float32), "p_fwer": p_fwer[k].reshape(shape),
            "significant": p_fwer[k].reshape(shape) < alpha, "images": [int(n[a]), int(n[b])]}
    return {"pairs": out, "family": int(len(pairs) * x.shape[1]), "permutations": permutations, "alpha": alpha}


def region_means(maps: np.ndarray, region_masks: dict[str, np.ndarray], coverage: np.ndarray) -> np.ndarray:
    """(N, R): each image's mean CIS value over each region (within ``coverage``), in ``region_masks`` order."""
    m = np.asarray(maps, np.float64)
    cols = []
    for mask in region_masks.values():
        sel = mask & coverage
        cols.append(m[:, sel].mean(1) if sel.any() else np.zeros(len(m)))
    return np.stack(cols, 1)
