"""Turning a step decoder into captions: greedy and beam search, batched over images.

Both searches call ``step_decoder.step(tokens (B,), state) -> (log_probs (B, V), new_state)`` once
per generated word for the whole batch (with beam search, every image's beams are stacked into that
one batch), so the decoder never re-reads the caption prefix. The vocabulary's special ids (PAD,
UNK, START, END) come from ``data.text``; PAD, UNK and START are masked to ``-inf``
at every step so they can never be generated, however much the model favours them.

``max_length`` is the caption length the bundle was trained with, counted with START and END (as
``text.choose_max_length`` counts it), so at most ``max_length - 1`` tokens are generated per
caption: the words and the END token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from captioning.data.text import END, PAD, START, UNK

# Ids that must never reach the text: masked out of every step's distribution.
BANNED_IDS = (PAD, UNK, START)

State = tuple[np.ndarray, ...]


class StepDecoder(Protocol):
    """What the searches need from a step decoder (``models.make_step_decoder``, ``inference.ensemble``)."""

    def initial_state(self, features: np.ndarray) -> State:
        """Decoder state for a batch of image features; every array is batch-first."""

    def step(self, tokens: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """Log-probabilities ``(B, V)`` of the next token and the new state."""


@dataclass(frozen=True)
class Hypothesis:
    """One finished caption: word ids (no START/END) and its scores.

    Attributes:
        tokens: generated word ids, without START and END.
        log_prob: sum of the log-probabilities of the generated tokens (END included).
        length: number of generated tokens, END included when the caption ended with it.
        score: ``log_prob / length``, the length-normalised score beam search ranks by.
    """

    tokens: tuple[int, ...]
    log_prob: float
    length: int

    @property
    def score(self) -> float:
        return self.log_prob / max(self.length, 1)


def max_steps(max_length: int) -> int:
    """Tokens generated at most per caption: everything after START, END included.

    Args:
        max_length: caption length counted with START and END.

    Returns:
        The step limit (at least 1).
    """
    if max_length < 2:
        raise ValueError(f"max_length counts START and END, so it must be >= 2, got {max_length}")
    return max_length - 1


def mask_banned(log_probs: np.ndarray, banned: Sequence[int] = BANNED_IDS) -> np.ndarray:
    """A float64 copy of ``log_probs`` with the banned ids set to ``-inf``.

    Args:
        log_probs: ``(B, V)`` next-token log-probabilities.
        banned: ids that must never be generated.

    Returns:
        ``(B, V)`` float64 log-probabilities.
    """
    masked = np.array(log_probs, dtype=np.float64)  # float64: sums over ~20 steps stay exact enough
    banned = [i for i in banned if i < masked.shape[1]]
    masked[:, banned] = -np.inf
    return masked


def reorder_state(state: State, rows: np.ndarray) -> State:
    """Select/repeat state rows (every state array is batch-first)."""
    return tuple(np.take(array, rows, axis=0) for array in state)


def check_batch(features: np.ndarray) -> int:
    """The batch size of ``features`` ``(B, ...)``; ValueError when it is not a non-empty batch."""
    if features.ndim < 2 or features.shape[0] == 0:
        raise ValueError(f"features must be a non-empty batch (B, ...), got shape {features.shape}")
    return features.shape[0]


def greedy_search(step_decoder: StepDecoder, features: np.ndarray, max_length: int,
                  end_id: int = END) -> list[list[int]]:
    """The most likely next word at every step, for a batch of images.

    Args:
        step_decoder: object with ``initial_state`` and ``step`` (see module docstring).
        features: ``(B, ...)`` image features, as the bundle's decoder expects them.
        max_length: caption length counted with START and END.
        end_id: the END token id.

    Returns:
        One list of word ids per image (no START/END), in input order.
    """
    batch = check_batch(features)
    state = step_decoder.initial_state(features)
    tokens = np.full((batch,), START, dtype=np.int32)
    done = np.zeros((batch,), dtype=bool)
    captions: list[list[int]] = [[] for _ in range(batch)]
    for _ in range(max_steps(max_length)):
        log_probs, state = step_decoder.step(tokens, state)
        tokens = np.argmax(mask_banned(log_probs), axis=1).astype(np.int32)  # (B,)
        for i in np.flatnonzero(~done):
            if tokens[i] == end_id:
                done[i] = True
            else:
                captions[i].append(int(tokens[i]))
        if done.all():  # every image has ended: no need to run the decoder any further
            break
    return captions


def beam_search(step_decoder: StepDecoder, features: np.ndarray, beam_size: int, max_length: int,
                end_id: int = END) -> list[list[int]]:
    """Length-normalised beam search, batched over images; the best caption per image.

    Args:
        step_decoder: object with ``initial_state`` and ``step`` (see module docstring).
        features: ``(B, ...)`` image features.
        beam_size: hypotheses kept per image; 1 gives exactly the greedy result.
        max_length: caption length counted with START and END.
        end_id: the END token id.

    Returns:
        One list of word ids per image (no START/END), in input order.
    """
    return [list(best[0].tokens) for best in
            beam_search_hypotheses(step_decoder, features, beam_size, max_length, end_id)]


def beam_search_hypotheses(step_decoder: StepDecoder, features: np.ndarray, beam_size: int, max_length: int,
                           end_id: int = END) -> list[list[Hypothesis]]:
    """Beam search returning every finished hypothesis per image, best first.

    Each step, every live beam is extended by every allowed token; per image the ``k`` best
    extensions by summed log-probability are kept, where ``k`` is the number of live beams (all
    candidates of a step have the same length, so this equals ranking by the normalised score).
    An extension ending in END is set aside as finished and its slot retires, so an image is done
    when all ``beam_size`` hypotheses have finished; the search stops when every image is done or
    after ``max_length - 1`` tokens (live beams then finish without END). The final ranking is by
    ``log_prob / length`` (length counting END). Beams are distinct: the search starts from a
    single beam per image and each kept extension is a distinct (parent, token) pair.

    Args:
        step_decoder: object with ``initial_state`` and ``step`` (see module docstring).
        features: ``(B, ...)`` image features.
        beam_size: hypotheses kept per image (>= 1).
        max_length: caption length counted with START and END.
        end_id: the END token id.

    Returns:
        Per image, its finished hypotheses sorted by normalised score, best first (never empty).
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    batch, k = check_batch(features), beam_size
    state = reorder_state(step_decoder.initial_state(features), np.repeat(np.arange(batch), k))
    # Only the first slot of each image is live at the start: identical copies would otherwise
    # fill the beam with duplicates of the same sequence.
    scores = np.full((batch, k), -np.inf)  # (batch, beam) summed log-probs, -inf = retired
    scores[:, 0] = 0.0
    sequences: list[list[tuple[int, ...]]] = [[()] * k for _ in range(batch)]
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    tokens = np.full((batch * k,), START, dtype=np.int32)
    steps = max_steps(max_length)
    for step in range(steps):
        log_probs, state = step_decoder.step(tokens, state)
        vocab = log_probs.shape[1]
        candidates = scores[:, :, None] + mask_banned(log_probs).reshape(batch, k, vocab)
        flat = candidates.reshape(batch, k * vocab)  # (batch, beam * vocab)
        best = top_k(flat, k)  # (batch, k) candidate indices, best first
        new_scores = np.full((batch, k), -np.inf)
        parents = np.repeat(np.arange(batch) * k, k).reshape(batch, k)  # dead slots keep a row
        tokens = np.full((batch, k), end_id, dtype=np.int32)
        new_sequences: list[list[tuple[int, ...]]] = [[()] * k for _ in range(batch)]
        for i in range(batch):
            slot = 0
            # Slots not yet retired by a finished hypothesis: the shrinking beam of this image.
            for index in best[i, :k - len(finished[i])]:
                score = flat[i, index]
                if not np.isfinite(score):
                    break
                parent, token = divmod(int(index), vocab)
                sequence = sequences[i][parent]
                if token == end_id:
                    finished[i].append(Hypothesis(sequence, float(score), step + 1))
                    continue
                new_scores[i, slot], parents[i, slot], tokens[i, slot] = score, i * k + parent, token
                new_sequences[i][slot] = sequence + (token,)
                slot += 1
        scores, sequences, tokens = new_scores, new_sequences, tokens.reshape(-1)
        if step == steps - 1 or not np.isfinite(scores).any():  # limit, or every image done
            break
        state = reorder_state(state, parents.reshape(-1))
    for i in range(batch):  # beams still live at the length limit finish without END
        for live in np.flatnonzero(np.isfinite(scores[i])):
            sequence = sequences[i][live]
            finished[i].append(Hypothesis(sequence, float(scores[i, live]), len(sequence)))
    return [rank_hypotheses(hypotheses) for hypotheses in finished]


def top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest values per row, best first, ties broken by the lower index."""
    k = min(k, values.shape[1])
    # argpartition is linear in the vocabulary; only the k winners are then sorted.
    top = np.argpartition(-values, k - 1, axis=1)[:, :k]  # (batch, k) unordered
    top.sort(axis=1)  # ascending index, so the stable sort below breaks ties by the lower index
    order = np.argsort(-np.take_along_axis(values, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def rank_hypotheses(hypotheses: list[Hypothesis]) -> list[Hypothesis]:
    """Best normalised score first; identical sequences (possible only on exact ties) once."""
    return unique_ranked(hypotheses, lambda h: h.score) or [Hypothesis((), 0.0, 0)]


def unique_ranked(hypotheses: list[Hypothesis], score: Callable[[Hypothesis], float]) -> list[Hypothesis]:
    """``hypotheses`` best ``score(h)`` first (stable on ties), each token sequence once; may be empty."""
    unique: dict[tuple[int, ...], Hypothesis] = {}
    for hypothesis in sorted(hypotheses, key=lambda h: -score(h)):
        unique.setdefault(hypothesis.tokens, hypothesis)
    return list(unique.values())
