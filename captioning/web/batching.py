"""One worker thread in front of the Captioner: requests arriving together are captioned in one batch.

Every TensorFlow call of the server (encoder, beam search, attention re-runs) happens on the worker
thread, so the model is never used from two threads at once and needs no lock. Request handlers
decode their uploads themselves (Pillow, no TensorFlow, in parallel) and hand the pixels over as a
job; the worker takes the first job waiting, lets others join for ``wait_s`` (or until
``max_images``), and runs one encode and one beam search over all of them per beam size. Each
request gets its own slice of the results through a ``concurrent.futures.Future``. A batch that
fails fails only its own requests; the worker carries on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from captioning import config
from captioning.errors import CaptioningError

if TYPE_CHECKING:
    from captioning.inference.captioner import Captioner
    from captioning.inference.guided import UsedTag

log = logging.getLogger(__name__)


class ServerBusy(CaptioningError):
    """Too many images are already waiting; the client should try again shortly."""


class ServerStopping(CaptioningError):
    """The server is shutting down and takes no more work."""


@dataclass(frozen=True)
class Captioned:
    """The caption of one image: text, word ids (no START/END), length-normalised log-probability,
    and the classifier's tags behind it (``inference.guided.UsedTag``; None when tags were off)."""

    caption: str
    tokens: tuple[int, ...]
    score: float
    tags: tuple[UsedTag, ...] | None = None


@dataclass
class _CaptionJob:
    pixels: list[np.ndarray]  # each (size, size, 3) uint8, as images.load_image returns
    beam_size: int
    tags: bool = True
    future: Future = field(default_factory=Future)


@dataclass
class _AttentionJob:
    pixels: np.ndarray  # (size, size, 3) uint8
    tokens: tuple[int, ...]
    future: Future = field(default_factory=Future)


_STOP = object()


@dataclass
class BatchStats:
    """What the worker has done so far (read by /healthz, tests and the benchmark)."""

    requests: int = 0
    images: int = 0
    batches: int = 0
    largest_batch: int = 0
    failed_batches: int = 0


