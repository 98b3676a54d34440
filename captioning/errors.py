"""Errors the tool expects and reports to the user as one line, never as a traceback."""


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
