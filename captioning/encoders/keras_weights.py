"""Keras Applications' ImageNet weight files: Keras's own download and cache, or a verified local copy.

Shared by the encoders built from ``keras.applications`` (resnet50, densenet201). A local file is
accepted only when its md5 is the one Keras publishes for that file, so a bundle or feature cache
made from it is exactly one made from the download (both get ``weights_id`` ``"imagenet"``).

``unavailable_weights`` tells, without TensorFlow, which of these encoders cannot get their ImageNet
weights right now (not in Keras's cache and the host unreachable), so the menu and ``train`` say so
before anything heavy loads.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

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


def _published(label: str, folder: str, file: str, md5: str) -> KerasWeights:
    return KerasWeights(label=label, file=file, md5=md5,
                        url=f"https://storage.googleapis.com/tensorflow/keras-applications/{folder}/{file}")


# Encoder name -> its published file. md5: Keras's own hash of the no-top file
# (keras/src/applications/resnet.py and densenet.py).
PUBLISHED = {
    "resnet50": _published("ResNet50", "resnet", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                           "4d473c1dd8becc155b73f8504c6f6626"),
    "densenet201": _published("DenseNet201", "densenet", "densenet201_weights_tf_dim_ordering_tf_kernels_notop.h5",
                              "c13680b51ded0fb44dff2d8f86ac8bb1"),
}
# How long the reachability probe waits: offline, name resolution fails in well under a second;
# online, connecting takes milliseconds.
PROBE_TIMEOUT_SECONDS = 3.0


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
        raise download_error(spec, reason) from None


def download_error(spec: KerasWeights, reason: str) -> EncoderError:
    """The one-line error for weights that cannot be downloaded: why, and the three ways on."""
    return EncoderError(
        f"cannot download the {spec.label} ImageNet weights ({reason}); download {spec.url} "
        f"and save it as {cached_path(spec)}, or pass --encoder-weights "
        f"FILE.h5, or use --encoder efficientnet_lite0 (works offline)")


def cached_path(spec: KerasWeights) -> Path:
    """Where Keras keeps (or will keep) the downloaded file."""
    return keras_cache_dir() / "models" / spec.file


def unreachable(url: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> str | None:
    """Why ``url``'s host cannot be connected to (e.g. ``"Name or service not known"``), or None."""
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname or "", parts.port or 443), timeout=timeout).close()
    except OSError as error:
        return error.strerror or str(error) or type(error).__name__
    return None


def unavailable_weights(names: Iterable[str]) -> dict[str, str]:
    """The encoders among ``names`` whose ImageNet weights cannot be had now, each with the reason.

    An encoder is available when its weights are not Keras downloads (EfficientNet-Lite), when
    Keras has the file cached, or when the host it comes from answers. The host is probed at
    most once per call. No TensorFlow.
    """
    missing = {name: PUBLISHED[name] for name in names
               if name in PUBLISHED and not cached_path(PUBLISHED[name]).is_file()}
    if not missing:
        return {}
    reason = unreachable(next(iter(missing.values())).url)  # every file comes from the same host
    if reason is None:
        return {}
    return {name: f"{spec.label} ImageNet weights are not in {cached_path(spec).parent} and cannot be "
                  f"downloaded ({reason})" for name, spec in missing.items()}


def check_available(name: str, weights: str) -> None:
    """Raise the download error now, before TensorFlow loads, when ``name`` needs ImageNet weights
    that cannot be had (``weights`` is ``"imagenet"``, nothing cached, the host unreachable).

    Raises:
        EncoderError: as ``download`` would, minutes of imports later.
    """
    spec = PUBLISHED.get(name)
    if weights != "imagenet" or spec is None or cached_path(spec).is_file():
        return
    reason = unreachable(spec.url)
    if reason is not None:
        raise download_error(spec, reason)
