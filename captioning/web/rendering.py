"""The PNGs a result links to, rendered on first request into the store's private folder.

Rendering waits until a PNG is asked for: an API client that only wants the captions never pays
for Matplotlib. Both PNGs come from the tool's own writers (``render.captioned_image.write_captioned_image`` and
``render.attention_map.write_attention_map``), so the page shows exactly what ``caption`` writes.
Matplotlib is not thread-safe, so figures are drawn one at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from captioning.web.store import ResultStore, StoredUpload

_MATPLOTLIB = threading.Lock()


def captioned_png(store: ResultStore, entry: StoredUpload) -> Path:
    """The photo with its caption beneath it, as ``caption`` writes it.

    Raises:
        CaptioningError: the upload can no longer be read or the PNG not written.
    """
    from captioning.render.captioned_image import write_captioned_image

    return _render(store, entry, "captioned",
                   lambda target: write_captioned_image(entry.path, entry.caption or "", target))


def attention_png(store: ResultStore, entry: StoredUpload, words: Sequence[str],
                  alphas: np.ndarray) -> Path:
    """One panel per word showing where the decoder looked, as ``caption --attention-map`` writes it."""
    from captioning.render.attention_map import write_attention_map

    return _render(store, entry, "attention",
                   lambda target: write_attention_map(entry.path, words, alphas, target))


def _render(store: ResultStore, entry: StoredUpload, kind: str, write) -> Path:
    target = entry.output(kind)
    with entry.lock:  # two requests for the same PNG render it once
        if not target.is_file():
            with _MATPLOTLIB:
                write(target)
            store.grew(entry, target.stat().st_size)
    return target
