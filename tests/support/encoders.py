"""A tiny real Encoder for pipeline tests: a seeded convolution instead of a CNN, built in a moment."""

from __future__ import annotations

from captioning.encoders.base import Encoder


def tiny_encoder(grid_size: int = 7, name: str = "tiny") -> Encoder:
    """Same weights in every process (seeded initialisers), so separate runs are comparable.

    ``4 * grid_size`` pixels -> ``(grid_size, grid_size, 8)``: 7 like ResNet50 and Lite0, 9 like Lite2.
    """
    import keras

    size = 4 * grid_size
    pixels = keras.Input((size, size, 3))
    scaled = keras.layers.Rescaling(1 / 255)(pixels)
    grid = keras.layers.Conv2D(8, 4, strides=4, activation="relu",
                               kernel_initializer=keras.initializers.RandomNormal(seed=1),
                               bias_initializer=keras.initializers.Constant(0.1))(scaled)  # (B, g, g, 8)
    return Encoder(name=name, input_size=size, feature_dim=8, grid_size=grid_size, weights_id="seed1",
                   model=keras.Model(pixels, grid), random_weights=True)
