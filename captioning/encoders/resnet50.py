"""ResNet50 (Keras Applications) with Keras's own ImageNet weights, or a verified local copy."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import keras

from captioning import config
from captioning.encoders.base import Encoder
from captioning.errors import EncoderError

NAME = "resnet50"
INPUT_SIZE = config.ENCODER_INPUT_SIZE
FEATURE_DIM = config.ENCODER_FEATURE_DIMS[NAME]  # config.py: bundles are checked against it
WEIGHTS_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
WEIGHTS_URL = f"https://storage.googleapis.com/tensorflow/keras-applications/resnet/{WEIGHTS_FILE}"
# Keras's published hash of the no-top file (keras/src/applications/resnet.py).
WEIGHTS_MD5 = "4d473c1dd8becc155b73f8504c6f6626"


@keras.saving.register_keras_serializable(package="captioning")
class CaffePreprocess(keras.layers.Layer):
    """ResNet50's own preprocessing as a layer: RGB -> BGR, minus the ImageNet channel means."""

    def call(self, images):  # (B, H, W, 3) RGB 0..255 -> (B, H, W, 3) BGR centred
        return keras.applications.resnet50.preprocess_input(images)


def build(weights: str = "imagenet") -> Encoder:
    """Build the ResNet50 encoder.

    Args:
        weights: ``"imagenet"`` (Keras's download and cache), ``"none"`` (random init), or the
            path of a local copy of ``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5``.

    Returns:
        Encoder with grid ``(B, 7, 7, 2048)``.

    Raises:
        EncoderError: the weights cannot be downloaded, or a local file is not that file.
    """
    weights_path, weights_id = resolve_weights(weights)  # before building: fail fast
    backbone = keras.applications.ResNet50(include_top=False, weights=None,
                                           input_shape=(INPUT_SIZE, INPUT_SIZE, 3))
    if weights_path is not None:
        try:
            backbone.load_weights(weights_path)
        except (OSError, ValueError) as error:
            raise EncoderError(f"{weights_path}: cannot load ResNet50 weights "
                               f"({str(error).splitlines()[0][:120]})") from None
    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), dtype="float32", name="image")
    grid = backbone(CaffePreprocess(name="caffe_preprocess")(inputs))  # (B, 7, 7, 2048)
    model = keras.Model(inputs, grid, name="resnet50_encoder")
    return Encoder(name=NAME, input_size=INPUT_SIZE, feature_dim=FEATURE_DIM, grid_size=config.ENCODER_GRID_SIZE,
                   weights_id=weights_id, model=model, random_weights=weights == "none")


def resolve_weights(weights: str) -> tuple[Path | None, str]:
    """The weights file to load and its ``weights_id``; downloads ``"imagenet"`` if not cached.

    Args:
        weights: ``"imagenet"``, ``"none"``, or a local ``.h5`` path.

    Returns:
        ``(path or None, weights_id)``.

    Raises:
        EncoderError: download failed, or the local file is missing or has the wrong md5.
    """
    if weights == "none":
        return None, "none"
    if weights == "imagenet":
        return _download(), "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise EncoderError(f"{path}: weights file not found; give a copy of {WEIGHTS_FILE} "
                           f"(from {WEIGHTS_URL})")
    digest = file_md5(path)
    if digest != WEIGHTS_MD5:
        raise EncoderError(f"{path}: md5 {digest} is not that of Keras's ResNet50 no-top ImageNet "
                           f"weights; expected {WEIGHTS_FILE} (md5 {WEIGHTS_MD5}) from {WEIGHTS_URL}")
    # The md5 matched Keras's own file, so these are exactly the "imagenet" weights: sharing the id
    # lets feature caches and bundles made either way work with each other.
    return path, "imagenet"


def file_md5(path: Path) -> str:
    """Hex md5 of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def keras_cache_dir() -> Path:
    """Keras's cache folder, resolved the way Keras resolves it (KERAS_HOME, ~/.keras or /tmp)."""
    if "KERAS_HOME" in os.environ:
        return Path(os.environ["KERAS_HOME"])
    home = os.path.expanduser("~")
    return Path(home if os.access(home, os.W_OK) else "/tmp") / ".keras"


def _download() -> Path:
    """Keras's own download into ``<keras cache>/models``, md5-checked; reused when cached."""
    cache = keras_cache_dir()
    try:
        return Path(keras.utils.get_file(WEIGHTS_FILE, WEIGHTS_URL, cache_dir=str(cache),
                                         cache_subdir="models", file_hash=WEIGHTS_MD5,
                                         hash_algorithm="md5"))
    except Exception as error:  # noqa: BLE001 - get_file raises bare Exception on network errors
        # Keras's message repeats the URL; keep just the cause, e.g. "[Errno -2] Name ... known".
        reason = str(error).replace(f" on {WEIGHTS_URL}", "")
        reason = (reason.splitlines() or [type(error).__name__])[0][:160]
        raise EncoderError(
            f"cannot download the ResNet50 ImageNet weights ({reason}); download {WEIGHTS_URL} "
            f"and save it as {cache / 'models' / WEIGHTS_FILE}, or pass --encoder-weights "
            f"FILE.h5, or use --encoder efficientnet_lite0 (works offline)") from None
