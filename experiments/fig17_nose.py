"""Fig. 17: close-ups of the nose tip per head-pose bin (3 x 3 yaw x pitch bins), and the check
that the nose tip's place in the face tells the bin (Sec. 5.3).

  CMS_JAX_ASSETS=../shared python -m experiments.fig17_nose --images=../shared/faces/utkface_22k \
      --max_images=300 --sample_by_hash --k=4 --out_dir=out/fig17 --align_cache=out/align_cache

Writes fig17.png (a cell of K close-ups per bin: rows pitch, columns yaw, as
`cms_jax.train.labels.pose_bin`), fig17_offsets.png (nose-tip offsets by bin, with the
nearest-centroid classifier's centroids), fig17.json (per bin: count, mean yaw / pitch / roll,
mean nose-tip offset; the classifier's held-out accuracy against the majority rate) and
fig17_faces.npz. Pose from the head-pose model (FSA-Net, `--model=headpose`). --smoke runs in
seconds on 4 CelebA and 4 UTKFace samples.
"""
import os

from absl import app, flags

from cms_jax.figures import common, nose_closeups

_IMAGES = flags.DEFINE_string("images", "", "Folder, glob, .txt list or comma-separated images.")
_MAX_IMAGES = flags.DEFINE_integer("max_images", 300, "Use N images (0 = all).")
_SAMPLE = flags.DEFINE_bool("sample_by_hash", False, "Take the N images in file-name-hash order "
                            "(a stable random sample) instead of the first N of the sorted list.")
_K = flags.DEFINE_integer("k", 4, "Close-ups per bin.")
_MODEL = flags.DEFINE_string("model", "headpose", "Head-pose model (outputs yaw, pitch in degrees).")
_SCALE = flags.DEFINE_float("scale", 0.4, "Close-up side as a fraction of the face box's longer side.")
_TEST = flags.DEFINE_float("test_fraction", 0.3, "Faces held out (by file-name hash) to test the classifier.")
_OUT_DIR = flags.DEFINE_string("out_dir", "out/fig17", "Output folder.")
_WORKERS = flags.DEFINE_integer("workers", 2, "Host worker processes (decode + MediaPipe).")
_ALIGN_CACHE = flags.DEFINE_string("align_cache", "", "Landmark cache folder (default OUT_DIR/align_cache).")
_SMOKE = flags.DEFINE_bool("smoke", False, "Seconds-long run: 4 CelebA and 4 UTKFace samples, k = 1.")


def _smoke_images() -> str:
    from cms_jax.assets import resolve_dir

    utk = resolve_dir("utkface")
    return ",".join([common.smoke_images(4)] + [str(utk / n) for n in sorted(os.listdir(utk))[:4]])


def main(argv):
    del argv
    if _SMOKE.value:
        r = nose_closeups.figure(_smoke_images(), _OUT_DIR.value, k=1, workers=0)
    else:
        r = nose_closeups.figure(_IMAGES.value, _OUT_DIR.value, max_images=_MAX_IMAGES.value,
                                 sample_by_hash=_SAMPLE.value, k=_K.value, model=_MODEL.value,
                                 workers=_WORKERS.value, align_cache=_ALIGN_CACHE.value or None,
                                 test_fraction=_TEST.value, scale=_SCALE.value)
    for b in r["bins"]:
        off = b["mean_offset"]
        print(f"bin {b['bin']} {b['name']}: {b['count']} faces"
              + (f", mean yaw {b['mean_yaw']:+.1f}, pitch {b['mean_pitch']:+.1f}, "
                 f"nose offset ({off[0]:+.2f}, {off[1]:+.2f})" if b["count"] else ""))
    c, cor = r["nearest_centroid"], r["correlation"]
    print(f"nearest centroid on {c['n_test']} held-out faces: accuracy {c['accuracy']}, majority rate "
          f"{c['majority_rate']}, yaw bin alone {c.get('accuracy_yaw_bin')}, pitch bin alone "
          f"{c.get('accuracy_pitch_bin')}; Pearson offset x vs yaw {cor['offset_x_vs_yaw']:+.2f}, "
          f"offset y vs pitch {cor['offset_y_vs_pitch']:+.2f}")
    u = r["uncertainty"]
    if "accuracy" in u:
        print(f"95% CIs: x vs yaw {u['offset_x_vs_yaw']['ci']}, y vs pitch {u['offset_y_vs_pitch']['ci']}, "
              f"accuracy {u['accuracy']['ci']} (n = {u['n_test']}); against the majority bin: "
              f"{u['vs_majority']['diff']:+.3f} {u['vs_majority']['ci']}, McNemar p = {u['vs_majority']['p']:.2g}")
    print(f"-> {_OUT_DIR.value}/fig17.png")


if __name__ == "__main__":
    app.run(main)
