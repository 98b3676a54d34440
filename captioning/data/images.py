"""The one image loader: any file Pillow reads -> a square RGB uint8 array.

Feature extraction for training and captioning at inference both call :func:`load_image`, so an
image is decoded, rotated, converted and resized the same way everywhere (a train/inference
preprocessing mismatch is the classic cause of "the same caption for every image").
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from captioning import config
from captioning.errors import ImageError, InputFileError
from captioning.storage.regular_files import not_regular, open_regular_file

# Pillow's own default (~89 MP) warns and only refuses at twice that; a photo above 100 MP is far
# beyond anything a captioning model needs and is treated as a decompression bomb. Read at call
# time so tests can lower it.
MAX_IMAGE_PIXELS = 100_000_000

# Resize first by an integer factor while the image is at least this many times the target, then
# resample; Pillow documents 3.0 as indistinguishable from a direct resize, and it is much faster.
REDUCING_GAP = 3.0

_WHITE = (255, 255, 255)
_OPEN_LOCK = threading.Lock()


def is_image_file(path: str | Path) -> bool:
    """Whether a file name has one of the image extensions (case-insensitive); content not read.

    Args:
        path: a file path.

    Returns:
        True when the suffix is in ``config.IMAGE_EXTENSIONS``.
    """
    return Path(path).suffix.lower() in config.IMAGE_EXTENSIONS


def find_images(path: str | Path) -> list[Path]:
    """The images to process for a path given by the user.

    A file is returned as is (whatever its extension, so a bad file is reported by
    :func:`load_image` rather than silently skipped). A folder is searched recursively for image
    extensions; hidden entries (``.DS_Store``, macOS ``._name.jpg`` forks, ``.ipynb_checkpoints``)
    are skipped and symlinked folders are not followed (no loops).

    Args:
        path: an image file or a folder.

    Returns:
        Sorted list of image paths (empty for a folder without images).

    Raises:
        ImageError: the path does not exist, or is neither a regular file nor a folder (a FIFO,
            a device). Such entries inside a folder are kept, and refused by :func:`load_image`.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        try:
            mode = os.stat(path).st_mode
        except (OSError, ValueError):
            raise ImageError(f"{path}: no such file or folder; give an image file or a folder of images") from None
        # A FIFO or a device (/dev/zero) would block or never end: named for what it is.
        raise ImageError(f"{path}: {not_regular(mode)}; give an image file or a folder of images")
    found: list[Path] = []
    for folder, subfolders, files in os.walk(path):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        found.extend(Path(folder) / name for name in files
                     if not name.startswith(".") and is_image_file(name))
    return sorted(found)


def load_image(path: str | Path, size: int) -> np.ndarray:
    """Decode an image file into a square RGB array, the same way for training and inference.

    EXIF orientation is applied; grayscale, palette, CMYK and 16-bit images become RGB; images with
    transparency are composited on white; the result is squashed (aspect ratio not kept) to
    ``size x size`` with bilinear resampling.

    Args:
        path: the image file.
        size: output height and width in pixels.

    Returns:
        ``(size, size, 3)`` uint8 RGB array.

    Raises:
        ImageError: one line naming the file and why it cannot be used (missing, a folder,
            unreadable, empty, not an image, truncated, or too large).
    """
    path = Path(path)
    _check_file(path)
    try:
        with open_regular_file(path) as handle, _open(handle) as image:
            _check_pixels(path, image.size)
            # JPEG only: decode at the smallest 1/2^k scale still >= size (much faster).
            image.draft("RGB", (size, size))
            image.load()  # decode now, inside the try, so truncated files are caught here
            # In place: the default returns a full copy even when there is nothing to rotate.
            ImageOps.exif_transpose(image, in_place=True)
            return resize_for_model(_to_rgb(image), size)
    except InputFileError as error:  # replaced by a FIFO, say, since _check_file
        raise ImageError(f"{path}: {error.reason}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{path}: image is too large (over {MAX_IMAGE_PIXELS:,} pixels, "
                         "possible decompression bomb); resize it first") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied; make the file readable") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file Pillow can read") from None
    except (OSError, SyntaxError, ValueError, EOFError, TypeError) as error:
        # Pillow raises OSError for truncated data ("image file is truncated"), SyntaxError or
        # ValueError for some malformed headers.
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ImageError(f"{path}: cannot decode image ({reason}); the file is damaged or "
                         "not a supported image") from None


def resize_for_model(image: Image.Image, size: int) -> np.ndarray:
    """An RGB image squashed (aspect ratio not kept) to ``size x size``, bilinear: what the model sees.

    Args:
        image: an RGB Pillow image.
        size: output height and width in pixels.

    Returns:
        ``(size, size, 3)`` uint8.
    """
    resized = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=REDUCING_GAP)
    return np.array(resized, dtype=np.uint8)  # (size, size, 3)


def _open(handle) -> Image.Image:
    """``Image.open`` (headers only) with Pillow's bomb check on our limit, its warning an error.

    ``warnings.catch_warnings`` swaps the process-wide filter list, so concurrent callers (tf.data
    decodes on parallel threads) could restore each other's lists; the lock serialises only this
    cheap header parse, never the decoding.
    """
    with _OPEN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
        return Image.open(handle)


def _check_file(path: Path) -> None:
    """Reject a missing path, a folder or an empty file with a clear reason before Pillow does."""
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, not an image file")
    if not path.exists():
        raise ImageError(f"{path}: file not found")
    if not path.is_file():  # reading a FIFO or a device would block or never end
        raise ImageError(f"{path}: {not_regular(path.stat().st_mode)}; give an image file")
    if not os.access(path, os.R_OK):
        raise ImageError(f"{path}: permission denied; make the file readable")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: file is empty (0 bytes)")


def _check_pixels(path: Path, image_size: tuple[int, int]) -> None:
    """Refuse images whose header claims more pixels than the limit, before decoding anything."""
    width, height = image_size
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageError(f"{path}: image is too large ({width}x{height} pixels, over "
                         f"{MAX_IMAGE_PIXELS:,}; possible decompression bomb); resize it first")


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB; transparency is composited on white."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        return _high_depth_to_rgb(image)
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV, RGBX


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit ("I;16*") and 32-bit integer ("I") images hold 0..65535: scale, don't clip, to 8 bits.

    Pillow's own ``convert("L")`` clips such values at 255, turning most 16-bit photos white.
    Float ("F") images are clipped to 0..255 as Pillow does.
    """
    values = np.asarray(image)  # (H, W), uint16 / int32 / float32
    if image.mode == "F":
        gray = np.clip(values, 0, 255)
    else:
        gray = np.clip(values.astype(np.float64) / 257.0, 0, 255)
    gray = np.round(gray).astype(np.uint8)
    return Image.fromarray(np.stack([gray] * 3, axis=-1))  # (H, W, 3) uint8 -> RGB
