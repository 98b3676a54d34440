"""Greedy and beam search against brute force on tiny fake step decoders (no TensorFlow)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from captioning.data.text import END, PAD, START, UNK
from captioning.inference import search as decoding

VOCAB = 6  # PAD, UNK, START, END and two words (4, 5)
WORDS = (4, 5)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class TableDecoder:
    """Next-token log-probs from the last two tokens and an image bias (a second-order table).

    ``table[last]`` scores the next token from the token fed in; ``second[before_last]`` from the
    one before it, which only the state remembers. State: the per-image bias ``(B, V)`` and the
    token before last ``(B, 1)``, batch-first, so a search that reorders state rows wrongly after
    pruning gets wrong scores.
    """

    def __init__(self, table: np.ndarray, second: np.ndarray | None = None):
        self.table = table
        self.second = np.zeros_like(table) if second is None else second
        self.batch_sizes: list[int] = []

    def initial_state(self, features):
        features = np.asarray(features, dtype=np.float64)
        return (features, np.full((len(features), 1), START))

    def step(self, tokens, state):
        bias, before = state
        assert tokens.shape == (bias.shape[0],)
        self.batch_sizes.append(len(tokens))
        logits = self.table[tokens] + self.second[before[:, 0]] + bias
        return log_softmax(logits), (bias, tokens[:, None].copy())

    def log_prob(self, bias: np.ndarray, sequence: tuple[int, ...]) -> float:
        """Summed log-probability of ``sequence`` (generated tokens) for one image."""
        total, before, last = 0.0, START, START
        for token in sequence:
            total += log_softmax(self.table[last] + self.second[before] + bias)[token]
            before, last = last, token
        return float(total)


def brute_force_best(decoder: TableDecoder, bias: np.ndarray, max_length: int):
    """Every caption the search may produce, scored by log_prob / length; the best one."""
    steps = max_length - 1
    candidates = []
    for words in range(steps):  # words then END
        candidates += [seq + (END,) for seq in itertools.product(WORDS, repeat=words)]
    candidates += list(itertools.product(WORDS, repeat=steps))  # cut off at the limit, no END
    scored = [(decoder.log_prob(bias, seq) / len(seq), seq) for seq in candidates]
    score, best = max(scored)
    return [t for t in best if t != END], score


def random_decoder(seed: int, sharpness: float = 2.0) -> TableDecoder:
    rng = np.random.default_rng(seed)
    return TableDecoder(*rng.normal(scale=sharpness, size=(2, VOCAB, VOCAB)))


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("max_length", [3, 4, 5])
def test_wide_beam_finds_the_brute_force_optimum(seed, max_length):
    decoder = random_decoder(seed)
    biases = np.random.default_rng(100 + seed).normal(size=(3, VOCAB))
    # Wide enough to keep every possible prefix: the search must then be exact.
    hypotheses = decoding.beam_search_hypotheses(decoder, biases, beam_size=40, max_length=max_length)
    for bias, ranked in zip(biases, hypotheses, strict=True):
        expected, expected_score = brute_force_best(decoder, bias, max_length)
        assert list(ranked[0].tokens) == expected
        assert ranked[0].score == pytest.approx(expected_score)


def test_beam_of_three_escapes_the_garden_path_that_greedy_takes():
    # After START, word 4 looks best (0.6) but every continuation of it is poor; word 5 (0.4)
    # leads to END with certainty. Greedy takes 4; beam 3 finds [5] with the better average.
    probs = np.full((VOCAB, VOCAB), 1e-9)
    probs[START, [4, 5]] = [0.6, 0.4]
    probs[4, [4, 5, END]] = [1 / 3, 1 / 3, 1 / 3]
    probs[5, END] = 1.0
    decoder = TableDecoder(np.log(probs))
    features = np.zeros((1, VOCAB))
    assert decoding.greedy_search(decoder, features, max_length=4)[0][0] == 4
    assert decoding.beam_search(decoder, features, beam_size=3, max_length=4) == [[5]]
    expected, _ = brute_force_best(decoder, features[0], 4)
    assert expected == [5]


def test_length_normalisation_prefers_the_better_average_over_the_shorter_caption():
    # [END] right away has log p = log 0.3 (average -1.20); [4, END] has log 0.7 + log 0.9
    # (sum -0.46, average -0.23): unnormalised, a longer caption could never win this.
    probs = np.full((VOCAB, VOCAB), 1e-9)
    probs[START, [END, 4]] = [0.3, 0.7]
    probs[4, [END, 5]] = [0.9, 0.1]
    probs[5, END] = 1.0
    decoder = TableDecoder(np.log(probs))
    best = decoding.beam_search_hypotheses(decoder, np.zeros((1, VOCAB)), beam_size=3, max_length=5)[0]
    assert list(best[0].tokens) == [4]
    assert best[0].length == 2  # the END token counts
    assert best[0].score == pytest.approx((np.log(0.7) + np.log(0.9)) / 2)


@pytest.mark.parametrize("seed", range(10))
def test_beam_of_one_equals_greedy(seed):
    decoder = random_decoder(seed, sharpness=3.0)
    features = np.random.default_rng(seed).normal(size=(5, VOCAB))
    for max_length in (2, 4, 7):
        assert decoding.beam_search(decoder, features, beam_size=1, max_length=max_length) == \
            decoding.greedy_search(decoder, features, max_length=max_length)


def test_special_tokens_never_generated_even_when_the_model_favours_them():
    table = np.zeros((VOCAB, VOCAB))
    table[:, [PAD, UNK, START]] = 50.0  # nearly all probability on the banned ids
    table[:, 4] = 1.0
    table[4, END] = 2.0
    decoder = TableDecoder(table)
    features = np.zeros((2, VOCAB))
    for beam_size in (1, 2, 3, 5):
        results = decoding.beam_search_hypotheses(decoder, features, beam_size, max_length=6)
        for ranked in results:
            for hypothesis in ranked:
                assert not {PAD, UNK, START, END} & set(hypothesis.tokens)
    greedy = decoding.greedy_search(decoder, features, max_length=6)
    assert greedy == [[4], [4]]


@pytest.mark.parametrize("beam_size", [1, 3, 4])
def test_batched_results_equal_one_image_at_a_time(beam_size):
    decoder = random_decoder(7, sharpness=1.5)
    features = np.random.default_rng(3).normal(scale=2.0, size=(6, VOCAB))
    batched = decoding.beam_search_hypotheses(decoder, features, beam_size, max_length=6)
    for i in range(len(features)):
        alone = decoding.beam_search_hypotheses(decoder, features[i:i + 1], beam_size, max_length=6)[0]
        assert [h.tokens for h in alone] == [h.tokens for h in batched[i]]
        assert [h.score for h in alone] == pytest.approx([h.score for h in batched[i]])
    assert decoding.greedy_search(decoder, features, 6) == \
        [decoding.greedy_search(decoder, features[i:i + 1], 6)[0] for i in range(len(features))]


def test_all_beams_go_through_one_step_call_and_search_stops_when_all_images_end():
    probs = np.full((VOCAB, VOCAB), 1e-9)
    probs[START, [4, 5, END]] = [0.5, 0.3, 0.2]
    probs[4, END] = probs[5, END] = 1.0
    decoder = TableDecoder(np.log(probs))
    decoding.beam_search(decoder, np.zeros((4, VOCAB)), beam_size=3, max_length=30)
    assert decoder.batch_sizes == [12, 12]  # 4 images x 3 beams per call, done after two steps
    decoder.batch_sizes.clear()
    decoding.greedy_search(decoder, np.zeros((4, VOCAB)), max_length=30)
    assert decoder.batch_sizes == [4, 4]


def test_beams_are_distinct_even_when_scores_tie():
    decoder = TableDecoder(np.zeros((VOCAB, VOCAB)))  # every token equally likely: all ties
    ranked = decoding.beam_search_hypotheses(decoder, np.zeros((2, VOCAB)), beam_size=5, max_length=5)
    for hypotheses in ranked:
        sequences = [h.tokens for h in hypotheses]
        assert len(sequences) == len(set(sequences)) == 5


def test_length_limit_ends_captions_without_end():
    probs = np.full((VOCAB, VOCAB), 1e-9)
    probs[:, 4] = 1.0  # never ends
    decoder = TableDecoder(np.log(probs))
    assert decoding.beam_search(decoder, np.zeros((1, VOCAB)), 3, max_length=5) == [[4, 4, 4, 4]]
    assert decoding.greedy_search(decoder, np.zeros((1, VOCAB)), max_length=5) == [[4, 4, 4, 4]]


def test_bad_arguments_are_rejected():
    decoder = random_decoder(0)
    with pytest.raises(ValueError, match="beam_size"):
        decoding.beam_search(decoder, np.zeros((1, VOCAB)), beam_size=0, max_length=5)
    with pytest.raises(ValueError, match="max_length"):
        decoding.greedy_search(decoder, np.zeros((1, VOCAB)), max_length=1)
    with pytest.raises(ValueError, match="non-empty"):
        decoding.beam_search(decoder, np.zeros((0, VOCAB)), beam_size=3, max_length=5)
