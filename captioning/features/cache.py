"""On-disk storage of extracted CNN features: crash-safe shards, a consolidated memmap-able array.

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
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from captioning import config
from captioning.errors import FeatureCacheError, InputFileError
from captioning.storage.atomic import atomic_output
from captioning.storage.disk_space import ensure_free_space
from captioning.storage.safe_json import read_json_file

KINDS = ("pooled", "grid")
INDEX_VERSION = 1
FEATURE_DTYPE = np.float16
# How to make room, beyond freeing some (the cache lives under CAPTIONING_DATA_DIR).
SPACE_ADVICE = " or set CAPTIONING_DATA_DIR to a bigger disk"
# Rows copied per step while consolidating, so memory stays flat however big the cache is.
COPY_CHUNK_ROWS = 256

Signature = tuple[int, int]  # (size in bytes, mtime in ns): a changed file gets recomputed


def cache_dir(dataset_key: str, encoder_name: str, weights_id: str, kind: str) -> Path:
    """The cache folder for one dataset, encoder, weights and feature kind.

    Args:
        dataset_key: ``Dataset.key``.
        encoder_name: ``Encoder.name``.
        weights_id: ``Encoder.weights_id``.
        kind: ``"pooled"`` or ``"grid"``.

    Returns:
        The folder path (not created).
    """
    if kind not in KINDS:
        raise FeatureCacheError(f"unknown feature kind {kind!r}: use one of {', '.join(KINDS)}")
    return Path(config.FEATURE_CACHE_DIR) / dataset_key / f"{encoder_name}-{weights_id}" / kind


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

    def done_signatures(self) -> dict[str, Signature]:
        """Signature of every image that has a stored row (consolidated or in a shard)."""
        done = dict(self.signatures)
        for meta in self.shards.values():
            done.update(zip(meta["paths"], (tuple(s) for s in meta["signatures"])))
        return done

    def all_failures(self) -> dict[str, dict]:
        """Recorded failures, including those in shards not yet consolidated."""
        failed = dict(self.failures)
        for meta in self.shards.values():
            for path in meta["paths"]:
                failed.pop(path, None)
            failed.update(meta["failures"])
        return failed


class FeatureCache:
    """One cache folder. Writers must hold :meth:`locked`; readers need no lock."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.shard_dir = self.directory / "shards"

    # ----------------------------------------------------------------------------- reading

    def read_state(self) -> CacheState:
        """Read the index, the failures and every committed shard sidecar.

        Returns:
            The folder's state; an empty state when the folder does not exist yet.
        """
        state = CacheState()
        index = self._read_json(self.directory / "index.json")
        if index is not None:
            if index.get("version") != INDEX_VERSION:
                raise FeatureCacheError(
                    f"feature cache {self.directory} has format version {index.get('version')}; "
                    f"delete that folder to rebuild it")
            state.row_shape = tuple(index["row_shape"])
            state.features_file = index["features"]
            state.rows = dict(index["rows"])
            state.signatures = {k: tuple(v) for k, v in index["signatures"].items()}
        state.failures = self._read_json(self.directory / "failures.json") or {}
        for sidecar in sorted(self.shard_dir.glob("*.json"), key=_shard_number):
            meta = self._read_json(sidecar)
            state.shards[sidecar.stem] = meta
            state.row_shape = state.row_shape or tuple(meta["row_shape"])
        return state

    def open_features(self, state: CacheState) -> np.ndarray:
        """The consolidated features as a read-only memmap ``(rows, *row_shape)``."""
        path = self.directory / state.features_file
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as error:
            raise FeatureCacheError(
                f"feature file {path} is unreadable ({error}); delete {self.directory} to rebuild it"
            ) from None
        # The index must describe this array, or rows would be read from the wrong place.
        if array.shape[1:] != tuple(state.row_shape) or max(state.rows.values(), default=-1) >= len(array):
            raise FeatureCacheError(
                f"feature file {path} holds {array.shape} rows but its index expects "
                f"{tuple(state.row_shape)} rows numbered up to {max(state.rows.values(), default=-1)}; "
                f"delete {self.directory} to rebuild it")
        return array

    def _read_json(self, path: Path) -> dict | None:
        """One of the cache's JSON files, read within limits and checked; None when absent."""
        try:
            # Paths are dataset file names, which may hold undecodable bytes (kept as escapes).
            data = read_json_file(path, config.MAX_DATASET_FILE_BYTES, allow_surrogates=True)
        except InputFileError as error:
            if error.missing:
                return None
            raise FeatureCacheError(f"feature cache file {path} is unreadable ({error.reason}); delete "
                                    f"{self.directory} to rebuild the cache") from None
        problem = _structure_problem(path.name, data)
        if problem:
            raise FeatureCacheError(f"feature cache file {path} is damaged ({problem}); delete "
                                    f"{self.directory} to rebuild the cache")
        return data

    # ----------------------------------------------------------------------------- writing

    @contextlib.contextmanager
    def locked(self):
        """Hold the folder's write lock; the kernel drops it if the process dies (even SIGKILL).

        Raises:
            FeatureCacheError: another process is writing this cache.
        """
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise FeatureCacheError(
                    f"another process is writing the feature cache {self.directory}; wait for it "
                    f"to finish") from None
            self._remove_orphans()
            yield self

    def write_shard(self, state: CacheState, features: np.ndarray, paths: list[str],
                    signatures: list[Signature], failures: dict[str, dict]) -> None:
        """Commit one finished batch: the array first, then its sidecar (the commit mark).

        Args:
            state: updated in place with the new shard.
            features: float16 ``(len(paths), *row_shape)``.
            paths: relative image paths, one per row.
            signatures: file signature of each path.
            failures: relative path -> {"reason", "signature"} for images that could not be read.
        """
        if len(features) != len(paths):
            raise ValueError(f"{len(features)} feature rows for {len(paths)} paths")
        name = str(max((_shard_number(Path(n)) for n in state.shards), default=-1) + 1)
        meta = {"row_shape": list(features.shape[1:]), "paths": paths,
                "signatures": [list(s) for s in signatures], "failures": failures}
        _atomic_write(self.shard_dir / f"{name}.npy",
                      lambda f: np.save(f, features.astype(FEATURE_DTYPE), allow_pickle=False))
        _atomic_write_json(self.shard_dir / f"{name}.json", meta)
        state.shards[name] = meta

    def consolidate(self, state: CacheState) -> CacheState:
        """Merge the shards into a new features generation, then swap the index to it.

        Streams one source array at a time (the previous generation, then each shard in commit
        order) in chunks, so memory and open files stay flat however big the cache is. Rows a
        later shard replaced are dropped. Does nothing without shards.

        Returns:
            The new state (no shards).
        """
        if not state.shards:
            return state
        row_shape = tuple(state.row_shape)
        live = self._live_rows(state)  # source -> [(row in source, relative path)], in source order
        count = sum(len(rows) for rows in live.values())
        ensure_free_space(self.directory, count * _row_bytes(row_shape), "consolidating", SPACE_ADVICE,
                          error=FeatureCacheError)
        target = self.directory / f"features-{_next_generation(state.features_file)}.npy"
        new_rows: dict[str, int] = {}

        def fill(handle):
            np.lib.format.write_array_header_1_0(handle, {
                "descr": np.lib.format.dtype_to_descr(np.dtype(FEATURE_DTYPE)),
                "fortran_order": False, "shape": (count, *row_shape)})
            for source, rows in live.items():
                array = self._open_source(state, source)
                for start in range(0, len(rows), COPY_CHUNK_ROWS):
                    chunk = rows[start:start + COPY_CHUNK_ROWS]
                    block = array[[row for row, _ in chunk]]  # (chunk, *row_shape)
                    handle.write(np.ascontiguousarray(block, dtype=FEATURE_DTYPE).tobytes())
                    new_rows.update((name, len(new_rows)) for _, name in chunk)
                del array

        _atomic_write(target, fill)
        done = state.done_signatures()
        new = CacheState(row_shape=row_shape, features_file=target.name, rows=new_rows,
                         signatures={name: done[name] for name in new_rows},
                         failures=state.all_failures())
        _atomic_write_json(self.directory / "failures.json", new.failures)
        _atomic_write_json(self.directory / "index.json", {
            "version": INDEX_VERSION, "features": new.features_file, "row_shape": list(row_shape),
            "dtype": np.dtype(FEATURE_DTYPE).name, "rows": new.rows,
            "signatures": {k: list(v) for k, v in new.signatures.items()}})
        # The new index is committed: the old generation and the merged shards are garbage now.
        self._remove_orphans(keep=target.name)
        for name in state.shards:
            for suffix in (".json", ".npy"):
                (self.shard_dir / f"{name}{suffix}").unlink(missing_ok=True)
        return new

    def _live_rows(self, state: CacheState) -> dict[str, list[tuple[int, str]]]:
        """Where each image's newest row is: source ("" = current generation, else a shard name)."""
        sources = {path: ("", row) for path, row in state.rows.items()}
        order = [""] + sorted(state.shards, key=int)
        for name in order[1:]:
            meta = state.shards[name]
            for path in meta["failures"]:
                sources.pop(path, None)  # a re-read that failed: its old row is stale
            sources.update({path: (name, i) for i, path in enumerate(meta["paths"])})
        live: dict[str, list[tuple[int, str]]] = {source: [] for source in order}
        for path, (source, row) in sources.items():
            live[source].append((row, path))
        return {source: sorted(rows) for source, rows in live.items() if rows}

    def _open_source(self, state: CacheState, source: str) -> np.ndarray:
        if source == "":
            return self.open_features(state)
        path = self.shard_dir / f"{source}.npy"
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        if array.shape[1:] != tuple(state.row_shape):
            raise FeatureCacheError(
                f"shard {path} has rows {array.shape[1:]}, expected {tuple(state.row_shape)}; "
                f"delete {self.directory} to rebuild the cache")
        return array

    def _remove_orphans(self, keep: str | None = None) -> None:
        """Delete temp files, shard arrays without a sidecar and unreferenced feature generations."""
        if keep is None:
            index = self._read_json(self.directory / "index.json")
            keep = index["features"] if index else None
        for path in self.directory.glob("features-*.npy"):
            if path.name != keep:
                path.unlink(missing_ok=True)
        for path in list(self.directory.glob("*.tmp*")) + list(self.shard_dir.glob("*.tmp*")):
            path.unlink(missing_ok=True)
        for array in self.shard_dir.glob("*.npy"):
            if not array.with_suffix(".json").exists():
                array.unlink(missing_ok=True)


def _structure_problem(name: str, data) -> str | None:
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


def row_bytes(row_shape: tuple[int, ...]) -> int:
    """Bytes one cached float16 row of ``row_shape`` takes."""
    return _row_bytes(row_shape)


def _row_bytes(row_shape) -> int:
    return int(np.prod(row_shape)) * np.dtype(FEATURE_DTYPE).itemsize


def _shard_number(path: Path) -> int:
    return int(Path(path).stem)


def _next_generation(features_file: str | None) -> int:
    if not features_file:
        return 0
    return int(features_file.removeprefix("features-").removesuffix(".npy")) + 1


def _atomic_write(path: Path, write) -> None:
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


def _atomic_write_json(path: Path, value) -> None:
    _atomic_write(path, lambda f: f.write(json.dumps(value, indent=0).encode("utf-8")))
