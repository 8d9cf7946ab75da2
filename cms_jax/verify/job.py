"""The pair audit job: pairs -> aligned, embedded once -> pair drops -> genuine/impostor maps, ROC, ablations.

`run_verify` writes into ``out_dir``:

* ``verify.json``: the pairs (n genuine, n impostor, how drawn), skipped pairs with
  reasons, the clean verification metrics (`roc.metrics`), per facial region the
  TAR@FAR lost when the region is hidden on the probe with bootstrap CIs
  (`roc.ablation_drop`), the genuine - impostor test, the split-half stability of
  the maps (`maps.split_half`), and embeddings per image;
* ``pair_drops.npz``: per pair probe, gallery, same, similarity, drops / valid /
  sides (and ``reverse_*`` when symmetric), region similarities;
* ``maps.npz`` and one PNG per map (`maps.pair_maps`, one colour range for the
  signed maps, one for the parts), ``difference.png`` with the significant pixels;
* ``verify.md``: the tables in Markdown; ``verify.html``: the page (`report.py`);
* ``pair_chunks/``: the scored chunks, saved as they finish (`chunks.py`): a killed
  audit resumes from them (``resume``).

No pair scored, or more than ``max_skip_fraction`` of them skipped, is a
`VerifyFailed` (outputs written first when some pairs were scored).
"""
from __future__ import annotations

import dataclasses
import os
import time

import cv2
import numpy as np

from cms_jax import regions, roc, sources, storage
from cms_jax.render import colours, panel
from cms_jax.verify import maps as pm
from cms_jax.verify.audit import PairAudit
from cms_jax.verify.chunks import ChunkStore, digest
from cms_jax.verify.pairs import pairs_from_flag
from cms_jax.verify.report import write_verify_report


class VerifyFailed(RuntimeError):
    """A pair audit that cannot give an answer (no pair scored, too many skipped)."""


@dataclasses.dataclass
class VerifyOptions:
    """How pairs are made and scored (the flags of ``experiments/verify.py``)."""

    pairs: str = "auto:200"
    identity: str = "lfw:identity"
    symmetric: bool = False
    seed: int = 0
    groups: str = ""
    fars: tuple[float, ...] = roc.FARS
    bootstrap: int = 1000
    test_images: int = 300
    permutations: int = 1000
    max_skip_fraction: float = 0.5
    chunk_images: int = 16


def _png(dest, canon, values, mask, scale, edges) -> np.ndarray:
    rgb = panel.map_panel(canon.image, values, mask, scale, edges=edges)
    ok, data = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise OSError(f"could not encode {dest}")
    storage.write_bytes(dest, data.tobytes())
    return rgb


def _write_maps(out, canon, named: dict, cover: np.ndarray, test: dict, counts: dict) -> tuple[dict, dict]:
    """One PNG per map (``{name: file}``) and the page's panels (``{caption with n: RGB}``)."""
    panels = {}

    def n_of(k):
        return counts.get(k.removesuffix("_similarity").removesuffix("_dissimilarity"))

    edges = panel.label_edges(regions.region_masks(canon.vertices[:468], canon.canvas_hw))
    signed = {k: v for k, v in named.items() if not k.endswith(("_similarity", "_dissimilarity"))}
    parts = {k: v for k, v in named.items() if k not in signed}
    files = {}
    for group in (signed, parts):
        if not group:
            continue
        scale = colours.joint([colours.fit(v, cover, unit="cosine") for v in group.values()])
        for k, v in group.items():
            name = k.replace("/", "_") + ".png"
            panels[f"{k.replace('_', ' ')} (n={n_of(k)} pairs)"] = _png(out / name, canon, v, cover, scale, edges)
            files[k] = name
    if "genuine" in named and "impostor" in named:
        diff = named["genuine"] - named["impostor"]
        scale = colours.fit(diff, cover, unit="cosine", diverging=True)
        panels[f"genuine − impostor (n={counts['genuine']} and {counts['impostor']})"] = _png(
            out / "difference.png", canon, diff, cover, scale, edges)
        files["genuine - impostor"] = "difference.png"
        if test.get("tested"):
            sig = cv2.resize(test["significant"].astype(np.uint8), canon.canvas_hw[::-1],
                             interpolation=cv2.INTER_NEAREST) > 0
            panels[f"genuine − impostor where significant ({int((sig & cover).sum())} px; n={test['images']} "
                   f"tested)"] = _png(out / "difference_significant.png", canon, np.where(sig & cover, diff, 0.0),
                                      sig & cover, scale, edges)
            files["genuine - impostor, significant pixels"] = "difference_significant.png"
    return files, panels


