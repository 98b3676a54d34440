"""ResNet50 and DenseNet201 (Keras Applications) with Keras's own ImageNet weights, or a verified
local copy of them.

The two differ only in the network and in the preprocessing it was trained with (ResNet50:
Caffe's BGR minus the channel means; DenseNet201: torch's 0..1 then per-channel mean/std), so one
builder serves both; ``keras_weights.PUBLISHED`` says which file each loads.
"""

from __future__ import annotations

import keras

from captioning import config
from captioning.encoders import keras_weights
from captioning.encoders.base import Encoder

# Encoder name -> the keras.applications module whose preprocess_input the network was trained with.
PREPROCESSING = {"resnet50": "resnet50", "densenet201": "densenet"}


@keras.saving.register_keras_serializable(package="captioning")
class Preprocess(keras.layers.Layer):
    """A Keras Applications network's own preprocessing as a layer: RGB 0..255 in, what the
    network expects out (``keras.applications.<module>.preprocess_input``)."""

    def __init__(self, module: str, **kwargs):
        super().__init__(**kwargs)
        self.module = module
        self._preprocess_input = getattr(keras.applications, module).preprocess_input

    def call(self, images):  # (B, H, W, 3) RGB 0..255 -> (B, H, W, 3)
        return self._preprocess_input(images)

    def get_config(self) -> dict:
        return {**super().get_config(), "module": self.module}


def build(name: str, weights: str = "imagenet") -> Encoder:
    """Build the ResNet50 or DenseNet201 encoder.

    Args:
        name: ``"resnet50"`` or ``"densenet201"``.
        weights: ``"imagenet"`` (Keras's download and cache), ``"none"`` (random init), or the
            path of a local copy of Keras's no-top ``.h5`` file (``keras_weights.PUBLISHED``).

    Returns:
        Encoder with grid ``(B, 7, 7, 2048)`` (ResNet50) or ``(B, 7, 7, 1920)`` (DenseNet201).

    Raises:
        EncoderError: the weights cannot be downloaded, or a local file is not that file.
    """
    if name not in PREPROCESSING:
        raise ValueError(f"{__name__} builds {', '.join(PREPROCESSING)}, not {name!r}")
    published = keras_weights.PUBLISHED[name]
    shape = config.ENCODER_SHAPES[name]
    weights_path, weights_id = keras_weights.resolve_weights(weights, published)  # fail fast
    backbone = getattr(keras.applications, published.label)(
        include_top=False, weights=None, input_shape=(shape.input_size, shape.input_size, 3))
    if weights_path is not None:
        keras_weights.load_into(backbone, weights_path, published)
    inputs = keras.Input((shape.input_size, shape.input_size, 3), dtype="float32", name="image")
    grid = backbone(Preprocess(PREPROCESSING[name], name=f"{name}_preprocess")(inputs))  # (B, 7, 7, D)
    model = keras.Model(inputs, grid, name=f"{name}_encoder")
    return Encoder(name=name, input_size=shape.input_size, feature_dim=shape.feature_dim,
                   grid_size=int(grid.shape[1]), weights_id=weights_id, model=model,
                   random_weights=weights == "none")
