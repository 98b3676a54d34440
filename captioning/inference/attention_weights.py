"""The attention behind each word of a caption: which grid cells the decoder looked at.

The caption is decoded as usual (same beam as the printed caption); its word sequence is then re-run
one step at a time with ``step_with_attention``, teacher-forced, to collect the attention weights
that produced each word. That is exact for any search and needs nothing from the search.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from captioning.data.text import START
from captioning.errors import BundleError
from captioning.inference.search import StepDecoder


def attention_for_tokens(step_decoder: StepDecoder, features: np.ndarray, token_ids: Sequence[int]) -> np.ndarray:
    """Attention weights behind each word of a given caption, for one image.

    Args:
        step_decoder: an attention step decoder (``initial_state``, ``step_with_attention``).
        features: one image's features with a batch axis of 1, e.g. ``(1, 9, 9, C)``.
        token_ids: the caption's word ids (no START/END), e.g. from ``beam_search``.

    Returns:
        ``(len(token_ids), P)`` float32; row ``t`` is the attention used while predicting word ``t``.
    """
    if not hasattr(step_decoder, "step_with_attention"):
        raise BundleError("--attention-map needs a model trained with --decoder attention; "
                          "this model has no attention")
    state = step_decoder.initial_state(features)
    previous = np.array([START], dtype=np.int32)
    rows = []
    for token in token_ids:
        _, state, alpha = step_decoder.step_with_attention(previous, state)
        rows.append(alpha[0])
        previous = np.array([token], dtype=np.int32)
    pixels = int(np.asarray(state[0]).shape[1])
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), pixels)


__all__ = ["attention_for_tokens"]
