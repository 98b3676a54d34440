"""Batched CNN feature extraction: a tf.data pipeline feeding the encoder, into the on-disk cache.

Images are decoded and resized by ``images.load_image`` (the one loader training and captioning
share) on tf.data's parallel threads while the CNN runs on the previous batch. An unreadable image
never stops the pipeline: the loader's error becomes a per-image flag, and the row is dropped.
What to compute, and the storage (shards, index, failures, extraction workers' parts), belong to
``cache.py``; which photos an extraction worker computes, to ``sharding.py``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from captioning import config
from captioning.errors import FeatureCacheError
from captioning.features.cache import (
    FEATURE_DTYPE,
    CacheBusyError,
    CacheState,
    FeatureCache,
    Signature,
    Todo,
    relative_path,
)

if TYPE_CHECKING:
    from captioning.data.datasets import Dataset
    from captioning.encoders.base import Encoder
    from captioning.features.sharding import Shard

_DECODE_THREADS = max(2, os.cpu_count() or 1)  # parallel image decodes in the tf.data pipeline
_BATCHES_IN_FLIGHT = 2  # decoded batches waiting for the CNN


@dataclass(frozen=True)
class ExtractionReport:
    """What one ``extract_features`` call did.

    Attributes:
        computed: images encoded in this call.
        reused: images whose cached rows were still valid.
        failed: ``(absolute path, reason)`` for each requested image that cannot be read, including
            ones recorded by an earlier run and not retried because the file has not changed.
        images_per_second: throughput of this call's pipeline (decode + CNN); 0.0 when nothing
            was computed.
        unmerged: a share (``shard``) whose rows could not be merged into the cache yet because
            another process held it; the next ``extract`` or ``train`` merges them.
    """

    computed: int
    reused: int
    failed: list[tuple[Path, str]]
    images_per_second: float
    unmerged: bool = False


@dataclass(frozen=True)
class _Batch:
    """One batch out of the pipeline, in input order."""

    indices: np.ndarray  # (batch,) positions in the input path list
    features: np.ndarray  # (ok, *row_shape) float16, rows for the images that loaded
    failures: list[tuple[int, str]]  # (position, reason) for the images that did not


def extract_features(dataset: Dataset, encoder: Encoder, kind: str = "pooled", image_paths: Sequence[Path] | None = None,
                     batch_size: int = config.EXTRACT_BATCH_SIZE, progress: bool = True,
                     shard: Shard | None = None) -> ExtractionReport:
    """Encode a dataset's images into the feature cache, computing only what is missing.

    Each finished batch is committed to disk on its own, so an interrupted run (Ctrl-C, kill, full
    disk) loses at most the batch in flight and the next call resumes. Rows whose image file
    changed (size or mtime) are recomputed; failures are recorded and retried only when the file
    changes.

    Args:
        dataset: a ``datasets.Dataset`` (its ``key`` names the cache; paths are stored relative
            to its root).
        encoder: an ``encoders.Encoder``.
        kind: ``"pooled"`` for ``(D,)`` vectors or ``"grid"`` for ``(g, g, D)`` grids
            (``g = encoder.grid_size``: 7, 8 or 9); only this kind is computed.
        image_paths: absolute paths of the images to encode (default: every image in the dataset).
        batch_size: images per CNN batch (and per committed shard).
        progress: show a tqdm progress bar and the planned cache size.
        shard: compute only this share of ``image_paths`` (``sharding.Shard``), into the cache's
            part for it, then merge the finished parts into the cache when its lock is free within
            ``config.FEATURE_MERGE_WAIT_SECONDS``. Workers with different shares run concurrently.

    Returns:
        An ExtractionReport (about the share's images only, with ``shard``).

    Raises:
        FeatureCacheError: the cache cannot be written (disk full, locked by another process) or
            holds rows of another shape.
    """
    paths = _unique(image_paths if image_paths is not None else [item.path for item in dataset.images])
    cache = FeatureCache.of(dataset, encoder.name, encoder.weights_id, kind)
    if shard is not None:
        return _extract_share(cache, dataset, encoder, kind, paths, batch_size, progress, shard)
    with cache.locked():
        state = cache.merge_parts(cache.read_state_for(encoder.feature_shape(kind)))
        todo, reused = cache.plan(state, dataset, paths)
        computed, speed = 0, 0.0
        if todo:
            cache.check_space(state, len(todo), kind, announce=progress)
            computed, speed = _extract_into(cache, state, encoder, kind, todo, batch_size, progress)
        state = cache.consolidate(state)
    failed = cache.failed(state, dataset, paths)
    return ExtractionReport(computed=computed, reused=reused, failed=failed, images_per_second=speed)


def _extract_share(cache: FeatureCache, dataset: Dataset, encoder: Encoder, kind: str, paths: list[Path],
                   batch_size: int, progress: bool, shard: Shard) -> ExtractionReport:
    """``extract_features`` for one worker's share: into its part (own lock), then a merge."""
    mine = shard.select(paths, key=lambda path: relative_path(dataset, path))
    part = cache.part(shard.name)
    with part.locked():
        # The cache itself is only read (readers need no lock): rows it has already are reused.
        known = cache.read_state_for(encoder.feature_shape(kind))
        state = part.read_state_for(encoder.feature_shape(kind))
        todo, reused = part.plan(_overlay(known, state), dataset, mine)
        computed, speed = 0, 0.0
        if todo:
            part.check_space(state, len(todo), kind, announce=progress)
            computed, speed = _extract_into(part, state, encoder, kind, todo, batch_size, progress)
        failed = part.failed(_overlay(known, state), dataset, mine)
    try:
        with cache.locked(wait_seconds=config.FEATURE_MERGE_WAIT_SECONDS):
            cache.consolidate(cache.merge_parts(cache.read_state_for(encoder.feature_shape(kind))))
    except CacheBusyError:
        return ExtractionReport(computed, reused, failed, speed, unmerged=True)
    return ExtractionReport(computed=computed, reused=reused, failed=failed, images_per_second=speed)


def _overlay(cache_state: CacheState, part_state: CacheState) -> CacheState:
    """The cache's state with a part's shards on top (for planning and failures; not for reading rows)."""
    shards = {**cache_state.shards, **{f"part-{name}": meta for name, meta in part_state.shards.items()}}
    return CacheState(row_shape=part_state.row_shape, features_file=cache_state.features_file,
                      rows=cache_state.rows, signatures=cache_state.signatures, failures=cache_state.failures,
                      shards=shards)


def cached_features_report(dataset: Dataset, encoder: Encoder, kind: str,
                           image_paths: Sequence[Path]) -> ExtractionReport:
    """Check, without writing or locking anything, that the cache holds every image's features.

    For workers of a multi-worker training run, which read the cache (often one folder on shared
    storage) at the same time: only ``extract`` writes it.

    Returns:
        An ExtractionReport with ``computed=0`` and the images recorded as unreadable.

    Raises:
        FeatureCacheError: images without features, or extraction workers' shares not merged
            yet; the message names the command to run.
    """
    paths = _unique(image_paths)
    cache = FeatureCache.of(dataset, encoder.name, encoder.weights_id, kind)
    grid = " --grid" if kind == "grid" else ""
    command = (f"python image_captioning.py extract --dataset {dataset.root} --encoder {encoder.name}{grid}")
    state = cache.read_state()
    if state.shards or cache.pending_parts():
        raise FeatureCacheError(
            f"the feature cache {cache.directory} holds extracted rows not merged yet; wait for every "
            f"`extract --shard` to finish, or run `{command}` once to merge them, then train")
    todo, reused = cache.plan(state, dataset, paths)
    if todo:
        raise FeatureCacheError(
            f"{len(todo)} of {len(paths)} images have no {kind} features in {cache.directory} (first: "
            f"{todo[0].relative}); multi-worker training reads the cache only: run `{command} --shard I/N` "
            f"on each host (or `{command}` on one) first")
    return ExtractionReport(computed=0, reused=reused, failed=cache.failed(state, dataset, paths),
                            images_per_second=0.0)


def encode_paths(encoder: Encoder, paths: Sequence[Path], kind: str = "pooled",
                 batch_size: int = config.EXTRACT_BATCH_SIZE) -> tuple[np.ndarray, list[tuple[Path, str]]]:
    """Encode images in memory (no cache) through the same loader and pipeline as extraction.

    The features are float16, exactly as the cache stores them, so a caption model sees at
    inference the same numbers it was trained on.

    Args:
        encoder: an ``encoders.Encoder``.
        paths: image files.
        kind: ``"pooled"`` or ``"grid"``.
        batch_size: images per CNN batch.

    Returns:
        ``(features, failures)``: float16 ``(n_ok, *row_shape)`` rows in the order of ``paths``
        with the unreadable images left out, and ``(path, reason)`` for each of those.
    """
    paths = [Path(p) for p in paths]
    chunks: list[np.ndarray] = []
    failures: list[tuple[Path, str]] = []
    for batch in _run_pipeline(encoder, kind, paths, batch_size):
        chunks.append(batch.features)
        failures.extend((paths[i], reason) for i, reason in batch.failures)
    features = np.concatenate(chunks) if chunks else np.zeros((0, *encoder.feature_shape(kind)), FEATURE_DTYPE)
    return features, failures


# ------------------------------------------------------------------------------ extraction


def _extract_into(cache: FeatureCache, state: CacheState, encoder: Encoder, kind: str, todo: list[Todo],
                  batch_size: int, progress: bool) -> tuple[int, float]:
    """Run the pipeline over ``todo``, committing each batch as a shard. Returns (computed, images/s)."""
    from tqdm import tqdm

    computed, start = 0, time.perf_counter()
    with tqdm(total=len(todo), unit="img", desc=f"{encoder.name} {kind}", disable=not progress) as bar:
        for batch in _run_pipeline(encoder, kind, [item.path for item in todo], batch_size):
            failed = {i for i, _ in batch.failures}
            ok = [todo[i] for i in batch.indices if i not in failed]
            failures = {todo[i].relative: {"reason": reason, "signature": _as_list(todo[i].signature)}
                        for i, reason in batch.failures}
            cache.write_shard(state, batch.features, [item.relative for item in ok],
                              [item.signature for item in ok], failures)
            computed += len(ok)
            bar.update(len(batch.indices))
    elapsed = time.perf_counter() - start
    return computed, len(todo) / elapsed if elapsed > 0 else 0.0


def _run_pipeline(encoder: Encoder, kind: str, paths: list[Path], batch_size: int) -> Iterator[_Batch]:
    """Yield encoded batches in input order: parallel decode + resize, batch, prefetch, CNN."""
    if not paths:
        return
    dataset = image_batches(paths, encoder.input_size, batch_size)
    position = 0
    for pixels, ok, reasons in dataset:  # (batch, size, size, 3) uint8, (batch,), (batch,)
        count = int(pixels.shape[0])
        features = encoder.encode(pixels, kind)  # (batch, *row_shape) float16
        ok = ok.numpy()
        indices = np.arange(position, position + count)
        failures = [(int(i), reasons[j].numpy().decode("utf-8", "replace"))
                    for j, i in enumerate(indices) if not ok[j]]
        position += count
        yield _Batch(indices=indices, features=features[ok], failures=failures)


def image_batches(paths: Sequence[Path], size: int, batch_size: int):
    """A tf.data pipeline of ``(pixels uint8 (B, size, size, 3), ok bool (B,), reason string (B,))``.

    Decoding runs on tf.data's parallel threads through ``images.load_image``; an unreadable image
    yields zeros with ``ok=False`` and the loader's message, so it cannot stop the pipeline.

    Args:
        paths: image files, in the order the batches keep.
        size: square side the loader resizes to.
        batch_size: images per batch (the last may be smaller).

    Returns:
        A prefetching ``tf.data.Dataset``.
    """
    import tensorflow as tf

    from captioning.data import images  # looked up per call, so tests can slow the loader down

    def load(path_bytes):
        path = Path(path_bytes.decode("utf-8"))
        try:
            return images.load_image(path, size), np.bool_(True), np.bytes_(b"")
        except Exception as error:  # noqa: BLE001 - any unreadable file is one failed row, not a crash
            reason = str(error) or type(error).__name__
            return np.zeros((size, size, 3), np.uint8), np.bool_(False), np.bytes_(reason.encode("utf-8"))

    def load_tensor(path):
        pixels, ok, reason = tf.numpy_function(load, [path], (tf.uint8, tf.bool, tf.string), stateful=False)
        pixels.set_shape((size, size, 3))
        ok.set_shape(())
        reason.set_shape(())
        return pixels, ok, reason

    # Fixed parallelism with tf.data's autotuner off: on a 2-core machine the autotuner now and
    # then settles into a state where decoding and the CNN no longer overlap and extraction runs
    # at half speed (measured: 23 ms/photo instead of 11, in about one run in three). One decode
    # per core and two batches in flight keep the CNN fed without oversubscribing the cores.
    options = tf.data.Options()
    options.autotune.enabled = False
    return (tf.data.Dataset.from_tensor_slices([str(p) for p in paths])
            .map(load_tensor, num_parallel_calls=_DECODE_THREADS, deterministic=True)
            .batch(batch_size)
            .prefetch(_BATCHES_IN_FLIGHT)
            .with_options(options))


def _unique(paths) -> list[Path]:
    return list(dict.fromkeys(Path(p) for p in paths))


def _as_list(signature: Signature | None) -> list[int] | None:
    return None if signature is None else list(signature)
