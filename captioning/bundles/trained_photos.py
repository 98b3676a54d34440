"""Which photos a model learnt from, by content, so no evaluation scores it on them.

A split only protects the dataset it was made from. A model trained on a mix of datasets (say
Flickr8k plus part of coco-mini, gathered in a folder of links) and then evaluated on Flickr8k itself
would otherwise count its own training photos as test photos. So a bundle keeps
``trained_photos.json``: a short SHA-1 of the bytes of every photo its training or its choice of
epoch saw (the train and validation splits), whatever the folder or file name. ``evaluate`` leaves
those photos out of any dataset and says how many it left out; on the validation split of the
model's own dataset, only those it learnt from (``evaluation.evaluate._without_trained_photos``).

Bundles written before this file existed have none; they are evaluated as before.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

from captioning.bundles.layout import TRAINED_PHOTOS_FILE
from captioning.errors import BundleError, InputFileError
from captioning.storage.atomic import write_json_atomic
from captioning.storage.safe_json import read_json_file

FILE = TRAINED_PHOTOS_FILE
DIGITS = 16  # 64 bits of SHA-1: no two of a few million photos collide by chance
# Enough for COCO's 123k photos several times over, and a bound for a hostile file's size.
MAX_PHOTOS = 1_000_000
MAX_FILE_BYTES = MAX_PHOTOS * (DIGITS + 4) + 4096
_DIGEST = re.compile(f"[0-9a-f]{{{DIGITS}}}")
_CHUNK = 1 << 20


def photo_digest(path: str | Path) -> str | None:
    """The photo's content digest (SHA-1 of its bytes, first ``DIGITS`` hex), None if unreadable."""
    digest = hashlib.sha1()
    try:
        with open(path, "rb") as file:
            while chunk := file.read(_CHUNK):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()[:DIGITS]


def photo_digests(paths: Iterable[str | Path]) -> frozenset[str]:
    """Digests of the readable photos among ``paths``."""
    return frozenset(found for found in map(photo_digest, paths) if found is not None)


def write_trained_photos(folder: str | Path, photos: Iterable[str]) -> Path:
    """Write ``folder/trained_photos.json`` (sorted, so equal sets give equal files)."""
    listed = sorted(set(photos))
    return write_json_atomic(Path(folder) / FILE, {"hash": f"sha1[:{DIGITS}] of the file's bytes",
                                                   "photos": listed})


def read_trained_photos(folder: str | Path) -> frozenset[str] | None:
    """The bundle's trained-photo digests, or None when it has no record.

    Raises:
        BundleError: the file exists but is not a list of digests (one line).
    """
    path = Path(folder) / FILE
    if not path.exists():
        return None
    try:
        data = read_json_file(path, MAX_FILE_BYTES)
    except InputFileError as error:
        raise BundleError(f"{error}; delete {path} to evaluate without it") from None
    photos = data.get("photos") if isinstance(data, dict) else None
    if not isinstance(photos, list) or len(photos) > MAX_PHOTOS or \
            not all(isinstance(item, str) and _DIGEST.fullmatch(item) for item in photos):
        raise BundleError(f"{path}: expected {{\"photos\": [{DIGITS}-digit hex digests]}}; "
                          f"delete it to evaluate without it")
    return frozenset(photos)


__all__ = ["FILE", "photo_digest", "photo_digests", "read_trained_photos", "write_trained_photos"]
