"""The functions a bundle's export holds, as ``tf.function``s with fixed signatures and an open batch.

Each returns a dict, so the converted model's outputs carry these names (LiteRT signature outputs):

* encoder ``encode``: ``pixels`` uint8 ``(B, S, S, 3)`` RGB 0..255 -> ``grid`` float32
  ``(B, g, g, D)``, ``pooled`` ``(B, D)`` (the mean over the grid, as ``Encoder.pooled_model``),
  and, for an encoder with an ImageNet classifier, ``class_logits`` ``(B, 1000)`` (the classifier
  over ``pooled``; the tags feature reads class probabilities from it).
* attention decoder ``initial``: ``features`` ``(B, g, g, D)`` -> ``grid``, ``projected``, ``h``,
  ``c``; ``step``: ``tokens`` int32 ``(B,)``, ``grid``, ``projected``, ``h``, ``c`` ->
  ``log_probs`` ``(B, V)``, ``next_h``, ``next_c``, ``alpha`` ``(B, g * g)`` (attention maps).
* merge decoder ``initial``: ``features`` ``(B, D)`` -> ``image`` ``(B, U)`` (``h = c = 0``);
  ``step``: ``tokens``, ``image``, ``h``, ``c`` -> ``log_probs``, ``next_h``, ``next_c``.

The decoders' graphs are the step decoders' own (``models.*StepDecoder.step_graph``), so both
paths compute the same arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras
import tensorflow as tf

from captioning.config import DecoderConfig
from captioning.encoders.base import Encoder
from captioning.models import make_step_decoder
from captioning.models.attention import AttentionStepDecoder

Functions = dict[str, Callable]


def _spec(shape: tuple, dtype: tf.DType, name: str) -> tf.TensorSpec:
    return tf.TensorSpec(shape, dtype, name=name)


def encoder_functions(encoder: Encoder) -> Functions:
    """``{"encode": ...}`` for an encoder (preprocessing is inside its model)."""
    model, size = encoder.model, encoder.input_size
    head = None
    if encoder.classifier is not None:
        kernel, bias = encoder.classifier
        head = (tf.constant(kernel, tf.float32), tf.constant(bias, tf.float32))

    @tf.function(input_signature=[_spec((None, size, size, 3), tf.uint8, "pixels")])
    def encode(pixels):
        grid = model(tf.cast(pixels, tf.float32), training=False)  # (B, g, g, D)
        pooled = tf.reduce_mean(grid, axis=[1, 2])  # (B, D)
        outputs = {"grid": grid, "pooled": pooled}
        if head is not None:
            outputs["class_logits"] = tf.matmul(pooled, head[0]) + head[1]  # (B, 1000)
        return outputs

    return {"encode": encode}


def decoder_functions(member: keras.Model, decoder: DecoderConfig, feature_shape: tuple[int, ...]) -> Functions:
    """``{"initial": ..., "step": ...}`` for one decoder (a training model of a loaded bundle)."""
    step_decoder = make_step_decoder(member, decoder)
    if isinstance(step_decoder, AttentionStepDecoder):
        return _attention_functions(step_decoder, feature_shape)
    units, feature_dim = step_decoder.units, step_decoder.feature_dim
    state = [_spec((None, units), tf.float32, name) for name in ("image", "h", "c")]

    @tf.function(input_signature=[_spec((None, feature_dim), tf.float32, "features")])
    def initial(features):
        return {"image": step_decoder.embed_image_graph(features)}

    @tf.function(input_signature=[_spec((None,), tf.int32, "tokens"), *state])
    def step(tokens, image, h, c):
        log_probs, h, c = step_decoder.step_graph(tokens, image, h, c)
        # An output may not share an input's name in every runtime: hence next_h, next_c.
        return {"log_probs": log_probs, "next_h": h, "next_c": c}

    return {"initial": initial, "step": step}


def _attention_functions(step_decoder: AttentionStepDecoder, feature_shape: tuple[int, ...]) -> Functions:
    pixels = math.prod(feature_shape[:-1])
    d, a, u = step_decoder.state_sizes

    @tf.function(input_signature=[_spec((None, *feature_shape), tf.float32, "features")])
    def initial(features):
        grid, projected, h, c = step_decoder.initial_graph(features)
        return {"grid": grid, "projected": projected, "h": h, "c": c}

    @tf.function(input_signature=[_spec((None,), tf.int32, "tokens"), _spec((None, pixels, d), tf.float32, "grid"),
                                  _spec((None, pixels, a), tf.float32, "projected"),
                                  _spec((None, u), tf.float32, "h"), _spec((None, u), tf.float32, "c")])
    def step(tokens, grid, projected, h, c):
        log_probs, h, c, alpha = step_decoder.step_graph(tokens, grid, projected, h, c)
        return {"log_probs": log_probs, "next_h": h, "next_c": c, "alpha": alpha}

    return {"initial": initial, "step": step}


__all__ = ["Functions", "decoder_functions", "encoder_functions"]
