"""The one loader of photos for display: upright, RGB, fitted into a box.

The model's loader (``data.images.load_image``) squashes every photo to the encoder's square; what
is drawn for a person keeps the photo's shape. Every picture the tool draws (the captioned PNG, the
attention map, the evaluation's sample grid) reads its photo here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from captioning.errors import ImageError, InputFileError
from captioning.storage.regular_files import open_regular_file


def load_photo(path: str | Path, max_side: int, min_width: int | None = None) -> np.ndarray:
    """A photo as it is shown: EXIF orientation applied, RGB, fitted into ``max_side`` (aspect kept).

    Args:
        path: an image file (a FIFO or a device is refused, never read).
        max_side: the longest side, in pixels; larger photos are scaled down.
        min_width: narrower photos are scaled up to this width (height capped at ``max_side``).

    Returns:
        ``(height, width, 3)`` uint8.

    Raises:
        ImageError: the file cannot be read as an image (one line naming it).
    """
    try:
        with open_regular_file(path) as handle, Image.open(handle) as opened:
            opened.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced size, cheaply
            photo = ImageOps.exif_transpose(opened).convert("RGB")
            photo.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            if min_width is not None and photo.width < min_width:
                height = max(1, round(photo.height * min_width / photo.width))
                photo = photo.resize((min_width, min(height, max_side)), Image.Resampling.LANCZOS)
            return np.asarray(photo, dtype=np.uint8)
    except InputFileError as error:
        raise ImageError(f"cannot read image {path}: {error.reason}") from None
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        # UnidentifiedImageError is an OSError: "cannot identify image file ..."
        raise ImageError(f"cannot read image {path}: {error}") from None


__all__ = ["load_photo"]
