"""Fig. 15 without photo pairs: digital eye make-up, and the same paint on the cheeks as a control.

The paper (Sec. 5.2, Fig. 15) reads its gender model's CMS as keying on the
eyes, and shows photos of the same people with and without eye make-up: the
'male' confidence phi(I, man) (Eq. 1) falls with make-up. No such pairs are
among the assets. Here the make-up is drawn instead, on each aligned crop the
model sees, from that face's MediaPipe landmarks (`eye_makeup_mask`):
eyeliner along both lids and eyeshadow from the upper lid half-way up to the
eyebrow. The control (`cheek_control_mask`) is the very same paint moved down
onto the upper cheeks, beside the nose, so a fall that any dark patch of that
size causes is told apart from one that dark eyes cause. `paint` darkens a crop under a mask.

`evaluate` reports, per true gender, phi(man) on the clean, made-up and
cheek-painted crops, the paired changes with bootstrap 95% intervals, the
share of faces whose phi(man) fell, and how many 'man' predictions flipped.
"""
from __future__ import annotations

import cv2
import numpy as np

# MediaPipe face-mesh landmark indices, outer corner -> inner corner; "right"
# is the subject's right eye (the image's left).
UPPER_LID = {"right": (33, 246, 161, 160, 159, 158, 157, 173, 133),
             "left": (263, 466, 388, 387, 386, 385, 384, 398, 362)}
LOWER_LID = {"right": (33, 7, 163, 144, 145, 153, 154, 155, 133),
             "left": (263, 249, 390, 373, 374, 380, 381, 382, 362)}
BROW_LOWER = {"right": (46, 53, 52, 65, 55), "left": (276, 283, 282, 295, 285)}
MOUTH_CENTRE = (13, 14)

SHADOW_HEIGHT = 0.5    # eyeshadow reaches this fraction of the way from the upper lid to the brow
SHADOW_ALPHA = 0.55    # darkening under full eyeshadow
LINER_ALPHA = 0.9      # darkening under the eyeliner
CHEEK_DOWN = 0.45      # the control moves each eye's mask this many inter-ocular distances down
CHEEK_OUT = 0.12       # ... and this many away from the nose (onto the upper cheek)
_SS = 4                # supersampling of the masks (anti-aliased edges at 64 px crops)


def _resample(points: np.ndarray, n: int) -> np.ndarray:
    """``n`` points evenly spaced by arc length along a polyline."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    t = np.concatenate([[0.0], np.cumsum(seg)])
    u = np.linspace(0.0, t[-1], n)
    return np.stack([np.interp(u, t, points[:, 0]), np.interp(u, t, points[:, 1])], 1)


def _geometry(xy: np.ndarray) -> tuple[dict[str, np.ndarray], float, np.ndarray]:
    """(eye centres by side, inter-ocular distance, unit vector from the eye line towards the mouth)."""
    centres = {s: xy[list(UPPER_LID[s] + LOWER_LID[s])].mean(0) for s in ("right", "left")}
    across = centres["left"] - centres["right"]
    iod = float(np.linalg.norm(across))
    down = np.array([-across[1], across[0]]) / max(iod, 1e-6)
    if np.dot(xy[list(MOUTH_CENTRE)].mean(0) - (centres["right"] + centres["left"]) / 2, down) < 0:
        down = -down
    return centres, iod, down


def _check(xy) -> np.ndarray:
    xy = np.asarray(xy, np.float64)
    if xy.ndim != 2 or xy.shape[0] < 468 or xy.shape[1] != 2 or not np.isfinite(xy[:468]).all():
        raise ValueError(f"eye make-up: need (468, 2) finite landmarks, got shape {xy.shape}")
    iod = _geometry(xy)[1]
    if iod < 1.0:
        raise ValueError(f"eye make-up: the eyes are {iod:.2f} px apart; no face to paint")
    return xy


def _ss(points: np.ndarray) -> np.ndarray:
    """Crop pixels -> integer points of the supersampled canvas (pixel centres kept in register)."""
    return np.round((points + 0.5) * _SS - 0.5).astype(np.int32)


def _one_eye(xy: np.ndarray, hw: tuple[int, int], side: str, iod: float) -> np.ndarray:
    """Float (H, W) darkening weights of one eye's eyeshadow and eyeliner (``iod``: inter-ocular distance)."""
    h, w = hw
    shadow = np.zeros((h * _SS, w * _SS), np.uint8)  # drawn supersampled; INTER_AREA anti-aliases
    liner = np.zeros_like(shadow)
    lid = _resample(xy[list(UPPER_LID[side])], 24)
    brow = _resample(xy[list(BROW_LOWER[side])], 24)
    top = lid + SHADOW_HEIGHT * (brow - lid)
    cv2.fillPoly(shadow, [_ss(np.concatenate([lid, top[::-1]]))], 255)
    eye_w = float(np.linalg.norm(lid[-1] - lid[0]))
    for pts, frac in ((lid, 0.10), (_resample(xy[list(LOWER_LID[side])], 24), 0.05)):
        thick = max(1, int(round(frac * eye_w * _SS)))
        cv2.polylines(liner, [_ss(pts)], False, 255, thick)
    shadow = cv2.GaussianBlur(shadow.astype(np.float32) / 255, (0, 0), 0.04 * iod * _SS)
    mask = np.maximum(SHADOW_ALPHA * shadow, LINER_ALPHA * liner.astype(np.float32) / 255)
    return cv2.resize(mask, (w, h), interpolation=cv2.INTER_AREA).clip(0.0, 1.0)


