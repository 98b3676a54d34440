"""Image captioning: CNN image features + an LSTM decoder, trained and used from one CLI.

The Python API::

    from captioning import Captioner

    captioner = Captioner.load()                # the default model, or Captioner.load("saved_models/x")
    result = captioner.caption("photo.jpg")     # CaptionResult: .caption, .score, .tokens, .error
    results = captioner.caption_many(["a.jpg", "photos/"])

``Captioner`` and ``CaptionResult`` are imported on first use, so ``import captioning`` (which every
command does) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["CaptionResult", "Captioner", "__version__"]

if TYPE_CHECKING:
    from captioning.inference.captioner import Captioner, CaptionResult


def __getattr__(name: str) -> Any:
    if name in ("Captioner", "CaptionResult"):
        from captioning.inference import captioner

        return getattr(captioner, name)
    raise AttributeError(f"module 'captioning' has no attribute {name!r}")
