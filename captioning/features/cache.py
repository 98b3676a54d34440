"""The feature cache: which rows to compute, room to write them, and reading them back.

``FeatureCache`` owns one cache folder (``config.FEATURE_CACHE_DIR / dataset.key /
f"{encoder}-{weights_id}" / kind``): it plans what an extraction must compute (rows are reused
while their image file is unchanged), checks the disk before writing, commits each batch as a
shard, and consolidates the shards into one memory-mappable array. ``load_features`` and
``open_features`` read rows back for training. The files themselves are described in
``cache_files``.

Several extraction workers (``extract --shard I/N``, on one host or several sharing the folder)
never write the cache folder itself: each writes its share as shards of a *part*, a cache folder
of its own under ``parts/I-of-N/`` with its own lock, so they run concurrently without touching one
another's files. Whoever next holds the cache's lock (the worker that finishes, a later ``extract``,
``train``, or any reader) merges every part no worker is writing: each committed part shard is
copied into the cache as one of its shards (a commit like any batch's), then removed from the
part, and the shards are consolidated. A kill at any point leaves either the part shard or its
copy, or both: a part shard copied twice holds the same rows, and the later copy wins.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from captioning import config
from captioning.errors import FeatureCacheError, InputFileError
from captioning.features.cache_files import (
    INDEX_VERSION,
    CacheState,
    Signature,
    file_signature,
    next_generation,
    shard_number,
    structure_problem,
    write_atomic,
    write_json_atomic,
)
from captioning.storage.disk_space import ensure_free_space, format_bytes
from captioning.storage.safe_json import read_json_file

if TYPE_CHECKING:
    from captioning.data.datasets import Dataset

FEATURE_DTYPE = np.float16
# How to make room, beyond freeing some (the cache lives under CAPTIONING_DATA_DIR).
SPACE_ADVICE = " or set CAPTIONING_DATA_DIR to a bigger disk"
# Rows copied per step while consolidating, so memory stays flat however big the cache is.
COPY_CHUNK_ROWS = 256
# Where extraction workers (``extract --shard``) write their shares, one folder each.
PARTS_DIR = "parts"
_LOCK_POLL_SECONDS = 0.2


class CacheBusyError(FeatureCacheError):
    """Another process holds the cache folder's write lock."""

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
    if kind not in config.FEATURE_KINDS:
        raise FeatureCacheError(f"unknown feature kind {kind!r}: use one of {', '.join(config.FEATURE_KINDS)}")
    return Path(config.FEATURE_CACHE_DIR) / dataset_key / f"{encoder_name}-{weights_id}" / kind


