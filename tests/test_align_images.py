"""Bad and unusual inputs for alignment: every kind gets a result or a reason.

Each bad file is made in tmp_path from a real CelebA sample; the reasons are
the fixed strings of cms_jax.align.images. One align_files call over all of
them (in-process) checks that no input stops the batch.
"""
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from cms_jax.align import images
from cms_jax.align.batch import NO_FACE, align_files

_SAMPLE = "faces/celeba_samples/images/000686.jpg"


@pytest.fixture(scope="module")
def face_rgb(shared_dir):
    return np.asarray(Image.open(os.path.join(shared_dir, _SAMPLE)).convert("RGB"))


def _reason(fn, *args):
    with pytest.raises(images.ImageError) as e:
        fn(*args)
    return e.value


def test_unreadable_missing_and_folder(tmp_path):
    e = _reason(images.load_image, tmp_path / "missing.jpg")
    assert e.reason == "unreadable" and "missing.jpg" in str(e) and "No such file" in str(e)
    assert _reason(images.load_image, tmp_path).reason == "unreadable"


def test_not_an_image(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is text, not a JPEG\n" * 20)
    assert _reason(images.load_image, p).reason == "not an image"
    (tmp_path / "empty.png").write_bytes(b"")
    assert _reason(images.load_image, tmp_path / "empty.png").reason == "not an image"


def test_truncated(tmp_path, shared_dir):
    data = open(os.path.join(shared_dir, _SAMPLE), "rb").read()
    for cut in (len(data) // 2, 200):
        p = tmp_path / f"cut{cut}.jpg"
        p.write_bytes(data[:cut])
        assert _reason(images.load_image, p).reason == "truncated", cut


def test_too_small_and_too_large(tmp_path):
    Image.new("RGB", (31, 200), "gray").save(tmp_path / "tiny.png")
    e = _reason(images.load_image, tmp_path / "tiny.png")
    assert e.reason == "too small" and "31x200" in str(e)
    Image.new("RGB", (images.MAX_SIDE + 1, 40), "gray").save(tmp_path / "huge.png")
    e = _reason(images.load_image, tmp_path / "huge.png")
    assert e.reason == "too large" and "8001x40" in str(e)
    Image.new("RGB", (32, 32), "gray").save(tmp_path / "ok.png")  # the limit itself is fine
    assert images.load_image(tmp_path / "ok.png").shape == (32, 32, 3)


def test_grayscale_becomes_rgb(tmp_path, face_rgb):
    Image.fromarray(face_rgb).convert("L").save(tmp_path / "g.png")
    rgb, notes = images.load_image_bytes((tmp_path / "g.png").read_bytes())
    assert rgb.dtype == np.uint8 and rgb.shape == face_rgb.shape
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    assert notes == ("grayscale converted to RGB",)


def test_rgba_composited_on_white(tmp_path, face_rgb):
    alpha = np.full(face_rgb.shape[:2], 255, np.uint8)
    alpha[:, :40] = 0
    Image.fromarray(np.dstack([face_rgb, alpha]), "RGBA").save(tmp_path / "a.png")
    rgb, notes = images.load_image_bytes((tmp_path / "a.png").read_bytes())
    assert "alpha composited on white" in notes
    assert (rgb[:, :40] == 255).all()
    np.testing.assert_array_equal(rgb[:, 40:], face_rgb[:, 40:])


def test_gray_with_alpha_and_unsupported_format(tmp_path, face_rgb):
    gray = np.asarray(Image.fromarray(face_rgb).convert("L"))
    alpha = np.where(np.arange(gray.shape[1]) < 30, 0, 255).astype(np.uint8)[None].repeat(gray.shape[0], 0)
    Image.fromarray(np.dstack([gray, alpha]), "LA").save(tmp_path / "la.png")
    rgb, notes = images.load_image_bytes((tmp_path / "la.png").read_bytes())
    assert notes == ("grayscale converted to RGB", "alpha composited on white")
    assert (rgb[:, :30] == 255).all() and (rgb[:, 30:, 0] == gray[:, 30:]).all()
    Image.fromarray(np.zeros((40, 40), np.float32)).save(tmp_path / "float.tif")
    e = _reason(images.load_image, tmp_path / "float.tif")
    assert e.reason == "unsupported pixel format" and "'F'" in str(e)


def test_16bit_png(tmp_path, face_rgb):
    wide = face_rgb.astype(np.uint16) * 257  # full 16-bit range
    cv2.imwrite(str(tmp_path / "c16.png"), wide[..., ::-1])  # OpenCV writes BGR
    rgb, notes = images.load_image_bytes((tmp_path / "c16.png").read_bytes())
    assert "16-bit converted to 8-bit" in notes
    np.testing.assert_array_equal(rgb, face_rgb)
    gray = cv2.cvtColor(face_rgb, cv2.COLOR_RGB2GRAY)
    cv2.imwrite(str(tmp_path / "g16.png"), gray.astype(np.uint16) * 257)
    rgb, notes = images.load_image_bytes((tmp_path / "g16.png").read_bytes())
    assert notes == ("16-bit converted to 8-bit", "grayscale converted to RGB")
    np.testing.assert_array_equal(rgb[..., 1], gray)


def test_exif_rotation_applied(tmp_path, face_rgb):
    stored = Image.fromarray(face_rgb).transpose(Image.Transpose.ROTATE_270)
    exif = Image.Exif()
    exif[0x0112] = 8  # "rotate 90 degrees clockwise to display"
    stored.save(tmp_path / "rot.jpg", quality=98, exif=exif.tobytes())
    rgb, notes = images.load_image_bytes((tmp_path / "rot.jpg").read_bytes())
    assert notes == ("EXIF orientation 8 applied",)
    assert rgb.shape == face_rgb.shape  # 218 x 178, not 178 x 218
    assert np.abs(rgb.astype(int) - face_rgb).mean() < 3.0


def test_batch_gives_every_file_a_result(tmp_path, shared_dir, face_rgb):
    """One batch over good, converted and bad files: reasons and notes per file."""
    src = os.path.join(shared_dir, _SAMPLE)
    (tmp_path / "text.jpg").write_text("not an image")
    (tmp_path / "cut.jpg").write_bytes(open(src, "rb").read()[:3000])
    Image.new("RGB", (16, 16)).save(tmp_path / "tiny.png")
    Image.new("RGB", (9000, 33)).save(tmp_path / "huge.png")
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(tmp_path / "blank.png")
    Image.fromarray(face_rgb).convert("L").save(tmp_path / "gray.jpg")
    small = cv2.resize(face_rgb, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    two = np.full((face_rgb.shape[0], face_rgb.shape[1] + small.shape[1] + 20, 3), 128, np.uint8)
    two[:, :face_rgb.shape[1]] = face_rgb
    two[20:20 + small.shape[0], face_rgb.shape[1] + 20:] = small
    Image.fromarray(two).save(tmp_path / "two.png")
    names = ["missing.jpg", "text.jpg", "cut.jpg", "tiny.png", "huge.png", "blank.png",
             "gray.jpg", "two.png"]
    stats = {}
    res = align_files([tmp_path / n for n in names], workers=0, stats=stats)
    got = {n: r for n, r in zip(names, res)}
    assert [r.reason for r in res] == ["unreadable", "not an image", "truncated", "too small",
                                       "too large", NO_FACE, None, None]
    assert stats["detect_calls"] == 3  # only decodable images reach MediaPipe
    assert "grayscale converted to RGB" in got["gray.jpg"].notes
    face = got["two.png"].face
    assert face.num_faces == 2
    assert any(n.startswith("several faces (2)") for n in got["two.png"].notes)
    # The largest face (the full-size one on the left) was taken.
    assert face.box[2] <= face_rgb.shape[1] + 1 and face.xy.shape == (468, 2)