def makeup_masks(xy: np.ndarray, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(eye make-up, cheek control): float (H, W) darkening weights in [0, 1], each eye drawn once.

    The control is each eye's mask moved onto its upper cheek: CHEEK_DOWN inter-ocular distances
    towards the mouth and CHEEK_OUT away from the nose, so it lands beside the nose, not under it.

    Args:
      xy: (468, 2) MediaPipe landmarks in crop pixels (x column, y row).
      hw: the crop's (H, W).

    Raises:
      ValueError: landmarks that are not 468 finite points, or eyes that collapse to a point.
    """
    xy = _check(xy)
    centres, iod, down = _geometry(xy)
    mid = (centres["right"] + centres["left"]) / 2
    h, w = hw
    eyes, cheeks = np.zeros(hw, np.float32), np.zeros(hw, np.float32)
    for side in ("right", "left"):
        one = _one_eye(xy, hw, side, iod)
        away = (centres[side] - mid) / max(np.linalg.norm(centres[side] - mid), 1e-6)
        dx, dy = iod * (CHEEK_DOWN * down + CHEEK_OUT * away)
        shift = np.float32([[1, 0, dx], [0, 1, dy]])
        eyes = np.maximum(eyes, one)
        cheeks = np.maximum(cheeks, cv2.warpAffine(one, shift, (w, h), flags=cv2.INTER_LINEAR, borderValue=0.0))
    return eyes, cheeks


def eye_makeup_mask(xy: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """The eye make-up of `makeup_masks`: eyeshadow and eyeliner of both eyes."""
    return makeup_masks(xy, hw)[0]


def cheek_control_mask(xy: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """The cheek control of `makeup_masks`: the same paint on the upper cheeks."""
    return makeup_masks(xy, hw)[1]


def paint(crop: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``crop`` (uint8 H, W, 3) darkened towards black by ``mask`` (out = crop * (1 - mask))."""
    out = np.asarray(crop, np.float32) * (1.0 - mask[..., None])
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def paired_change(before: np.ndarray, after: np.ndarray, *, seed: int = 0, n_boot: int = 2000) -> dict:
    """Mean of after - before with a bootstrap 95% interval, and the share of faces that fell."""
    d = np.asarray(after, np.float64) - np.asarray(before, np.float64)
    if d.size == 0:
        return {"n": 0, "mean": float("nan"), "ci95": [float("nan")] * 2, "share_fell": float("nan")}
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, d.size, (n_boot, d.size))].mean(1)
    return {"n": int(d.size), "mean": float(d.mean()), "ci95": [float(np.percentile(boots, 2.5)),
                                                               float(np.percentile(boots, 97.5))],
            "share_fell": float((d < 0).mean())}


