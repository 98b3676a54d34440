"""Errors the tool expects and reports to the user as one line, never as a traceback."""

from __future__ import annotations

from pathlib import Path


class CaptioningError(Exception):
    """A handled failure; ``str(error)`` is one line that says what went wrong and what to do."""


class DatasetError(CaptioningError):
    """The dataset source cannot be read or holds nothing usable."""


class ImageError(CaptioningError):
    """An image file cannot be opened or decoded."""


class EncoderError(CaptioningError):
    """An encoder or its weights cannot be built or loaded."""


class FeatureCacheError(CaptioningError):
    """The on-disk feature cache cannot be read or written."""


class BundleError(CaptioningError):
    """A model bundle is missing, incomplete, or from an incompatible version."""


class ExportError(CaptioningError):
    """A bundle's exported (LiteRT) form cannot be made, written or loaded."""


class InputFileError(CaptioningError):
    """A file the tool reads is missing, not a regular file, too large, or not JSON within limits.

    Readers catch it and re-raise their own error class (``BundleError``, ``DatasetError``, ...)
    with ``reason`` and a hint that fits them.

    Attributes:
        path: the file.
        reason: what is wrong, a few words without the path (e.g. ``a FIFO (named pipe), not a regular file``).
        missing: True when the file does not exist.
    """

    def __init__(self, path: str | Path, reason: str, missing: bool = False):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.missing = missing
