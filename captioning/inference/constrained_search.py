"""Constrained beam search: captions that must contain given words (Anderson et al. 2017).

"Guided Open Vocabulary Image Captioning with Constrained Beam Search" (arXiv 1612.00576) makes a
caption include words the decoder would not choose by itself, such as an object an image
classifier is sure of. Each constraint is *disjunctive*: a set of token ids, any one of which
satisfies it ("cat", "cats" or "kitten"). With ``C`` constraints the search runs a finite-state
machine over the ``2**C`` subsets of satisfied constraints and keeps a beam of ``beam_size``
hypotheses in each state; a word moves a hypothesis from state ``s`` to ``s | bits(word)``, so a
state's beam is filled from its own beam and from the states below it. Only the final state (all
constraints met) may end a caption (END is barred elsewhere), and only it retires slots as
captions finish, exactly as ``search.beam_search_hypotheses`` does; an image is done when its
final state has ``beam_size`` finished captions. At the length limit the final state's live beams
finish without END; if no hypothesis reached the final state, the image gets no result and the
caller keeps its unconstrained caption.

With no constraints there is one state and the search is step for step the ordinary beam search
(same ranking, ties and results; ``tests/test_constrained_search.py`` checks it). Images of one
batch may have different numbers of constraints (0 to ``MAX_CONSTRAINTS``); their rows are
stacked into one ``step`` call per word as in the ordinary search: ``batch * 2**C * beam_size``
rows, ``C`` the largest count in the batch.

Optional, independent of the constraints: ``blocking`` (``RepetitionBlocking``) bars a word that
would repeat a content word or a trigram already in the hypothesis, and ``length_alpha`` ranks
finished captions by ``log_prob / length ** alpha`` (1: the ordinary normalisation).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from captioning import config
from captioning.data.text import END, START
from captioning.inference.repetition import RepetitionBlocking
from captioning.inference.search import (
    Hypothesis,
    StepDecoder,
    check_batch,
    mask_banned,
    max_steps,
    reorder_state,
    top_k,
    unique_ranked,
)

MAX_CONSTRAINTS = 3  # 8 states: each costs a beam of decoder rows per image

# One image's constraints: each a set of token ids, any of which satisfies it.
Constraints = Sequence[Collection[int]]


def constrained_beam_search(step_decoder: StepDecoder, features: np.ndarray,
                            constraints: Sequence[Constraints],
                            beam_size: int = config.DEFAULT_BEAM_SIZE, max_length: int = 20,
                            end_id: int = END, *, blocking: RepetitionBlocking | None = None,
                            length_alpha: float = 1.0) -> list[list[Hypothesis]]:
    """Beam search whose captions contain, per image, one token of each of its constraints.

    Args:
        step_decoder: object with ``initial_state`` and ``step`` (``search.StepDecoder``).
        features: ``(B, ...)`` image features.
        constraints: per image, its constraints (0 to ``MAX_CONSTRAINTS``), each a non-empty
            collection of token ids.
        beam_size: hypotheses kept per constraint state and image (>= 1).
        max_length: caption length counted with START and END.
        end_id: the END token id.
        blocking: bar repeated content words and n-grams (None: allow them).
        length_alpha: finished captions rank by ``log_prob / length ** length_alpha``.

    Returns:
        Per image, the finished hypotheses that satisfy all its constraints, best first; empty
        when none was found within ``max_length``.
    """
    batch, k = check_batch(features), beam_size
    if k < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    if len(constraints) != batch:
        raise ValueError(f"got constraints for {len(constraints)} images but features for {batch}")
    counts = [len(image) for image in constraints]
    if max(counts) > MAX_CONSTRAINTS or any(len(c) == 0 for image in constraints for c in image):
        raise ValueError(f"each image takes at most {MAX_CONSTRAINTS} constraints, none of them empty")
    states = 1 << max(counts)
    final = np.array([(1 << count) - 1 for count in counts])  # (batch,) the all-met state
    width = states * k  # decoder rows per image
    state = reorder_state(step_decoder.initial_state(features), np.repeat(np.arange(batch), width))
    scores = np.full((batch, states, k), -np.inf)  # summed log-probs, -inf = empty or retired
    scores[:, 0, 0] = 0.0  # one live beam to start: copies would fill the beam with duplicates
    sequences: list[list[list[tuple[int, ...]]]] = [[[()] * k for _ in range(states)] for _ in range(batch)]
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    tokens = np.full((batch * width,), START, dtype=np.int32)
    bits = None
    steps = max_steps(max_length)
    for step in range(steps):
        log_probs, state = step_decoder.step(tokens, state)
        vocab = log_probs.shape[1]
        if bits is None:
            bits = _constraint_bits(constraints, vocab)  # (batch, vocab)
        word_log_probs = mask_banned(log_probs).reshape(batch, states, k, vocab)
        if blocking is not None:
            _block_repeats(word_log_probs, sequences, scores, blocking)
        candidates = scores[..., None] + word_log_probs  # (batch, states, k, vocab)
        arrives = np.arange(states)[None, :, None] | bits[:, None, :]  # (batch, states, vocab)
        new_scores = np.full((batch, states, k), -np.inf)
        parents = np.repeat(np.arange(batch) * width, width).reshape(batch, states, k)  # dead: any row
        tokens = np.full((batch, states, k), end_id, dtype=np.int32)
        new_sequences: list[list[list[tuple[int, ...]]]] = [[[()] * k for _ in range(states)]
                                                             for _ in range(batch)]
        for target in range(states):
            into = np.where((arrives == target)[:, :, None, :], candidates, -np.inf)
            into[target != final, :, :, end_id] = -np.inf  # only the all-met state may end
            flat = into.reshape(batch, width * vocab)
            best = top_k(flat, k)  # (batch, k) best first
            for i in range(batch):
                if target > final[i]:
                    continue  # a state this image's constraints cannot reach
                # The final state's beam shrinks as captions finish; the others stay full.
                limit = k - len(finished[i]) if target == final[i] else k
                slot = 0
                for index in best[i, :limit]:
                    score = flat[i, index]
                    if not np.isfinite(score):
                        break
                    row, token = divmod(int(index), vocab)  # row = source state * k + parent slot
                    sequence = sequences[i][row // k][row % k]
                    if token == end_id:
                        finished[i].append(Hypothesis(sequence, float(score), step + 1))
                        continue
                    new_scores[i, target, slot] = score
                    parents[i, target, slot] = i * width + row
                    tokens[i, target, slot] = token
                    new_sequences[i][target][slot] = sequence + (token,)
                    slot += 1
        for i in range(batch):
            if len(finished[i]) >= k:
                new_scores[i] = -np.inf  # done: its unfinished states cannot matter any more
        scores, sequences, tokens = new_scores, new_sequences, tokens.reshape(-1)
        if step == steps - 1 or not np.isfinite(scores).any():  # limit, or every image done
            break
        state = reorder_state(state, parents.reshape(-1))
    for i in range(batch):  # the final state's beams still live at the length limit finish without END
        for live in np.flatnonzero(np.isfinite(scores[i, final[i]])):
            sequence = sequences[i][final[i]][live]
            finished[i].append(Hypothesis(sequence, float(scores[i, final[i], live]), len(sequence)))
    return [unique_ranked(hypotheses, lambda h: h.log_prob / max(h.length, 1) ** length_alpha)
            for hypotheses in finished]


def _constraint_bits(constraints: Sequence[Constraints], vocab: int) -> np.ndarray:
    """``(batch, vocab)`` int: for each image and word, the bits of the constraints it meets."""
    bits = np.zeros((len(constraints), vocab), dtype=np.int64)
    for i, image in enumerate(constraints):
        for position, alternatives in enumerate(image):
            for token in alternatives:
                if not 0 <= token < vocab:
                    raise ValueError(f"constraint token {token} is outside the vocabulary (0..{vocab - 1})")
                bits[i, token] |= 1 << position
    return bits


def _block_repeats(log_probs: np.ndarray, sequences, scores: np.ndarray,
                   blocking: RepetitionBlocking) -> None:
    """Set ``log_probs[i, s, slot, w]`` to -inf for every word ``w`` barred after that hypothesis."""
    for i, s, slot in zip(*np.nonzero(np.isfinite(scores)), strict=True):
        banned = blocking.banned(sequences[i][s][slot])
        if banned:
            log_probs[i, s, slot, banned] = -np.inf
