"""The Encoder every part of the pipeline receives: a Keras CNN plus what identifies its features."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(kw_only=True)
class Encoder:
    """An image encoder: RGB pixels in 0..255 -> a spatial grid of features.

    Attributes:
        name: one of ``config.ENCODER_NAMES``.
        input_size: height and width of the input images (224; 240 and 260 for
            efficientnet_lite1 and efficientnet_lite2).
        feature_dim: channels of the grid (2048 resnet50, 1920 densenet201, 1280 EfficientNet-Lite).
        grid_size: height and width of the grid: the model's output, 7 at 224 pixels, 8 at 240,
            9 at 260. Everything downstream (cache rows, attention, bundles) takes it from here.
        weights_id: changes whenever the weights change, so cached features never mix:
            ``"imagenet"``, ``"none"`` (random init) or ``"md5-<hex8>"`` (a user-given file).
        model: keras Model, float32 ``(B, input_size, input_size, 3)`` RGB 0..255 ->
            ``(B, grid_size, grid_size, feature_dim)``; preprocessing is inside the model.
        random_weights: True when built with ``weights="none"`` (tests and benchmarks only).
    """

    name: str
    input_size: int
    feature_dim: int
    grid_size: int
    weights_id: str
    model: Any  # keras.Model; typed loosely so importing this module does not import TensorFlow
    random_weights: bool = False
    _pooled_model: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        # The sizes are declared separately from the model; a wrong one would mislabel every
        # cache row and bundle, so they must agree with what the model really takes and gives.
        expected_in = (None, self.input_size, self.input_size, 3)
        expected_out = (None, self.grid_size, self.grid_size, self.feature_dim)
        actual_in, actual_out = tuple(self.model.inputs[0].shape), tuple(self.model.outputs[0].shape)
        if actual_in != expected_in or actual_out != expected_out:
            raise ValueError(f"{self.name}: model maps {actual_in} -> {actual_out}, but the encoder "
                             f"declares {expected_in} -> {expected_out}")

    @property
    def pooled_model(self):
        """keras Model: the same input -> ``(B, feature_dim)`` mean over the grid; built once.

        Global average pooling equals Keras ``pooling="avg"``; callers may use it inside tf.data
        or with ``predict_on_batch``.
        """
        if self._pooled_model is None:
            import keras

            pooled = keras.layers.GlobalAveragePooling2D(name="pooled")(self.model.outputs[0])
            self._pooled_model = keras.Model(self.model.inputs, pooled,
                                             name=f"{self.model.name}_pooled")
        return self._pooled_model

    def grid(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Spatial features of a batch of images.

        Args:
            images: ``(B, input_size, input_size, 3)`` RGB, uint8 or float in 0..255.
            batch_size: images per forward pass (bounds memory for large B).

        Returns:
            float32 ``(B, grid_size, grid_size, feature_dim)``.
        """
        return self._run(self.model, images, batch_size)

    def pooled(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Pooled features (mean over the grid) of a batch of images.

        Args:
            images: ``(B, input_size, input_size, 3)`` RGB, uint8 or float in 0..255.
            batch_size: images per forward pass.

        Returns:
            float32 ``(B, feature_dim)``.
        """
        return self._run(self.pooled_model, images, batch_size)

    def _run(self, model, images: np.ndarray, batch_size: int) -> np.ndarray:
        images = np.asarray(images)
        expected = (self.input_size, self.input_size, 3)
        if images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(f"{self.name} expects images of shape (B, {expected[0]}, "
                             f"{expected[1]}, 3), got {images.shape}")
        outputs = [np.asarray(model.predict_on_batch(
                       images[start:start + batch_size].astype(np.float32)), dtype=np.float32)
                   for start in range(0, len(images), batch_size)]
        if not outputs:
            return np.zeros((0,) + tuple(model.outputs[0].shape[1:]), dtype=np.float32)
        return np.concatenate(outputs)
