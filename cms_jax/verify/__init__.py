"""Face-recognition audits: which parts of the face make two photos match (pairs on the canonical face).

`pairs` (which pairs: a CSV or drawn from an identity source), `audit` (aligned and
embedded once per image, each probe's occluded copies scored against all its
galleries: Eq. 1 with the cosine to the gallery), `maps` (genuine / impostor CMSs,
similarity and dissimilarity parts, the permutation test), `cms_jax.roc` (TAR@FAR, EER,
per-region ablation with bootstrap CIs) and `job` (`run_verify`, behind
``experiments/verify.py``).
"""
from cms_jax.verify.job import VerifyFailed, VerifyOptions, lfw_images, one_line, run_pair_job, run_verify
from cms_jax.verify.pairs import PairSet, draw_pairs, pairs_from_flag, read_pairs

__all__ = ["PairSet", "VerifyFailed", "VerifyOptions", "draw_pairs", "pairs_from_flag", "read_pairs", "run_verify",
           "run_pair_job", "one_line", "lfw_images"]
