"""The single image loader: every bad-file kind is a one-line ImageError, every mode becomes RGB."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from captioning.data import images
from captioning.errors import ImageError

SIZE = 224


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _assert_rejected(path: Path, *words: str) -> str:
    with pytest.raises(ImageError) as info:
        images.load_image(path, SIZE)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    for word in words:
        assert word in message.lower()
    return message


# --- bad files -------------------------------------------------------------------------------

def test_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is a text file, not a JPEG\n")
    _assert_rejected(path, "not an image")


def test_truncated_jpeg_is_detected(tmp_path):
    full = tmp_path / "full.jpg"
    _noise(640, 480).save(full, quality=90)
    data = full.read_bytes()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    assert not ImageFile.LOAD_TRUNCATED_IMAGES  # the loader must not rely on lenient decoding
    _assert_rejected(path, "truncated")


def test_zero_bytes(tmp_path):
    path = tmp_path / "empty.png"
    path.touch()
    _assert_rejected(path, "empty")


def test_directory(tmp_path):
    path = tmp_path / "folder.jpg"
    path.mkdir()
    _assert_rejected(path, "folder")


def test_missing_file(tmp_path):
    _assert_rejected(tmp_path / "nope.jpg", "not found")


def test_unreadable_file(tmp_path):
    path = tmp_path / "secret.png"
    _noise(32, 32).save(path)
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root: chmod 000 does not make the file unreadable")
        _assert_rejected(path, "permission")
    finally:
        path.chmod(0o644)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height RGB pixels, with almost no data behind it."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
            + chunk(b"IEND", b""))


def test_png_claiming_huge_size_is_a_bomb(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(30_000, 30_000))  # 900 MP claimed, 100 bytes on disk
    _assert_rejected(path, "too large")


@pytest.mark.parametrize("pixels", [99 * 99, 50 * 50])  # just over the limit: ours and Pillow's
def test_solid_image_over_lowered_limit_is_a_bomb(tmp_path, monkeypatch, pixels):
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", pixels)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after
    path = tmp_path / "solid.png"
    Image.new("RGB", (100, 100), (10, 20, 30)).save(path)
    _assert_rejected(path, "too large")


def test_image_under_the_limit_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 100 * 100)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    path = tmp_path / "solid.png"
    Image.new("RGB", (100, 100), (10, 20, 30)).save(path)
    assert images.load_image(path, SIZE)[0, 0].tolist() == [10, 20, 30]


# --- conversions -----------------------------------------------------------------------------

def _load(tmp_path: Path, image: Image.Image, name: str, **save_args) -> np.ndarray:
    path = tmp_path / name
    image.save(path, **save_args)
    array = images.load_image(path, SIZE)
    assert array.shape == (SIZE, SIZE, 3) and array.dtype == np.uint8
    return array


def test_rgb_png_round_trips_exactly(tmp_path):
    array = _load(tmp_path, Image.new("RGB", (300, 200), (12, 34, 56)), "rgb.png")
    assert (array == [12, 34, 56]).all()


def test_grayscale(tmp_path):
    array = _load(tmp_path, Image.new("L", (120, 80), 100), "gray.png")
    assert (array == 100).all()


def test_rgba_is_composited_on_white(tmp_path):
    image = Image.new("RGBA", (64, 64), (255, 0, 0, 0))  # fully transparent red
    image.paste((0, 0, 255, 255), (0, 0, 64, 32))  # opaque blue top half
    array = _load(tmp_path, image, "rgba.png")
    assert (array[:100] == [0, 0, 255]).all()
    assert (array[-100:] == 255).all()


def test_cmyk(tmp_path):
    array = _load(tmp_path, Image.new("CMYK", (90, 60), (0, 255, 255, 0)), "cmyk.jpg", quality=95)
    assert np.abs(array.astype(int) - [255, 0, 0]).max() < 12  # pure red within JPEG error


def test_palette_with_transparency(tmp_path):
    image = Image.new("P", (40, 40), 0)
    image.putpalette([0, 200, 0] + [50, 50, 50] * 255)
    image.paste(1, (0, 20, 40, 40))  # bottom half uses the transparent index
    array = _load(tmp_path, image, "palette.gif", transparency=1)
    assert (array[:100] == [0, 200, 0]).all()
    assert (array[-100:] == 255).all()


def test_palette_without_transparency(tmp_path):
    image = Image.new("P", (40, 40), 3)
    image.putpalette([0, 0, 0] * 3 + [10, 20, 30] + [0, 0, 0] * 252)
    assert (_load(tmp_path, image, "palette.png") == [10, 20, 30]).all()


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    image = Image.fromarray(np.full((50, 70), 128 * 257, dtype=np.uint16))  # mid-gray in 16 bits
    assert image.mode.startswith("I")
    assert (_load(tmp_path, image, "deep.png") == 128).all()


def test_32_bit_integer_tiff(tmp_path):
    image = Image.fromarray(np.full((30, 30), 64 * 257, dtype=np.int32))
    assert image.mode == "I"
    assert (_load(tmp_path, image, "deep.tif") == 64).all()


@pytest.mark.parametrize("orientation, top, bottom", [
    (6, "red", "blue"),    # stored sideways, display = rotate 90 degrees clockwise
    (8, "blue", "red"),    # display = rotate 90 degrees counter-clockwise
])
def test_exif_orientation_is_applied(tmp_path, orientation, top, bottom):
    colours = {"red": [255, 0, 0], "blue": [0, 0, 255]}
    image = Image.new("RGB", (300, 100), tuple(colours["blue"]))
    image.paste(tuple(colours["red"]), (0, 0, 150, 100))  # left half red, right half blue
    exif = image.getexif()
    exif[0x0112] = orientation
    array = _load(tmp_path, image, "rotated.jpg", exif=exif, quality=95)
    # After rotation the wide image is tall: its left/right halves become top/bottom.
    assert np.abs(array[:90].astype(int) - colours[top]).max() < 30
    assert np.abs(array[-90:].astype(int) - colours[bottom]).max() < 30


def test_exif_transpose_swaps_dimensions_before_the_squash(tmp_path):
    """A 4:1 image rotated to 1:4 keeps thin horizontal stripes horizontal after loading."""
    stripes = np.zeros((100, 400, 3), dtype=np.uint8)
    stripes[:, ::40] = 255  # vertical lines in the stored (sideways) image
    image = Image.fromarray(stripes)
    exif = image.getexif()
    exif[0x0112] = 6
    array = _load(tmp_path, image, "stripes.png", exif=exif).astype(int)
    # Displayed upright, the lines run horizontally: rows vary, columns are constant.
    assert array.std(axis=1).mean() < 1 and array.std(axis=0).mean() > 20


def test_large_jpeg_fast_decode_matches_full_decode(tmp_path):
    """draft() decoding at a reduced scale gives (almost) the pixels of a full decode + resize."""
    y, x = np.mgrid[0:1500, 0:2000]
    gradient = np.stack([x * 255 // 2000, y * 255 // 1500, (x + y) * 255 // 3500], axis=-1)
    path = tmp_path / "big.jpg"
    Image.fromarray(gradient.astype(np.uint8)).save(path, quality=95)
    fast = images.load_image(path, SIZE).astype(int)
    with Image.open(path) as image:
        full = np.array(image.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR)).astype(int)
    assert np.abs(fast - full).mean() < 2


def test_other_sizes(tmp_path):
    path = tmp_path / "x.png"
    _noise(50, 30).save(path)
    assert images.load_image(path, 17).shape == (17, 17, 3)


# --- finding images --------------------------------------------------------------------------

def test_find_images_recursive_sorted_case_insensitive(tmp_path):
    for name in ["b/z.JPG", "a.png", "b/c/d.jpeg", "notes.txt", "b/._hidden.jpg", ".cache/e.png",
                 "b/y.WebP"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = images.find_images(tmp_path)
    assert found == [tmp_path / "a.png", tmp_path / "b/c/d.jpeg", tmp_path / "b/y.WebP",
                     tmp_path / "b/z.JPG"]


def test_find_images_single_file_and_missing(tmp_path):
    path = tmp_path / "one.gif"
    path.write_bytes(b"x")
    assert images.find_images(path) == [path]
    (tmp_path / "empty").mkdir()
    assert images.find_images(tmp_path / "empty") == []
    with pytest.raises(ImageError, match="no such file or folder"):
        images.find_images(tmp_path / "missing")


def test_is_image_file():
    assert images.is_image_file("A.TIFF") and images.is_image_file(Path("x/y.bmp"))
    assert not images.is_image_file("captions.txt") and not images.is_image_file("jpg")


def test_permission_error_while_opening_is_reported(tmp_path, monkeypatch):
    """The unreadable-file path without needing a non-root user: Pillow's open is denied."""
    path = tmp_path / "locked.png"
    _noise(8, 8).save(path)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(images.Image, "open", denied)
    _assert_rejected(path, "permission")


def test_parallel_loading_is_consistent_and_leaves_warning_filters_alone(tmp_path, monkeypatch):
    """tf.data calls the loader from several threads at once; bombs must still be refused."""
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 60 * 60)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    paths = []
    for index in range(24):
        path = tmp_path / f"{index}.png"
        side = 70 if index % 3 == 0 else 40  # every third is over the limit (Pillow: a warning)
        Image.new("RGB", (side, side), (index, 0, 0)).save(path)
        paths.append(path)
    filters_before = list(warnings.filters)

    def outcome(path):
        try:
            return int(images.load_image(path, 32)[0, 0, 0])
        except ImageError as error:
            return "too large" in str(error)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(outcome, paths))
    assert results == [True if i % 3 == 0 else i for i in range(24)]
    assert list(warnings.filters) == filters_before
