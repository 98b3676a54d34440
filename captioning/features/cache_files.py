"""The feature cache's files: their layout, what each JSON file must hold, and atomic writes.

Layout of one cache folder
(``config.FEATURE_CACHE_DIR / dataset.key / f"{encoder}-{weights_id}" / kind``)::

    index.json            commit point: {"features": "features-<gen>.npy", "row_shape": [...],
                          "rows": {relative path: row}, "signatures": {relative path: [size, mtime_ns]}}
    features-<gen>.npy    float16 (rows, *row_shape), read with np.load(mmap_mode="r")
    failures.json         {relative path: {"reason", "signature"}}: images that could not be read
    shards/<n>.npy        one finished batch, float16 (batch, *row_shape)
    shards/<n>.json       its paths, signatures and failures (written last: the shard's commit mark)
    .lock                 flock held by the one process writing this folder

Why this shape: every batch is committed on its own (temp file + ``os.replace``; the JSON sidecar
last), so a kill loses at most the batch in flight. Consolidation writes a new generation of the
features file and only then replaces ``index.json``, which names it; a fixed ``features.npy``
could not be swapped together with its index atomically, so a crash between the two renames
would pair an index with the wrong rows. Old generations and merged shards are deleted only after
the new index is in place. No pickle anywhere: numpy arrays (``allow_pickle=False``) and JSON.

``cache.py`` decides what goes into the cache; this module checks what is read back (a damaged file
is one error naming it, never a KeyError deep inside) and writes each file through a temp file
renamed over it.
"""

from __future__ import annotations

import errno
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from captioning.errors import FeatureCacheError
from captioning.storage.atomic import atomic_output

INDEX_VERSION = 1
Signature = tuple[int, int]  # (size in bytes, mtime in ns): a changed file gets recomputed



def structure_problem(name: str, data) -> str | None:
    """What is wrong with the content of ``index.json``, ``failures.json`` or a shard sidecar."""
    if not isinstance(data, dict):
        return "not a JSON object"
    if name == "failures.json":
        return None if all(isinstance(v, dict) for v in data.values()) else "failures must be objects"
    if not _is_row_shape(data.get("row_shape")):
        return "row_shape must be 1 to 3 sizes between 1 and 65536"
    if name == "index.json":
        if data.get("version") != INDEX_VERSION:
            return None  # read_state reports the version with its own message
        if not isinstance(data.get("features"), str) or not re.fullmatch(r"features-\d{1,9}\.npy", data["features"]):
            return "features must name a features-<n>.npy file"
        rows, signatures = data.get("rows"), data.get("signatures")
        if not isinstance(rows, dict) or not all(_is_count(v) for v in rows.values()):
            return "rows must map paths to row numbers"
        if not isinstance(signatures, dict) or not all(_is_signature(v) for v in signatures.values()):
            return "signatures must map paths to [size, mtime]"
        return None
    paths, signatures = data.get("paths"), data.get("signatures")
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        return "paths must be a list of file names"
    if not isinstance(signatures, list) or len(signatures) != len(paths) or \
            not all(_is_signature(v) for v in signatures):
        return "signatures must be one [size, mtime] per path"
    failures = data.get("failures")
    if not isinstance(failures, dict) or not all(isinstance(v, dict) for v in failures.values()):
        return "failures must map paths to objects"
    return None


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_signature(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(_is_count(v) for v in value)


def _is_row_shape(value) -> bool:
    return isinstance(value, list) and 1 <= len(value) <= 3 and all(_is_count(v) and 1 <= v <= 65536 for v in value)


def shard_number(path: Path) -> int:
    return int(Path(path).stem)


def next_generation(features_file: str | None) -> int:
    if not features_file:
        return 0
    return int(features_file.removeprefix("features-").removesuffix(".npy")) + 1


def write_atomic(path: Path, write) -> None:
    """Write through ``write(handle)`` into a temp file beside ``path``, then rename it over ``path``.

    On any failure (ENOSPC included) the temp file is removed and ``path`` keeps its old content.
    """
    try:
        with atomic_output(path) as temp, open(temp, "wb") as handle:
            write(handle)
    except OSError as error:
        reason = "the disk is full" if error.errno == errno.ENOSPC else str(error)
        raise FeatureCacheError(
            f"could not write {path} ({reason}); the cache keeps its earlier batches, "
            f"free space and run again") from None


def write_json_atomic(path: Path, value) -> None:
    write_atomic(path, lambda f: f.write(json.dumps(value, indent=0).encode("utf-8")))


def file_signature(path: Path) -> Signature | None:
    """``(size, mtime_ns)`` of an image file, or None when it cannot be stat'ed."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_size, stat.st_mtime_ns)


@dataclass
class CacheState:
    """What a cache folder holds: consolidated rows plus the shards written since."""

    row_shape: tuple[int, ...] | None = None
    features_file: str | None = None
    rows: dict[str, int] = field(default_factory=dict)
    signatures: dict[str, Signature] = field(default_factory=dict)
    failures: dict[str, dict] = field(default_factory=dict)
    # Shard name -> its sidecar; later shards win over earlier ones and over consolidated rows.
    shards: dict[str, dict] = field(default_factory=dict)

    def known_row_shape(self) -> tuple[int, ...]:
        """``row_shape``, which is known once a row is stored or a writer has set it.

        Raises:
            FeatureCacheError: the cache holds nothing yet.
        """
        if self.row_shape is None:
            raise FeatureCacheError("the feature cache holds no rows yet; run `python image_captioning.py extract`")
        return tuple(self.row_shape)

    def done_signatures(self) -> dict[str, Signature]:
        """Signature of every image that has a stored row (consolidated or in a shard)."""
        done = dict(self.signatures)
        for meta in self.shards.values():
            done.update(zip(meta["paths"], (tuple(s) for s in meta["signatures"]), strict=True))
        return done

    def all_failures(self) -> dict[str, dict]:
        """Recorded failures, including those in shards not yet consolidated."""
        failed = dict(self.failures)
        for meta in self.shards.values():
            for path in meta["paths"]:
                failed.pop(path, None)
            failed.update(meta["failures"])
        return failed