def evaluate(p_clean: np.ndarray, p_eyes: np.ndarray, p_cheeks: np.ndarray, is_man: np.ndarray,
             threshold: float = 0.5) -> dict:
    """Per true gender: mean phi(man) of each version, paired changes, and flipped 'man' predictions.

    Args:
      p_clean, p_eyes, p_cheeks: (N,) phi(man) of the clean, made-up and cheek-painted crops.
      is_man: (N,) bool, the true gender.
      threshold: phi(man) above which the prediction is 'man' (0.5 for two softmax classes).
    """
    out = {}
    for name, sel in (("man", np.asarray(is_man, bool)), ("woman", ~np.asarray(is_man, bool))):
        c, e, k = p_clean[sel], p_eyes[sel], p_cheeks[sel]
        pred = c > threshold
        out[name] = {
            "faces": int(sel.sum()),
            "p_man": {"clean": float(c.mean()) if c.size else float("nan"),
                      "eyes": float(e.mean()) if e.size else float("nan"),
                      "cheeks": float(k.mean()) if k.size else float("nan")},
            "eyes_minus_clean": paired_change(c, e),
            "cheeks_minus_clean": paired_change(c, k),
            "eyes_minus_cheeks": paired_change(k, e),
            "predicted_man": int(pred.sum()),
            "flipped_to_woman": {"eyes": int((pred & (e <= threshold)).sum()),
                                 "cheeks": int((pred & (k <= threshold)).sum())},
        }
    return out


def _man_index(label_from: str, model) -> int:
    from cms_jax.scoring.labels import class_indices

    index = class_indices(label_from, model)
    if "male" not in index:
        raise ValueError(f"--label_from={label_from} gives {sorted(index)}; the make-up test needs a gender "
                         f"source (male/female), e.g. utkface:gender")
    return index["male"]


