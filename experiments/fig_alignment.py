"""Figure: the canonical face F with its mesh M_F, and one aligned face with M_I.

  CMS_JAX_ASSETS=../shared python experiments/fig_alignment.py --out_dir=out/fig_alignment

Panels: (a) MediaPipe's canonical face (shaded rendering, 256 px canvas) with
its 898 triangles; (b) the same canvas with the mean of the aligned CelebA
samples warped triangle by triangle; (c) a CelebA sample with its 468
landmarks (subject's left eye outer corner, landmark 263, in red: it lies on
the image's right, as on the canonical face); (d) the loose 64x64 crop a
model sees, with the landmarks carried into it. Writes fig_alignment.png.
--smoke uses 4 images and a 128 px canvas.
"""
import glob
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from absl import app, flags  # noqa: E402

from cms_jax.align import (LEFT_EYE_OUTER, CanonicalFace, align_files, crop_face,  # noqa: E402
                           load_image)

_OUT_DIR = flags.DEFINE_string("out_dir", None, "Folder for fig_alignment.png.")
_IMAGES = flags.DEFINE_string("images", "", "Image folder (default: the CelebA samples).")
_CANVAS = flags.DEFINE_integer("canvas", 256, "Canonical canvas side in pixels.")
_SMOKE = flags.DEFINE_bool("smoke", False, "4 images, 128 px canvas.")
flags.mark_flag_as_required("out_dir")


def _mesh(ax, xy, tri, image, title):
    ax.imshow(image)
    ax.triplot(xy[:, 0] - 0.5, xy[:, 1] - 0.5, tri, lw=0.25, color="k", alpha=0.6)
    ax.plot(*(xy[LEFT_EYE_OUTER] - 0.5), "o", color="r", ms=4)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def main(argv):
    del argv
    folder = _IMAGES.value
    if not folder:
        from cms_jax.assets import sample_images
        folder = str(sample_images(verify=False))
    paths = sorted(glob.glob(os.path.join(folder, "*.jpg")))[: 4 if _SMOKE.value else None]
    canvas = 128 if _SMOKE.value else _CANVAS.value
    canon = CanonicalFace.mediapipe(canvas=canvas)
    res = [r for r in align_files(paths, workers=0 if _SMOKE.value else 2) if r.ok]
    if not res:
        raise SystemExit(f"no face aligned in {folder}")
    mean = canon.with_mean_face((load_image(r.path) for r in res), (r.face.xy for r in res))
    sample = res[0]
    rgb = load_image(sample.path)
    crop, xy_c = crop_face(rgb, sample.face.xy, "loose", 0.8, (64, 64))
    c = canon.vertices

    fig, axes = plt.subplots(1, 4, figsize=(12, 3.4), dpi=150)
    _mesh(axes[0], c, canon.triangles, canon.image,
          f"(a) canonical face: {len(c)} vertices, {len(canon.triangles)} triangles")
    _mesh(axes[1], c, canon.triangles, mean.image, f"(b) mean of {len(res)} aligned faces")
    _mesh(axes[2], sample.face.xy, canon.triangles, rgb, f"(c) {os.path.basename(sample.path)}: M_I")
    _mesh(axes[3], xy_c, canon.triangles, crop, "(d) loose 64x64 crop (margin 0.8)")
    fig.tight_layout()
    os.makedirs(_OUT_DIR.value, exist_ok=True)
    out = os.path.join(_OUT_DIR.value, "fig_alignment.png")
    fig.savefig(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    app.run(main)
