"""Image encoders: ``build_encoder(name, weights)`` -> :class:`Encoder`.

Importing this package does not import TensorFlow; the chosen encoder's module (and Keras) is
imported only when it is built.
"""

from __future__ import annotations

import importlib

from captioning import config
from captioning.encoders.base import Encoder
from captioning.errors import EncoderError

__all__ = ["Encoder", "build_encoder"]


def build_encoder(name: str, weights: str = "imagenet") -> Encoder:
    """Build an image encoder.

    Args:
        name: one of ``config.ENCODER_NAMES`` (``resnet50``, ``efficientnet_lite0``).
        weights: ``"imagenet"``, ``"none"`` (random init, for tests and benchmarks), or a local
            weights file (resnet50: a copy of Keras's no-top ``.h5``).

    Returns:
        The Encoder, model built and weights loaded.

    Raises:
        EncoderError: unknown name, or weights that cannot be found, downloaded or loaded.
    """
    if name not in config.ENCODER_NAMES:
        raise EncoderError(f"unknown encoder {name!r}; choose one of {', '.join(config.ENCODER_NAMES)}")
    if not isinstance(weights, str) or not weights:
        raise EncoderError(f"encoder weights {weights!r}: give imagenet, none or a file path")
    module = importlib.import_module(f"captioning.encoders.{name}")
    return module.build(weights)
