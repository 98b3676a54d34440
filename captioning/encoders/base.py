"""The Encoder every part of the pipeline receives: a Keras CNN plus what identifies its features."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from captioning import config

if TYPE_CHECKING:  # only for annotations: importing this module imports no TensorFlow
    import keras
    import tensorflow as tf


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
        classifier: the CNN's own ImageNet classifier over the pooled features, as
            ``(kernel (feature_dim, 1000), bias (1000,))`` float32 arrays, so class probabilities
            come from the features already computed for the caption (tags; the exported encoder's
            ``class_logits`` output); None when the weights have none (resnet50's and densenet201's
            include_top=False weights, random weights).
    """

    name: str
    input_size: int
    feature_dim: int
    grid_size: int
    weights_id: str
    model: keras.Model
    random_weights: bool = False
    classifier: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)
    _pooled_model: keras.Model | None = field(default=None, init=False, repr=False, compare=False)
    _compiled_calls: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

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
    def pooled_model(self) -> keras.Model:
        """keras Model: the same input -> ``(B, feature_dim)`` mean over the grid; built once.

        Global average pooling equals Keras ``pooling="avg"``.
        """
        if self._pooled_model is None:
            import keras

            pooled = keras.layers.GlobalAveragePooling2D(name="pooled")(self.model.outputs[0])
            self._pooled_model = keras.Model(self.model.inputs, pooled,
                                             name=f"{self.model.name}_pooled")
        return self._pooled_model

    def feature_shape(self, kind: str) -> tuple[int, ...]:
        """One image's features of ``kind``: ``(feature_dim,)`` pooled, ``(g, g, feature_dim)`` grid."""
        return config.EncoderShape(self.input_size, self.grid_size, self.feature_dim).feature_shape(kind)

    def encode(self, pixels: np.ndarray | tf.Tensor, kind: str) -> np.ndarray:
        """Features of a batch of images: the one way the tool runs the CNN.

        Feature extraction (inside its tf.data pipeline) and captioning both call this, so a
        caption model sees at inference exactly the numbers it was trained on: the same graph, and
        float16 as the feature cache stores them.

        Args:
            pixels: uint8 ``(B, input_size, input_size, 3)`` RGB, a numpy array or a tensor (as
                ``data.images.load_image`` gives them).
            kind: ``"pooled"`` or ``"grid"``.

        Returns:
            float16 ``(B, *feature_shape(kind))``.

        Raises:
            ValueError: pixels of another shape or type, or an unknown kind.
        """
        shape, dtype = tuple(pixels.shape), getattr(pixels.dtype, "name", str(pixels.dtype))
        expected = (self.input_size, self.input_size, 3)
        if len(shape) != 4 or shape[1:] != expected or dtype != "uint8":
            raise ValueError(f"{self.name} expects uint8 images of shape (B, {expected[0]}, {expected[1]}, 3), "
                             f"got {dtype} {shape}")
        # float16 on the numpy side: a float16 cast inside the graph makes oneDNN log an error
        # line on CPUs without AVX-512 FP16.
        return np.asarray(self._compiled(kind)(pixels)).astype(np.float16)

    def _compiled(self, kind: str) -> Any:
        """The graph-compiled ``uint8 pixels -> float32 features`` call for ``kind``, traced once.

        The batch axis is left open, so a short last batch or a single image costs neither a
        retrace nor padding.
        """
        if kind not in self._compiled_calls:
            import tensorflow as tf

            self.feature_shape(kind)  # refuses an unknown kind
            network = self.pooled_model if kind == "pooled" else self.model
            size = self.input_size

            @tf.function(input_signature=[tf.TensorSpec((None, size, size, 3), tf.uint8)])
            def infer(pixels):
                return network(tf.cast(pixels, tf.float32), training=False)

            self._compiled_calls[kind] = infer
        return self._compiled_calls[kind]