class FeatureCache:
    """One cache folder. Writers must hold :meth:`locked`; readers need no lock."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.shard_dir = self.directory / "shards"

    @classmethod
    def of(cls, dataset: Dataset, encoder_name: str, weights_id: str, kind: str) -> FeatureCache:
        """The cache of one dataset's ``kind`` features from one encoder and its weights."""
        return cls(cache_dir(dataset.key, encoder_name, weights_id, kind))

    def part(self, name: str) -> FeatureCache:
        """The part one extraction worker writes (``Shard.name``, e.g. ``0-of-2``): a cache of its own."""
        return FeatureCache(self.directory / PARTS_DIR / name)

    def pending_parts(self) -> list[FeatureCache]:
        """Parts holding committed shards not yet merged (some may be still being written)."""
        parts = sorted(path for path in (self.directory / PARTS_DIR).glob("*") if path.is_dir())
        return [FeatureCache(path) for path in parts if any((path / "shards").glob("*.json"))]

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
        for sidecar in sorted(self.shard_dir.glob("*.json"), key=shard_number):
            meta = self._read_json(sidecar)
            if meta is None:  # removed since the listing (a consolidation elsewhere)
                continue
            state.shards[sidecar.stem] = meta
            state.row_shape = state.row_shape or tuple(meta["row_shape"])
        return state

    def open_features(self, state: CacheState) -> np.ndarray:
        """The consolidated features as a read-only memmap ``(rows, *row_shape)``."""
        path = self.directory / (state.features_file or "")
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as error:
            raise FeatureCacheError(
                f"feature file {path} is unreadable ({error}); delete {self.directory} to rebuild it"
            ) from None
        # The index must describe this array, or rows would be read from the wrong place.
        if array.shape[1:] != state.known_row_shape() or max(state.rows.values(), default=-1) >= len(array):
            raise FeatureCacheError(
                f"feature file {path} holds {array.shape} rows but its index expects "
                f"{state.known_row_shape()} rows numbered up to {max(state.rows.values(), default=-1)}; "
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
        problem = structure_problem(path.name, data)
        if problem:
            raise FeatureCacheError(f"feature cache file {path} is damaged ({problem}); delete "
                                    f"{self.directory} to rebuild the cache")
        return data

    def read_state_for(self, row_shape: tuple[int, ...]) -> CacheState:
        """The state of a cache about to receive rows of ``row_shape`` (hold :meth:`locked`).

        Raises:
            FeatureCacheError: the cache holds rows of another shape.
        """
        state = self.read_state()
        if state.row_shape is not None and tuple(state.row_shape) != tuple(row_shape):
            raise FeatureCacheError(
                f"feature cache {self.directory} holds rows of shape {tuple(state.row_shape)}, "
                f"the encoder gives {tuple(row_shape)}; delete that folder to rebuild it")
        state.row_shape = tuple(row_shape)
        return state

    def plan(self, state: CacheState, dataset: Dataset, paths: Sequence[Path]) -> tuple[list[Todo], int]:
        """Split the requested images into those to compute and the number whose rows are reusable.

        A row is reused while its image file keeps its size and mtime; an image that failed before
        is not retried until its file changes (its failure is still reported).
        """
        done, failed = state.done_signatures(), state.all_failures()
        todo, reused = [], 0
        for path in paths:
            relative = relative_path(dataset, path)
            signature = file_signature(path)
            recorded = failed.get(relative)
            if recorded is not None and _same(recorded.get("signature"), signature):
                continue  # failed before and unchanged: reported, not retried
            if recorded is None and relative in done and _same(done[relative], signature):
                reused += 1
            else:
                todo.append(Todo(path, relative, signature))
        return todo, reused

    def check_space(self, state: CacheState, count: int, kind: str, announce: bool) -> None:
        """Refuse to start when ``count`` new rows' shards plus the consolidated copy cannot fit.

        Args:
            state: from :meth:`read_state_for` (its row shape is set).
            count: rows about to be computed.
            kind: for the messages.
            announce: print the planned cache size first (for terminals).
        """
        shape = state.known_row_shape()
        per_row = row_bytes(shape)
        total_rows = len(state.rows) + count
        if announce:
            print(f"{kind} features: {count} images to compute, cache will be about "
                  f"{format_bytes(total_rows * per_row)} ({total_rows} x "
                  f"{' x '.join(map(str, shape))} x 2 bytes) in {self.directory}")
        # Shards for the new rows, then one consolidated copy of every row.
        ensure_free_space(self.directory, (count + total_rows) * per_row, f"{kind} features", SPACE_ADVICE,
                          error=FeatureCacheError)

    @staticmethod
    def failed(state: CacheState, dataset: Dataset, paths: Sequence[Path]) -> list[tuple[Path, str]]:
        """``(path, reason)`` for each of ``paths`` whose image could not be read (now or before)."""
        failures = state.all_failures()
        return [(path, failures[relative_path(dataset, path)]["reason"]) for path in paths
                if relative_path(dataset, path) in failures]

    # ----------------------------------------------------------------------------- writing

    @contextlib.contextmanager
    def locked(self, wait_seconds: float = 0.0):
        """Hold the folder's write lock; the kernel drops it if the process dies (even SIGKILL).

        Args:
            wait_seconds: how long to wait for another process to release it.

        Raises:
            CacheBusyError: another process is writing this cache (still, after ``wait_seconds``).
        """
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".lock", "w") as handle:
            deadline = time.monotonic() + wait_seconds
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise CacheBusyError(
                            f"another process is writing the feature cache {self.directory}; wait for it "
                            f"to finish") from None
                    time.sleep(_LOCK_POLL_SECONDS)
            self._remove_orphans()
            yield self

    def merge_parts(self, state: CacheState) -> CacheState:
        """Copy every finished part's committed shards in as shards of this cache (hold :meth:`locked`).

        A part that a worker is still writing is left for a later merge. Each part shard is removed
        only once its copy is committed here. Call :meth:`consolidate` afterwards.

        Returns:
            ``state`` with the copied shards added.
        """
        for part in self.pending_parts():
            try:
                with part.locked():
                    self._merge_part(state, part)
            except CacheBusyError:
                continue  # its worker is still extracting
        return state

    def _merge_part(self, state: CacheState, part: FeatureCache) -> None:
        part_state = part.read_state()
        for name in sorted(part_state.shards, key=int):
            meta = part_state.shards[name]
            rows = np.asarray(part._open_source(part_state, name))  # one batch: (rows, *row_shape)
            if state.row_shape is not None and rows.shape[1:] != tuple(state.row_shape):
                raise FeatureCacheError(
                    f"part {part.directory} holds rows of shape {rows.shape[1:]}, the cache "
                    f"{tuple(state.row_shape)}; delete {part.directory} and extract that share again")
            state.row_shape = state.row_shape or rows.shape[1:]
            self.write_shard(state, rows, meta["paths"], [tuple(s) for s in meta["signatures"]],
                             meta["failures"])
            for suffix in (".json", ".npy"):  # the sidecar first: the part shard is uncommitted
                (part.shard_dir / f"{name}{suffix}").unlink(missing_ok=True)

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
        name = str(max((shard_number(Path(n)) for n in state.shards), default=-1) + 1)
        meta = {"row_shape": list(features.shape[1:]), "paths": paths,
                "signatures": [list(s) for s in signatures], "failures": failures}
        write_atomic(self.shard_dir / f"{name}.npy",
                      lambda f: np.save(f, features.astype(FEATURE_DTYPE), allow_pickle=False))
        write_json_atomic(self.shard_dir / f"{name}.json", meta)
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
        row_shape = state.known_row_shape()
        live = self._live_rows(state)  # source -> [(row in source, relative path)], in source order
        count = sum(len(rows) for rows in live.values())
        ensure_free_space(self.directory, count * _row_bytes(row_shape), "consolidating", SPACE_ADVICE,
                          error=FeatureCacheError)
        target = self.directory / f"features-{next_generation(state.features_file)}.npy"
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

        write_atomic(target, fill)
        done = state.done_signatures()
        new = CacheState(row_shape=row_shape, features_file=target.name, rows=new_rows,
                         signatures={name: done[name] for name in new_rows},
                         failures=state.all_failures())
        write_json_atomic(self.directory / "failures.json", new.failures)
        write_json_atomic(self.directory / "index.json", {
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
        if array.shape[1:] != state.known_row_shape():
            raise FeatureCacheError(
                f"shard {path} has rows {array.shape[1:]}, expected {state.known_row_shape()}; "
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


def row_bytes(row_shape: tuple[int, ...]) -> int:
    """Bytes one cached float16 row of ``row_shape`` takes."""
    return _row_bytes(row_shape)


def _row_bytes(row_shape) -> int:
    return int(np.prod(row_shape)) * np.dtype(FEATURE_DTYPE).itemsize


@dataclass(frozen=True)
class Todo:
    """An image whose row is to be computed: its file, its cache key and its file signature."""

    path: Path
    relative: str
    signature: Signature | None


def _same(recorded, signature: Signature | None) -> bool:
    return (None if recorded is None else tuple(recorded)) == signature


def relative_path(dataset: Dataset, path: Path) -> str:
    """The cache key of an image: its path relative to the dataset root.

    Raises:
        FeatureCacheError: the image is not inside the dataset folder.
    """
    try:
        return dataset.relative(path)
    except ValueError:
        raise FeatureCacheError(f"image {path} is not inside the dataset folder {dataset.root}; "
                                f"features are cached per dataset") from None


def load_features(dataset: Dataset, encoder_name: str, weights_id: str, kind: str,
                  image_paths: Sequence[Path]) -> np.ndarray:
    """Cached features in the order of ``image_paths``.

    Args:
        dataset: the ``Dataset`` the features were extracted from.
        encoder_name: ``Encoder.name``.
        weights_id: ``Encoder.weights_id``.
        kind: ``"pooled"`` or ``"grid"``.
        image_paths: absolute image paths.

    Returns:
        float16 ``(N, D)`` or ``(N, g, g, D)``: a read-only memmap when the paths are exactly the
        cache's rows in order, else an in-memory copy of the selected rows (use
        ``open_features`` to keep memory flat for big grids).

    Raises:
        FeatureCacheError: some images have no cached row.
    """
    features, rows = open_features(dataset, encoder_name, weights_id, kind, image_paths)
    if len(rows) == len(features) and np.array_equal(rows, np.arange(len(rows))):
        return features
    return np.asarray(features[rows])


def open_features(dataset: Dataset, encoder_name: str, weights_id: str, kind: str,
                  image_paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """The whole cached array as a read-only memmap plus the row of each requested image.

    ``features[rows[i]]`` is the row of ``image_paths[i]``; reading rows batch by batch keeps
    memory flat however large the cache is.

    Args:
        dataset, encoder_name, weights_id, kind, image_paths: as for ``load_features``.

    Returns:
        ``(features (rows, ...) float16 memmap, rows (N,) int64)``.

    Raises:
        FeatureCacheError: the cache is missing or some images have no cached row.
    """
    cache = FeatureCache.of(dataset, encoder_name, weights_id, kind)
    state = cache.read_state()
    # Shards left by an interrupted run, or extraction workers' parts: merge them so one memmap
    # holds every row.
    if state.shards or cache.pending_parts():
        with cache.locked():
            state = cache.consolidate(cache.merge_parts(cache.read_state()))
    relative = [relative_path(dataset, path) for path in image_paths]
    missing = [name for name in relative if name not in state.rows]
    if missing:
        raise FeatureCacheError(
            f"{len(missing)} of {len(relative)} images have no cached {kind} features in "
            f"{cache.directory} (first: {missing[0]}); run `python image_captioning.py extract` "
            f"for this dataset and encoder{' with --grid' if kind == 'grid' else ''}")
    features = cache.open_features(state) if relative else np.zeros((0, *(state.row_shape or ())), FEATURE_DTYPE)
    return features, np.array([state.rows[name] for name in relative], dtype=np.int64)
