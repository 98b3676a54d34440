"""The annotated PNG: the photo on top, its caption drawn legibly in a band beneath it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from captioning.errors import ImageError
from captioning.render import captioned_image


def make_photo(path, size=(300, 200), color=(30, 120, 200)):
    Image.new("RGB", size, color).save(path)
    return path


def caption_band(png_path, photo_height):
    """The pixels of the PNG below the photo, as grey levels."""
    with Image.open(png_path) as image:
        pixels = np.asarray(image.convert("L"), dtype=np.int32)
    return pixels[photo_height:]


def figure_texts(figure):
    return [text.get_text() for text in figure.texts]


def test_png_is_the_photo_with_the_caption_beneath_it(tmp_path):
    photo = make_photo(tmp_path / "photo.jpg", size=(640, 400))
    out = captioned_image.write_captioned_image(photo, "a dog runs on the grass", tmp_path / "out.png")
    assert out == tmp_path / "out.png"
    with Image.open(out) as image:
        image.load()
        assert image.format == "PNG"
        width, height = image.size
        top = np.asarray(image.convert("RGB"))[:400]
    assert width == 640 and height > 400  # photo at its own size plus the caption band
    # The top is the photo (blue), the band holds dark text on white.
    assert np.abs(top[200, 320].astype(int) - (30, 120, 200)).max() <= 8
    band = caption_band(out, 400)
    assert band.max() >= 250 and band.min() < 80
    assert (band < 128).sum() > 200  # clearly drawn glyphs, not a stray pixel


def test_figure_carries_the_caption_text():
    photo = np.zeros((200, 500, 3), dtype=np.uint8)
    figure = captioned_image.build_caption_figure(photo, "two cats sleep on a red sofa")
    assert figure_texts(figure) == ["two cats sleep on a red sofa"]


def test_long_captions_wrap_onto_several_lines_and_grow_the_band(tmp_path):
    photo = make_photo(tmp_path / "p.png", size=(480, 300))
    long_caption = " ".join(["a very long caption about a crowded street market"] * 6)
    figure = captioned_image.build_caption_figure(captioned_image.display_image(photo), long_caption)
    (text,) = figure_texts(figure)
    lines = text.split("\n")
    assert len(lines) >= 3
    assert " ".join(lines) == long_caption
    short = captioned_image.write_captioned_image(photo, "a street", tmp_path / "short.png")
    tall = captioned_image.write_captioned_image(photo, long_caption, tmp_path / "long.png")
    with Image.open(short) as a, Image.open(tall) as b:
        assert b.height > a.height > 300
        assert a.width == b.width == 480
    # Every wrapped line is rendered inside the image, not clipped off its sides.
    band = caption_band(tall, 300)
    assert (band[:, :4] < 128).sum() == 0 and (band[:, -4:] < 128).sum() == 0


def test_non_ascii_caption_and_paths(tmp_path):
    folder = tmp_path / "fotos für öffentlichkeit"
    folder.mkdir()
    photo = make_photo(folder / "café ☕.png")
    caption = "un café crème sur une table — кофе на столе"
    with _no_glyph_warnings():
        out = captioned_image.write_captioned_image(photo, caption, folder / "résultat.png")
    assert out.exists()
    figure = captioned_image.build_caption_figure(captioned_image.display_image(photo), caption)
    assert [text.replace("\n", " ") for text in figure_texts(figure)] == [caption]


class _no_glyph_warnings:
    """Fail if Matplotlib reports a missing glyph (the caption would show boxes)."""

    def __enter__(self):
        import warnings

        self._catcher = warnings.catch_warnings(record=True)
        self._records = self._catcher.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._catcher.__exit__(*exc)
        missing = [str(w.message) for w in self._records if "Glyph" in str(w.message)]
        assert not missing, missing
        return False


def test_small_photos_are_enlarged_so_the_caption_fits(tmp_path):
    photo = make_photo(tmp_path / "tiny.png", size=(40, 30))
    out = captioned_image.write_captioned_image(photo, "a tiny picture", tmp_path / "out.png")
    with Image.open(out) as image:
        assert image.width == captioned_image.MIN_WIDTH_PX
        assert image.height > 360  # 30 * 480 / 40 of photo, plus the band


def test_huge_photos_are_shrunk_for_display(tmp_path):
    photo = make_photo(tmp_path / "big.jpg", size=(3000, 1500))
    out = captioned_image.write_captioned_image(photo, "a panorama", tmp_path / "out.png")
    with Image.open(out) as image:
        assert image.width == captioned_image.MAX_SIDE_PX


def test_exif_rotation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    image = Image.new("RGB", (300, 200), (200, 50, 50))
    exif = image.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    image.save(path, exif=exif)
    assert captioned_image.display_image(path).shape[:2] == (captioned_image.MIN_WIDTH_PX * 300 // 200, 480)


def test_unreadable_image_and_unwritable_output(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ImageError, match="broken.jpg"):
        captioned_image.write_captioned_image(bad, "x", tmp_path / "out.png")
    photo = make_photo(tmp_path / "ok.png")
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    from captioning.errors import CaptioningError

    with pytest.raises(CaptioningError, match="cannot write"):
        captioned_image.write_captioned_image(photo, "x", blocker / "out.png")


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path):
    photo = make_photo(tmp_path / "ok.png")
    captioned_image.write_captioned_image(photo, "first", tmp_path / "out" / "a.png")
    captioned_image.write_captioned_image(photo, "second", tmp_path / "out" / "a.png")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png"]
