"""Image decoding shared by extract, finetune and ask (encoders.image.decode_image): EXIF orientation,
16-bit grayscale, and the pixel cap that stops decompression bombs before anything is decoded."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import FAST
from fixtures_data import make_csv
from PIL import Image, PngImagePlugin

from vqa_cache.encoders.image import ImageFiles, decode_image, to_8bit_rgb


def halves(width: int, height: int) -> Image.Image:
    """Left half red, right half blue."""
    a = np.zeros((height, width, 3), np.uint8)
    a[:, : width // 2] = (255, 0, 0)
    a[:, width // 2 :] = (0, 0, 255)
    return Image.fromarray(a)


def test_exif_orientation_is_applied(tmp_path):
    im = halves(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display" (a phone held upright)
    im.save(tmp_path / "tagged.png", exif=exif)
    im.transpose(Image.Transpose.ROTATE_270).save(tmp_path / "upright.png")  # the same, already upright
    im.save(tmp_path / "plain.png")

    tagged = decode_image(str(tmp_path / "tagged.png"), 16)
    assert tagged.shape == (3, 16, 16) and tagged.dtype.is_floating_point is False
    assert np.array_equal(tagged.numpy(), decode_image(str(tmp_path / "upright.png"), 16).numpy())
    assert not np.array_equal(tagged.numpy(), decode_image(str(tmp_path / "plain.png"), 16).numpy())
    # upright: red on top, blue below
    assert tagged[0, 0, 8] == 255 and tagged[2, 0, 8] == 0 and tagged[2, 15, 8] == 255 and tagged[0, 15, 8] == 0
    # a cache made before orientation was applied (no "exif" in its spec) is reproduced by `ask` without it
    assert np.array_equal(
        decode_image(str(tmp_path / "tagged.png"), 16, exif=False).numpy(),
        decode_image(str(tmp_path / "plain.png"), 16).numpy(),
    )


@pytest.mark.parametrize("level", [0, 1000, 32896, 40000, 65535])
def test_16_bit_grayscale_png_is_scaled_not_clipped(tmp_path, level):
    path = tmp_path / "gray16.png"
    Image.fromarray(np.full((8, 8), level, np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I;16")  # really a 16-bit PNG
    expected = int(np.round(level * 255 / 65535))  # e.g. 40000 -> 156, not 255
    _, pixels, err = ImageFiles([str(path)], 4)[0]
    assert err is None and (pixels.numpy() == expected).all(), (pixels.unique(), expected)


def test_mode_i_from_a_png_is_16_bit():
    """Older Pillow opens 16-bit grayscale PNGs as mode I (32-bit integers)."""
    im = Image.fromarray(np.full((2, 2), 40000, np.int32), "I")
    assert (np.asarray(to_8bit_rgb(im, "PNG")) == 156).all()


def bomb(path, width=8000, height=6000):
    """A PNG of a few KB that decodes to width x height pixels."""
    Image.new("1", (width, height)).save(path)
    return path


def test_too_many_pixels_are_refused_from_the_header(tmp_path, monkeypatch):
    path = bomb(tmp_path / "bomb.png")  # 48 megapixels, over the 40 MP default
    assert path.stat().st_size < 20_000

    def decoded(self):
        raise AssertionError("the image was decoded")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", decoded)
    _, pixels, err = ImageFiles([str(path)], 32)[0]
    assert pixels is None
    assert err.startswith("DecompressionBombError: 8000x6000 = 48,000,000 pixels, over the limit of 40,000,000"), err
    assert "image.max_pixels" in err
    _, pixels, err = ImageFiles([str(path)], 32, max_pixels=1000)[0]
    assert pixels is None and "over the limit of 1,000" in err


def test_max_pixels_zero_is_pils_limit_and_a_larger_cap_lifts_it(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    small, mid, big = (Image.new("RGB", s) for s in ((30, 30), (40, 40), (60, 60)))
    for name, im in (("small", small), ("mid", mid), ("big", big)):
        im.save(tmp_path / f"{name}.png")
    files = ImageFiles([str(tmp_path / f"{n}.png") for n in ("small", "mid", "big")], 8, max_pixels=0)
    assert files[0][2] is None
    # 1,600 pixels: PIL only warns (its limit is 1,000); that is an unreadable image here, and so is 3,600
    assert files[1][1] is None and "exceeds limit of 1000 pixels" in files[1][2] and "image.max_pixels" in files[1][2]
    assert files[2][1] is None and "image.max_pixels" in files[2][2]
    assert ImageFiles([str(tmp_path / "big.png")], 8, max_pixels=5000)[0][2] is None


def test_a_bomb_in_a_dataset_is_bad_input_or_skipped(cli, tmp_path):
    d = tmp_path / "c"
    make_csv(d, train_images=6, test_images=0)
    target = d / "image" / "train" / "train_00002.jpg"
    bomb(target, 2000, 1000)  # PIL reads the PNG whatever its name
    cache = tmp_path / "cache"
    args = ["--cache-dir", cache, "extract", "--dataset", f"csv:{d}", *FAST, "--set", "image.max_pixels=1000000"]
    r = cli(*args)
    assert r.code == 2, r
    errors = [line for line in r.err.splitlines() if line.startswith("vqa-cache:")]  # (the rest: progress bars)
    assert len(errors) == 1 and str(target) in errors[0] and "2000x1000 = 2,000,000 pixels" in errors[0], r
    r = cli(*args, "--skip-bad")
    assert r.code == 0, r
    image = json.loads(next((cache / "image").glob("*/manifest.json")).read_text())
    assert image["complete"] and image["skipped"] == ["train/train_00002"]
    # under the default cap (40 MP) the same image is an ordinary one
    r = cli("--cache-dir", tmp_path / "cache2", "extract", "--dataset", f"csv:{d}", *FAST)
    assert r.code == 0, r
    assert json.loads(next((tmp_path / "cache2" / "image").glob("*/manifest.json")).read_text())["skipped"] == []


def test_negative_max_pixels_is_bad_input(cli, tmp_path):
    r = cli("--cache-dir", tmp_path, "extract", *FAST, "--set", "image.max_pixels=-1", "--dry-run")
    assert r.code == 2 and "'image.max_pixels' must be >= 0" in r.err, r