def _markdown(summary: dict) -> str:
    lines = [f"# Pair audit of {summary['model']}", "",
             f"{summary['pairs']['genuine']} genuine and {summary['pairs']['impostor']} impostor pairs "
             f"({summary['pairs']['how']}); {len(summary['skipped'])} skipped.", "",
             "| FAR | TAR | threshold | FAR achieved | resolved by n |", "|---|---|---|---|---|"]
    m = summary["clean"]
    for far in summary["fars"]:
        r = m[f"tar@far={far:g}"]
        lines.append(f"| {far:g} | {r['tar']:.3f} | {r['threshold']:.4f} | {r['far_achieved']:.4f} | "
                     f"{'yes' if r['far_resolved'] else 'no'} |")
    lines += ["", f"EER {m['eer']:.3f} at threshold {m['eer_threshold']:.4f}.", "",
              "TAR lost when a region is hidden on the probe (clean threshold; 95% bootstrap CI over pairs):", "",
              "| region | " + " | ".join(f"ΔTAR@FAR={f:g}" for f in summary["fars"]) + " |",
              "|---|" + "---|" * len(summary["fars"])]
    for name, row in summary["regions"].items():
        cells = [f"{c['drop']:+.3f} [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}]" for c in row["tar_drop"]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    h = summary["split_half"]
    lines += ["", "Split-half stability: " + (f"Pearson r genuine {h['genuine']:.3f}, impostor {h['impostor']:.3f}, "
                                              f"difference {h.get('difference', float('nan')):.3f} ({h['rule']}; "
                                              f"people {h['people']})" if h["tested"] else h["reason"])]
    t = summary["difference_test"]
    lines += ["", f"genuine - impostor: " + (f"{t['significant_pixels']} significant pixels of the "
                                             f"{t['test_canvas']} test canvas, n = {t['images']} ({t['test']})"
                                             if t.get("tested") else f"not tested: {t['reason']}"), ""]
    return "\n".join(lines)


def fingerprint(scorer, pairs, opts: VerifyOptions) -> dict:
    """What makes saved chunks of this audit reusable (`chunks.ChunkStore`): model, occlusion, mesh, pairs."""
    cfg = scorer.cfg
    return {"model": scorer.model.name, "model_source": str(cfg.model), "patch": int(scorer.patch),
            "fill": float(cfg.fill), "dtype": cfg.dtype, "subdivision": cfg.subdivision,
            "visibility": cfg.visibility, "symmetric": opts.symmetric,
            "pairs": digest([pairs.probe, pairs.gallery, np.asarray(pairs.same, bool).tolist()])}


def run_verify(scorer, images: list[str], out_dir, opts: VerifyOptions, *, workers: int = 2,
               cache_dir: str | None = None, resume: bool = False, overwrite: bool = False, stop=None) -> dict:
    """Run a pair audit of ``scorer``'s embedding model over ``images`` (module docstring).

    Scored chunks are saved in ``out_dir/pair_chunks`` as they finish; ``resume`` reuses them
    after a kill, ``overwrite`` replaces an earlier audit (`chunks.ChunkStore`). ``stop`` (a
    `pipeline.interrupt.StopRequest`) is read between chunks.
    """
    t0 = time.monotonic()
    out = storage.path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pairs = pairs_from_flag(opts.pairs, images, opts.identity, opts.seed)
    store = ChunkStore(out_dir, fingerprint(scorer, pairs, opts), resume=resume, overwrite=overwrite)
    audit = PairAudit(scorer, workers=workers, cache_dir=cache_dir, chunk=opts.chunk_images, store=store, stop=stop)
    prepared, not_aligned = audit.prepare(pairs.images())
    if not prepared:
        raise VerifyFailed(f"no image of the {len(pairs.images())} paired could be aligned, e.g. "
                           f"{next(iter(not_aligned.items()))}")
    emb = audit.embed(prepared)
    scores = audit.score(pairs, prepared, emb, symmetric=opts.symmetric)
    for s in scores.skipped:
        for who in ("probe", "gallery"):
            if s[who] in not_aligned and not_aligned[s[who]] not in s["reason"]:
                s["reason"] += f" ({os.path.basename(s[who])}: {not_aligned[s[who]]})"
    n_kept = len(scores.pairs)
    if not n_kept:
        raise VerifyFailed(f"no pair could be scored: {len(scores.skipped)} skipped, e.g. {scores.skipped[0]}")
    same = np.asarray(scores.pairs.same, bool)
    if same.all() or not same.any():
        raise VerifyFailed(f"the {n_kept} scored pairs are all {'genuine' if same.all() else 'impostor'}: "
                           f"verification metrics need both kinds")
    sim = scores.similarity
    clean = roc.metrics(sim[same], sim[~same], opts.fars)
    region_sim = audit.region_similarities(scores.pairs, prepared, emb, fill=scorer.cfg.fill)
    region_rows = {}
    for r, name in enumerate(regions.REGIONS):
        occ = region_sim[:, r]
        region_rows[name] = {
            "tar_drop": [roc.ablation_drop(sim[same], sim[~same], occ[same], occ[~same], far, draws=opts.bootstrap,
                                           seed=opts.seed) for far in opts.fars],
            "mean_similarity_change": {"genuine": float(np.mean(occ[same] - sim[same])),
                                       "impostor": float(np.mean(occ[~same] - sim[~same]))}}
    canon = scorer.canon
    probe_groups = sources.read(opts.groups, list(scores.pairs.probe)) if opts.groups else None
    named = pm.pair_maps(scores, canon, probe_groups=probe_groups)
    cover = pm.coverage(scores, canon)
    test = pm.difference_test(scores, canon, test_images=opts.test_images, permutations=opts.permutations,
                              seed=opts.seed)
    counts = {"genuine": int(same.sum()), "impostor": int((~same).sum())}
    halves = (pm.split_half(scores, canon, sources.read(opts.identity, list(scores.pairs.probe)), cover,
                            seed=opts.seed) if opts.identity else {"tested": False, "reason": "no identity source"})
    if probe_groups is not None:
        for g in sorted({x for x in probe_groups if x is not None}):
            member = np.asarray([x == g for x in probe_groups])
            counts[f"genuine/{g}"], counts[f"impostor/{g}"] = int((same & member).sum()), int((~same & member).sum())
    files, panels = _write_maps(out, canon, named, cover, test, counts)
    storage.save_npz(out / "maps.npz", **{k.replace("/", "__"): v for k, v in named.items()})
    arrays = dict(probe=np.asarray(scores.pairs.probe), gallery=np.asarray(scores.pairs.gallery), same=same,
                  similarity=sim, drops=scores.forward.drops, valid=scores.forward.valid,
                  sides=scores.forward.sides, region_similarity=region_sim, regions=np.asarray(regions.REGIONS))
    if scores.reverse is not None:
        arrays.update(reverse_drops=scores.reverse.drops, reverse_valid=scores.reverse.valid,
                      reverse_sides=scores.reverse.sides)
    storage.save_npz(out / "pair_drops.npz", **arrays)
    how = (f"drawn with seed {opts.seed} from {opts.identity}" if opts.pairs.startswith("auto:")
           else f"read from {opts.pairs}")
    summary = {
        "model": scorer.model.name, "images": len(pairs.images()), "images_aligned": len(prepared),
        "pairs": {"requested": len(pairs), "scored": n_kept, "how": how, **counts},
        "symmetric": opts.symmetric, "fars": list(opts.fars), "clean": clean,
        "regions": region_rows, "region_rule": "the whole region set to the fill value on the probe; "
                                               "ΔTAR at the clean threshold, paired stratified bootstrap",
        "difference_test": {k: v for k, v in test.items() if k not in ("significant", "diff")},
        "split_half": halves,
        "maps": {k: {"file": files.get(k), "n": counts.get(k.removesuffix("_similarity").removesuffix(
            "_dissimilarity"))} for k in named},
        "embeddings_per_image": sorted(set(audit.embed_counts.values())),
        "chunks": {"scored": audit.chunks_scored, "resumed": store.loaded, "folder": "pair_chunks"},
        "engine_clean_vs_embedding_max_abs": float(np.abs(scores.forward.clean - sim).max()),
        "skipped": scores.skipped, "images_not_aligned": not_aligned,
        "patch_size": scorer.patch, "fill": scorer.cfg.fill, "dtype": scorer.cfg.dtype,
        **scorer.backend.fidelity.summary_fields(scorer.cfg.dtype, scorer.cfg.approx_tau),
        "seconds": time.monotonic() - t0,
    }
    storage.write_json(out / "verify.json", summary)
    storage.write_text(out / "verify.md", _markdown(summary))
    write_verify_report(out / "verify.html", summary, panels, arrays, canon, scorer.model, scorer.patch, cache_dir)
    if len(scores.skipped) > opts.max_skip_fraction * len(pairs):
        raise VerifyFailed(f"{len(scores.skipped)} of {len(pairs)} pairs skipped (more than "
                           f"--max_skip_fraction={opts.max_skip_fraction}); outputs written to {out}")
    return summary


def lfw_images(smoke: bool = False) -> str:
    """The LFW photos of the assets, the pair audit's default images (the first 12 for a smoke run)."""
    from cms_jax.assets import resolve_dir
    folder = resolve_dir("lfw", verify=False)
    return ",".join(str(p) for p in sorted(folder.glob("*.jpg"))[:12]) if smoke else str(folder)


def run_pair_job(cfg, out_dir, opts: VerifyOptions, *, workers: int = 2, resume: bool = False,
                 overwrite: bool = False, stop=None, cache_dir: str | None = None) -> dict:
    """A pair audit from a `RunConfig` (its model, images and occlusion settings): the entry of
    ``experiments/verify.py`` and of ``experiments/cms.py --pairs``."""
    from cms_jax.data.image_list import expand_images
    from cms_jax.scoring.scorer import Scorer

    return run_verify(Scorer(cfg), expand_images(cfg.images, cfg.max_images), out_dir, opts, workers=workers,
                      cache_dir=cache_dir, resume=resume, overwrite=overwrite, stop=stop)


def one_line(summary: dict) -> str:
    """The line a command prints when a pair audit ends."""
    far = summary["fars"][0]
    m = summary["clean"]
    return (f"pair audit of {summary['model']}: {summary['pairs']['genuine']} genuine + "
            f"{summary['pairs']['impostor']} impostor pairs, TAR@FAR={far:g} {m[f'tar@far={far:g}']['tar']:.3f}, "
            f"EER {m['eer']:.3f}")
