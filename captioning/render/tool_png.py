"""The mark on every PNG the tool draws for ``caption`` and the menu, so a later run can tell its own
earlier output (which it may replace, and does not caption again) from a user's file (which it
never writes over).

The mark is a PNG text chunk (``tEXt``) written with the image, before its pixel data, so reading
it costs one header read, never a decode. A file is the tool's only if it is a regular file, a PNG,
and carries the mark; anything unreadable counts as the user's.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from captioning.errors import InputFileError
from captioning.storage.regular_files import open_regular_file

# The tEXt keyword; its value says which drawing it is.
MARK_KEY = "Image-Captioning-Output"
CAPTIONED, ATTENTION_MAP = "captioned image", "attention map"


def png_metadata(kind: str) -> dict[str, str]:
    """``figure.savefig(..., metadata=...)`` for a PNG of the given kind (``CAPTIONED``, ...)."""
    return {MARK_KEY: kind}


def is_tool_png(path: str | Path) -> bool:
    """Whether ``path`` is a PNG this tool drew (a regular file carrying ``MARK_KEY``)."""
    try:
        with open_regular_file(path) as handle, Image.open(handle, formats=["PNG"]) as image:
            return MARK_KEY in image.info  # text chunks before the pixel data are read by open
    except (InputFileError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return False


__all__ = ["ATTENTION_MAP", "CAPTIONED", "MARK_KEY", "is_tool_png", "png_metadata"]
