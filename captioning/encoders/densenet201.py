"""DenseNet201 (Keras Applications) with Keras's own ImageNet weights, or a verified local copy."""

from __future__ import annotations

import keras

from captioning import config
from captioning.encoders import keras_weights
from captioning.encoders.base import Encoder

NAME = "densenet201"
INPUT_SIZE = config.ENCODER_SHAPES[NAME].input_size
FEATURE_DIM = config.ENCODER_SHAPES[NAME].feature_dim
WEIGHTS = keras_weights.PUBLISHED[NAME]  # Keras's no-top ImageNet file: name, URL, md5


@keras.saving.register_keras_serializable(package="captioning")
class TorchPreprocess(keras.layers.Layer):
    """DenseNet's own preprocessing as a layer: RGB scaled to 0..1, then ImageNet mean/std per channel."""

    def call(self, images):  # (B, H, W, 3) RGB 0..255 -> (B, H, W, 3) standardised RGB
        return keras.applications.densenet.preprocess_input(images)


def build(name: str = NAME, weights: str = "imagenet") -> Encoder:
    """Build the DenseNet201 encoder.

    Args:
        name: ``"densenet201"`` (the registry passes every encoder its name).
        weights: ``"imagenet"`` (Keras's download and cache), ``"none"`` (random init), or the
            path of a local copy of ``densenet201_weights_tf_dim_ordering_tf_kernels_notop.h5``.

    Returns:
        Encoder with grid ``(B, 7, 7, 1920)``.

    Raises:
        EncoderError: the weights cannot be downloaded, or a local file is not that file.
    """
    if name != NAME:
        raise ValueError(f"{__name__} builds {NAME}, not {name!r}")
    weights_path, weights_id = keras_weights.resolve_weights(weights, WEIGHTS)  # fail fast
    backbone = keras.applications.DenseNet201(include_top=False, weights=None,
                                              input_shape=(INPUT_SIZE, INPUT_SIZE, 3))
    if weights_path is not None:
        keras_weights.load_into(backbone, weights_path, WEIGHTS)
    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), dtype="float32", name="image")
    grid = backbone(TorchPreprocess(name="torch_preprocess")(inputs))  # (B, 7, 7, 1920)
    model = keras.Model(inputs, grid, name="densenet201_encoder")
    return Encoder(name=NAME, input_size=INPUT_SIZE, feature_dim=FEATURE_DIM,
                   grid_size=int(grid.shape[1]), weights_id=weights_id, model=model,
                   random_weights=weights == "none")