class CaptionBatcher:
    """Collects caption requests into batches and runs them on one worker thread.

    Args:
        captioner: a ``captioning.inference.captioner.Captioner`` (``encode``, ``decode_features_tagged``,
            ``vocab``, ``step_decoder``).
        max_images: most images captioned in one encode + beam search; 1 turns batching off.
        wait_s: how long the worker waits after the first request for others to join.
        max_queued_images: images allowed to wait; ``submit`` raises ``ServerBusy`` beyond.
    """

    def __init__(self, captioner: Captioner, max_images: int = config.ServeConfig.batch_max_images,
                 wait_s: float = config.ServeConfig.batch_wait_ms / 1000,
                 max_queued_images: int = config.ServeConfig.max_queued_images):
        if max_images < 1:
            raise ValueError(f"max_images must be >= 1, got {max_images}")
        self.captioner = captioner
        self.max_images = int(max_images)
        self.wait_s = float(wait_s)
        self.max_queued_images = int(max_queued_images)
        self.stats = BatchStats()
        self._queue: queue.Queue = queue.Queue()
        self._deferred: deque = deque()  # taken while collecting a batch, run after it
        self._queued_images = 0
        self._lock = threading.Lock()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Start the worker thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="captioning-worker", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Let the batch in progress finish, fail everything still waiting, end the worker."""
        with self._lock:
            self._stopping = True
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    @property
    def queued_images(self) -> int:
        with self._lock:
            return self._queued_images

    def warm_up(self, beam_size: int) -> None:
        """Caption blank batches of one and two images so no request pays for graph tracing.

        The model's graphs are traced per input shape until a second batch size makes
        TensorFlow trace one graph for any batch size (``reduce_retracing``); without this the
        first requests take seconds longer.
        """
        size = self.captioner.encoder.input_size
        for count in (1, 2):
            self.submit([np.zeros((size, size, 3), np.uint8)] * count, beam_size).result()
        with self._lock:
            self.stats = BatchStats()

    # ------------------------------------------------------------------------ submitting

    def submit(self, pixels: Sequence[np.ndarray], beam_size: int, tags: bool = True) -> Future:
        """Queue images for captioning.

        Args:
            pixels: one ``(size, size, 3)`` uint8 array per image.
            beam_size: beam width; 1 is greedy.
            tags: guide the captions with the classifier's tags when the model has them.

        Returns:
            A future of ``list[Captioned]``, one per image in order.

        Raises:
            ServerBusy: too many images already waiting.
            ServerStopping: the server is shutting down.
        """
        job = _CaptionJob(list(pixels), int(beam_size), bool(tags))
        self._enqueue(job, len(job.pixels))
        return job.future

    def submit_attention(self, pixels: np.ndarray, tokens: Sequence[int]) -> Future:
        """Queue one image's attention re-run for a caption it was given.

        Returns:
            A future of ``(len(tokens), P)`` float32 attention weights
            (``inference.attention_weights.attention_for_tokens``).
        """
        job = _AttentionJob(pixels, tuple(tokens))
        self._enqueue(job, 1)
        return job.future

    def _enqueue(self, job, images: int) -> None:
        with self._lock:
            if self._stopping:
                raise ServerStopping("the server is shutting down; try again when it is back")
            if self._queued_images + images > self.max_queued_images:
                raise ServerBusy(f"the server is busy ({self._queued_images} images waiting); "
                                 "try again in a few seconds")
            self._queued_images += images
        self._queue.put(job)

    # ------------------------------------------------------------------------ the worker

    def _run(self) -> None:
        while True:
            job = self._take(timeout=None)
            if job is _STOP:
                break
            if isinstance(job, _AttentionJob):
                self._run_attention(job)
                continue
            batch = self._collect(job)
            self._caption(batch)
        self._fail_waiting()

    def _take(self, timeout: float | None):
        """The next job: those set aside while collecting first, then the queue."""
        if self._deferred:
            return self._deferred.popleft()
        if timeout is None:
            return self._queue.get()
        return self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()

    def _collect(self, first: _CaptionJob) -> list[_CaptionJob]:
        """The first job plus the caption jobs that arrive within ``wait_s``, up to ``max_images``.

        Jobs already waiting join at once whatever the time; attention jobs and the stop signal
        are set aside and handled after this batch.
        """
        batch, images = [first], len(first.pixels)
        deadline = time.monotonic() + self.wait_s
        while images < self.max_images and not self._deferred:
            try:
                job = self._queue.get(timeout=max(deadline - time.monotonic(), 0)) \
                    if time.monotonic() < deadline else self._queue.get_nowait()
            except queue.Empty:
                break
            if not isinstance(job, _CaptionJob):
                self._deferred.append(job)
                break
            batch.append(job)
            images += len(job.pixels)
        return batch

    def _caption(self, batch: list[_CaptionJob]) -> None:
        self._dequeued(sum(len(job.pixels) for job in batch))
        # A request whose client went away was cancelled: skip it.
        live = [job for job in batch if job.future.set_running_or_notify_cancel()]
        by_search: dict[tuple[int, bool], list[_CaptionJob]] = {}
        for job in live:
            by_search.setdefault((job.beam_size, job.tags), []).append(job)
        for (beam_size, tags), jobs in by_search.items():
            try:
                captioned = self._caption_pixels([p for job in jobs for p in job.pixels], beam_size, tags)
            except Exception as error:  # noqa: BLE001 - a failed batch must not end the worker
                log.exception("captioning a batch of %d requests failed", len(jobs))
                with self._lock:
                    self.stats.failed_batches += 1
                for job in jobs:
                    job.future.set_exception(error)
                continue
            with self._lock:
                self.stats.requests += len(jobs)
            start = 0
            for job in jobs:
                job.future.set_result(captioned[start:start + len(job.pixels)])
                start += len(job.pixels)

    def _caption_pixels(self, pixels: list[np.ndarray], beam_size: int, tags: bool = True) -> list[Captioned]:
        """One encode + beam search per ``max_images`` chunk (one chunk unless a request is larger)."""
        results: list[Captioned] = []
        for start in range(0, len(pixels), self.max_images):
            chunk = np.stack(pixels[start:start + self.max_images])  # (B, size, size, 3)
            decoded = self.captioner.decode_features_tagged(self.captioner.encode(chunk), beam_size, tags=tags)
            results += [Captioned(self.captioner.vocab.decode(h.tokens), tuple(h.tokens), float(h.score), used)
                        for h, used in decoded]
            with self._lock:
                self.stats.batches += 1
                self.stats.images += len(chunk)
                self.stats.largest_batch = max(self.stats.largest_batch, len(chunk))
        return results

    def _run_attention(self, job: _AttentionJob) -> None:
        self._dequeued(1)
        if not job.future.set_running_or_notify_cancel():
            return
        try:
            from captioning.inference.attention_weights import attention_for_tokens

            features = self.captioner.encode(job.pixels[None])  # (1, 7, 7, C)
            job.future.set_result(attention_for_tokens(self.captioner.step_decoder, features, job.tokens))
        except Exception as error:  # noqa: BLE001 - reported to the one request that asked
            log.exception("attention map failed")
            job.future.set_exception(error)

    def _dequeued(self, images: int) -> None:
        with self._lock:
            self._queued_images -= images

    def _fail_waiting(self) -> None:
        """After stop: every job still waiting gets ``ServerStopping``."""
        while True:
            try:
                job = self._take(timeout=0)
            except queue.Empty:
                return
            if job is _STOP or not job.future.set_running_or_notify_cancel():
                continue
            job.future.set_exception(ServerStopping("the server shut down before this request was captioned"))