def run(model_names, images: str, out_dir: str, *, max_images: int = 0, label_from: str = "utkface:gender",
        examples: int = 6, workers: int = 2, align_cache: str | None = None, batch: int = 256) -> dict:
    """For each gender model: phi(man) of every face clean, with eye make-up and with the cheek control.

    Writes fig15_makeup.json, fig15_makeup.md, fig15_makeup_<i>.png (example faces, per model) and
    fig15_makeup_<i>.npz (files and the three phi(man) per face).

    Args:
      model_names: built-in names or model files/dirs, each with a 'man'/'male' class.
      images: faces whose true gender ``label_from`` gives.
      out_dir: output folder.
      max_images: the first N images (0 = all).
      label_from: the true gender (`cms_jax.sources` syntax).
      examples: faces in each example figure (half men, half women where there are).
      workers, align_cache: alignment worker processes and landmark cache.
      batch: crops per forward pass.

    Raises:
      ValueError: a model without a gender class, or no face with a label.
    """
    import os

    from cms_jax.figures import common, per_image
    from cms_jax.pipeline import RunConfig
    from cms_jax.data.image_list import expand_images
    from cms_jax.scoring.labels import LabelRule

    os.makedirs(out_dir, exist_ok=True)
    files = expand_images(images, max_images)
    result = {"images": images, "label_from": label_from, "files": len(files), "models": {},
              "shadow_height": SHADOW_HEIGHT, "shadow_alpha": SHADOW_ALPHA, "liner_alpha": LINER_ALPHA,
              "cheek_shift_iod": {"down": CHEEK_DOWN, "out": CHEEK_OUT}}
    for i, name in enumerate(model_names):
        fm = per_image.FaceMaps(RunConfig(model=name, score="prob"))
        if fm.model.output != "classes":
            raise ValueError(f"makeup: model {name!r} has {fm.model.output} outputs; it needs gender classes")
        man, rule = _man_index(label_from, fm.model), LabelRule(label_from, fm.model)
        faces, skipped = fm.prepare(files, workers, align_cache)
        kept, is_man = [], []
        for f in faces:
            label, why = rule(f.path)
            if why is None:
                kept.append(f)
                is_man.append(label == man)
            else:
                skipped.append({"file": f.path, "reason": why})
        if not kept:
            raise ValueError(f"makeup: no face of {images!r} was aligned and labelled by {label_from} "
                             f"({len(skipped)} skipped, e.g. {skipped[:2]})")
        hw = kept[0].crop.shape[:2]
        eyes_m, cheek_m = zip(*(makeup_masks(f.xy, hw) for f in kept))
        versions = {"clean": [f.crop for f in kept], "eyes": [paint(f.crop, m) for f, m in zip(kept, eyes_m)],
                    "cheeks": [paint(f.crop, m) for f, m in zip(kept, cheek_m)]}
        p = {k: np.concatenate([fm.confidences(np.stack(v[j:j + batch]))[:, man] for j in range(0, len(v), batch)])
             for k, v in versions.items()}
        is_man = np.asarray(is_man)
        stats = evaluate(p["clean"], p["eyes"], p["cheeks"], is_man)
        stats.update(model=fm.model.name, faces=len(kept), skipped=len(skipped),
                     skipped_examples=skipped[:5],
                     mask_mass={"eyes": float(np.mean([m.sum() for m in eyes_m])),
                                "cheeks": float(np.mean([m.sum() for m in cheek_m]))})
        result["models"][name] = stats
        np.savez_compressed(os.path.join(out_dir, f"fig15_makeup_{i}.npz"), files=np.asarray([f.path for f in kept]),
                            is_man=is_man, **{f"p_man_{k}": v for k, v in p.items()})
        pick = ([j for j in range(len(kept)) if is_man[j]][:(examples + 1) // 2]
                + [j for j in range(len(kept)) if not is_man[j]][:examples // 2])
        tiles, titles = [], []
        for j in pick:
            for k in ("clean", "eyes", "cheeks"):
                tiles.append(versions[k][j])
                titles.append(f"{'man' if is_man[j] else 'woman'}, {k}\nphi(man) {p[k][j]:.2f}")
        if tiles:
            common.panels(tiles, titles, os.path.join(out_dir, f"fig15_makeup_{i}.png"), cols=6,
                          suptitle=f"{fm.model.name}: digital eye make-up and the cheek control")
    with open(os.path.join(out_dir, "fig15_makeup.md"), "w") as f:
        f.write(markdown(result))
    return common.write_json(os.path.join(out_dir, "fig15_makeup.json"), result)


def _ci(c: dict) -> str:
    return f"{c['mean']:+.3f} [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]"


def markdown(result: dict) -> str:
    """The table of a `run` result: one row per model and true gender."""
    lines = ["| model | true gender | faces | phi(man) clean | eyes | cheeks | eyes − clean [95% CI] | "
             "cheeks − clean | eyes − cheeks | share fell (eyes) | 'man' → 'woman' (eyes / cheeks) |",
             "|---|---|---:|---:|---:|---:|---|---|---|---:|---|"]
    for name, m in result["models"].items():
        for g in ("man", "woman"):
            r = m[g]
            if not r["faces"]:
                continue
            pm = r["p_man"]
            lines.append(f"| {m['model']} | {g} | {r['faces']} | {pm['clean']:.3f} | {pm['eyes']:.3f} | "
                         f"{pm['cheeks']:.3f} | {_ci(r['eyes_minus_clean'])} | {_ci(r['cheeks_minus_clean'])} | "
                         f"{_ci(r['eyes_minus_cheeks'])} | {r['eyes_minus_clean']['share_fell']:.2f} | "
                         f"{r['flipped_to_woman']['eyes']} / {r['flipped_to_woman']['cheeks']} of "
                         f"{r['predicted_man']} |")
    return "\n".join(lines) + "\n"
