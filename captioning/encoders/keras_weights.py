"""Keras Applications' ImageNet weight files: Keras's own download and cache, or a verified local copy.

Shared by the encoders built from ``keras.applications`` (resnet50, densenet201). A local file is
accepted only when its md5 is the one Keras publishes for that file, so a bundle or feature cache
made from it is exactly one made from the download (both get ``weights_id`` ``"imagenet"``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from captioning.errors import EncoderError


@dataclass(frozen=True)
class KerasWeights:
    """One published no-top weights file.

    Attributes:
        label: the network's name in messages, e.g. ``"ResNet50"``.
        file: the file name Keras caches it under.
        url: where Keras downloads it from.
        md5: Keras's published md5 of the file (from ``keras/src/applications/``).
    """

    label: str
    file: str
    url: str
    md5: str


def resolve_weights(weights: str, spec: KerasWeights) -> tuple[Path | None, str]:
    """The weights file to load and its ``weights_id``; downloads ``"imagenet"`` if not cached.

    Args:
        weights: ``"imagenet"``, ``"none"``, or a local ``.h5`` path.
        spec: which published file.

    Returns:
        ``(path or None, weights_id)``.

    Raises:
        EncoderError: download failed, or the local file is missing or has the wrong md5.
    """
    if weights == "none":
        return None, "none"
    if weights == "imagenet":
        return download(spec), "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise EncoderError(f"{path}: weights file not found; give a copy of {spec.file} "
                           f"(from {spec.url})")
    digest = file_md5(path)
    if digest != spec.md5:
        raise EncoderError(f"{path}: md5 {digest} is not that of Keras's {spec.label} no-top "
                           f"ImageNet weights; expected {spec.file} (md5 {spec.md5}) from {spec.url}")
    # The md5 matched Keras's own file, so these are exactly the "imagenet" weights: sharing the id
    # lets feature caches and bundles made either way work with each other.
    return path, "imagenet"


def load_into(model, path: Path, spec: KerasWeights) -> None:
    """Load a verified weights file into a ``keras.applications`` model built with ``weights=None``.

    Raises:
        EncoderError: the file does not fit the model.
    """
    try:
        model.load_weights(path)
    except (OSError, ValueError) as error:
        raise EncoderError(f"{path}: cannot load {spec.label} weights "
                           f"({str(error).splitlines()[0][:120]})") from None


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


def download(spec: KerasWeights) -> Path:
    """Keras's own download into ``<keras cache>/models``, md5-checked; reused when cached.

    Raises:
        EncoderError: the download failed (offline in seconds); says which file to fetch, where
            to put it, and the offline alternatives.
    """
    import keras

    cache = keras_cache_dir()
    try:
        return Path(keras.utils.get_file(spec.file, spec.url, cache_dir=str(cache),
                                         cache_subdir="models", file_hash=spec.md5,
                                         hash_algorithm="md5"))
    except Exception as error:  # noqa: BLE001 - get_file raises bare Exception on network errors
        # Keras's message repeats the URL; keep just the cause, e.g. "[Errno -2] Name ... known".
        reason = str(error).replace(f" on {spec.url}", "")
        reason = (reason.splitlines() or [type(error).__name__])[0][:160]
        raise EncoderError(
            f"cannot download the {spec.label} ImageNet weights ({reason}); download {spec.url} "
            f"and save it as {cache / 'models' / spec.file}, or pass --encoder-weights "
            f"FILE.h5, or use --encoder efficientnet_lite0 (works offline)") from None
