"""Image encoders: ``build_encoder(name, weights)`` -> :class:`Encoder`.

Importing this package does not import TensorFlow; the chosen encoder's module (and Keras) is
imported only when it is built.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from captioning import config
from captioning.encoders.base import Encoder
from captioning.errors import BundleError, EncoderError

if TYPE_CHECKING:
    from captioning.bundles.schema import EncoderSpec

__all__ = ["Encoder", "build_bundle_encoder", "build_encoder", "module_name"]

# Encoder name -> the module under captioning/encoders/ that builds it (``build(name, weights)``).
_MODULES = {
    "resnet50": "keras_applications",
    "densenet201": "keras_applications",
    "efficientnet_lite0": "efficientnet_lite",
    "efficientnet_lite1": "efficientnet_lite",
    "efficientnet_lite2": "efficientnet_lite",
}


def module_name(name: str) -> str:
    """The module (under ``captioning.encoders``) that builds encoder ``name``."""
    return _MODULES[name]


def build_encoder(name: str, weights: str = config.DEFAULT_ENCODER_WEIGHTS) -> Encoder:
    """Build an image encoder.

    Args:
        name: one of ``config.ENCODER_NAMES``.
        weights: ``"imagenet"``, ``"none"`` (random init, for tests and benchmarks), or a local
            weights file (resnet50 / densenet201: a copy of Keras's no-top ``.h5``, md5-checked;
            EfficientNet-Lite: a legacy-format ``.pth`` state dict).

    Returns:
        The Encoder, model built and weights loaded.

    Raises:
        EncoderError: unknown name, or weights that cannot be found, downloaded or loaded.
    """
    if name not in config.ENCODER_NAMES:
        raise EncoderError(f"unknown encoder {name!r}; choose one of {', '.join(config.ENCODER_NAMES)}")
    if not isinstance(weights, str) or not weights:
        raise EncoderError(f"encoder weights {weights!r}: give imagenet, none or a file path")
    module = importlib.import_module(f"captioning.encoders.{_MODULES[name]}")
    encoder = module.build(name, weights)
    built = config.EncoderShape(encoder.input_size, encoder.grid_size, encoder.feature_dim)
    if built != config.ENCODER_SHAPES[name]:  # bundles are checked against the table, not the model
        raise EncoderError(f"{name}: the model gives {built}, config.ENCODER_SHAPES says "
                           f"{config.ENCODER_SHAPES[name]}; fix the table")
    return encoder


def build_bundle_encoder(spec: EncoderSpec, bundle_path: str | Path) -> Encoder:
    """The encoder a bundle was trained on, with the very weights it was trained on.

    Args:
        spec: the bundle's ``config.json["encoder"]``.
        bundle_path: the bundle folder, named in errors.

    Returns:
        The Encoder.

    Raises:
        BundleError: the weights loaded are not the ones the bundle records.
        EncoderError: the encoder cannot be built.
    """
    encoder = build_encoder(spec.name, weights=spec.weights_to_load(Path(bundle_path) / config.BUNDLE_CONFIG_FILE))
    if spec.weights_id and encoder.weights_id != spec.weights_id:
        # Other weights give other features: the decoder would caption noise.
        raise BundleError(f"{bundle_path}: the model was trained on {spec.name} weights {spec.weights_id} but "
                          f"{encoder.weights_id} were loaded; restore those weights or retrain the model")
    return encoder
