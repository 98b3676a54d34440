"""Constrained beam search against brute force and against the ordinary beam search (no TensorFlow)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from captioning.data.text import END as END_ID
from captioning.data.text import START as START_ID
from captioning.inference import search
from captioning.inference.constrained_search import MAX_CONSTRAINTS, constrained_beam_search
from captioning.inference.repetition import RepetitionBlocking

VOCAB = 7  # PAD, UNK, START, END and three words (4, 5, 6)
WORDS = (4, 5, 6)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class SecondOrderDecoder:
    """Next-token log-probs from the last two tokens plus a per-image bias.

    The token before last lives only in the state (batch-first), so a search that reorders state
    rows wrongly between steps gets wrong scores; rows never interact, as in a real decoder.
    """

    def __init__(self, seed: int, sharpness: float = 2.0):
        rng = np.random.default_rng(seed)
        self.table, self.second = rng.normal(scale=sharpness, size=(2, VOCAB, VOCAB))

    def initial_state(self, features):
        features = np.asarray(features, dtype=np.float64)
        return (features, np.full((len(features), 1), START_ID))

    def step(self, tokens, state):
        bias, before = state
        assert tokens.shape == (bias.shape[0],)
        logits = self.table[tokens] + self.second[before[:, 0]] + bias
        return log_softmax(logits), (bias, tokens[:, None].copy())

    def log_prob(self, bias: np.ndarray, sequence: tuple[int, ...]) -> float:
        total, before, last = 0.0, START_ID, START_ID
        for token in sequence:
            total += log_softmax(self.table[last] + self.second[before] + bias)[token]
            before, last = last, token
        return float(total)


def brute_force_best(decoder, bias, max_length: int, constraints) -> tuple[list[int], float] | None:
    """The best caption (by log_prob / length) that meets every constraint, or None."""
    steps = max_length - 1
    candidates = [seq + (END_ID,) for n in range(steps) for seq in itertools.product(WORDS, repeat=n)]
    candidates += list(itertools.product(WORDS, repeat=steps))  # cut off at the limit, no END
    scored = [(decoder.log_prob(bias, seq) / len(seq), seq) for seq in candidates
              if all(any(t in alternatives for t in seq) for alternatives in constraints)]
    if not scored:
        return None
    score, best = max(scored)
    return [t for t in best if t != END_ID], score


def biases(seed: int, count: int) -> np.ndarray:
    return np.random.default_rng(1000 + seed).normal(size=(count, VOCAB))


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("beam_size", [1, 2, 3, 5])
def test_without_constraints_it_is_exactly_the_ordinary_beam_search(seed, beam_size):
    decoder = SecondOrderDecoder(seed)
    features = biases(seed, 4)
    for max_length in (2, 4, 8):
        expected = search.beam_search_hypotheses(decoder, features, beam_size, max_length)
        found = constrained_beam_search(decoder, features, [[]] * 4, beam_size, max_length)
        assert found == expected  # every hypothesis, its log-prob and length, in the same order


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("constraints", [[{6}], [{5, 6}], [{6}, {4}], [{5}, {6}, {4}]])
def test_a_wide_beam_finds_the_best_caption_that_meets_the_constraints(seed, constraints):
    decoder = SecondOrderDecoder(seed)
    features = biases(seed, 3)
    max_length = 5  # 4 steps: wide enough a beam keeps every prefix, so the search is exact
    found = constrained_beam_search(decoder, features, [constraints] * 3, beam_size=81,
                                    max_length=max_length)
    for bias, ranked in zip(features, found, strict=True):
        expected, expected_score = brute_force_best(decoder, bias, max_length, constraints)
        assert list(ranked[0].tokens) == expected
        assert ranked[0].score == pytest.approx(expected_score)


@pytest.mark.parametrize("seed", range(20))
def test_every_caption_meets_its_constraints_whenever_the_length_allows(seed):
    rng = np.random.default_rng(seed)
    decoder = SecondOrderDecoder(seed, sharpness=4.0)  # peaked: the decoder avoids some words
    features = biases(seed, 6)
    constraints = [[set(rng.choice(WORDS, size=rng.integers(1, 3), replace=False).tolist())
                    for _ in range(rng.integers(0, MAX_CONSTRAINTS + 1))] for _ in range(6)]
    for max_length in (4, 6, 10):  # >= constraints + 1 steps: a caption that meets them fits
        found = constrained_beam_search(decoder, features, constraints, beam_size=2, max_length=max_length)
        for ranked, wanted in zip(found, constraints, strict=True):
            assert ranked, "no caption although one that meets the constraints fits"
            for hypothesis in ranked:
                assert len(hypothesis.tokens) <= max_length - 1
                for alternatives in wanted:
                    assert set(hypothesis.tokens) & alternatives


def test_no_caption_when_the_constraints_cannot_fit():
    decoder = SecondOrderDecoder(0)
    # Three constraints need three words, but max_length 3 leaves room for two tokens.
    found = constrained_beam_search(decoder, biases(0, 1), [[{4}, {5}, {6}]], beam_size=3, max_length=3)
    assert found == [[]]


@pytest.mark.parametrize("seed", range(6))
def test_a_batch_gives_what_each_image_gets_alone(seed):
    rng = np.random.default_rng(seed)
    decoder = SecondOrderDecoder(seed)
    features = biases(seed, 5)
    constraints = [[], [{6}], [{4}, {5, 6}], [], [{5}]]
    for blocking in (None, RepetitionBlocking(content=np.isin(np.arange(VOCAB), [5, 6]), ngram=2)):
        batched = constrained_beam_search(decoder, features, constraints, beam_size=3, max_length=7,
                                          blocking=blocking)
        for i in rng.permutation(5):
            alone = constrained_beam_search(decoder, features[i:i + 1], [constraints[i]], beam_size=3,
                                            max_length=7, blocking=blocking)
            assert alone[0] == batched[i]


def test_a_constraint_met_by_a_word_the_decoder_never_picks_by_itself():
    # After START the decoder wants 4 then END; word 6 is almost never likely. Forced, the best
    # caption with 6 in it is found and ranked by its own average log-probability.
    probs = np.full((VOCAB, VOCAB), 1e-6)
    probs[START_ID, [4, 5, 6]] = [0.9, 0.09, 0.01]
    probs[4, [END_ID, 6]] = [0.99, 0.01]
    probs[5, END_ID] = 1.0
    probs[6, [END_ID, 4]] = [0.5, 0.5]
    decoder = SecondOrderDecoder(0)
    decoder.table, decoder.second = np.log(probs / probs.sum(axis=1, keepdims=True)), np.zeros((VOCAB, VOCAB))
    features = np.zeros((1, VOCAB))
    assert search.beam_search(decoder, features, beam_size=3, max_length=5) == [[4]]
    found = constrained_beam_search(decoder, features, [[{6}]], beam_size=3, max_length=5)[0]
    assert found and all(6 in h.tokens for h in found)
    # A beam wide enough for every prefix finds the brute-force best: 4 6 4 (average -1.35).
    widest = constrained_beam_search(decoder, features, [[{6}]], beam_size=27, max_length=5)[0]
    expected, _ = brute_force_best(decoder, features[0], 5, [{6}])
    assert list(widest[0].tokens) == expected == [4, 6, 4]


def test_disjunctive_constraint_is_met_by_any_of_its_words():
    decoder = SecondOrderDecoder(3)
    found = constrained_beam_search(decoder, biases(3, 4), [[{5, 6}]] * 4, beam_size=4, max_length=6)
    assert all({5, 6} & set(h.tokens) for ranked in found for h in ranked)
    assert {t for ranked in found for h in ranked for t in h.tokens if t in (5, 6)} == {5, 6}


@pytest.mark.parametrize("seed", range(10))
def test_blocking_bars_repeated_content_words_and_trigrams(seed):
    decoder = SecondOrderDecoder(seed, sharpness=3.0)
    features = biases(seed, 4)
    content = np.isin(np.arange(VOCAB), [6])  # 6 is a content word; 4 and 5 may repeat
    blocking = RepetitionBlocking(content=content, ngram=3)
    found = constrained_beam_search(decoder, features, [[], [{6}], [{4}], []], beam_size=3,
                                    max_length=12, blocking=blocking)
    for ranked in found:
        assert ranked
        for hypothesis in ranked:
            tokens = hypothesis.tokens
            assert tokens.count(6) <= 1
            trigrams = [tokens[i:i + 3] for i in range(len(tokens) - 2)]
            assert len(trigrams) == len(set(trigrams))


def test_blocking_changes_nothing_when_nothing_repeats():
    decoder = SecondOrderDecoder(1)
    features = biases(1, 3)
    plain = constrained_beam_search(decoder, features, [[]] * 3, beam_size=3, max_length=3)
    blocked = constrained_beam_search(decoder, features, [[]] * 3, beam_size=3, max_length=3,
                                      blocking=RepetitionBlocking(content=np.zeros(VOCAB, bool)))
    assert blocked == plain  # two tokens at most: no trigram, no content word


def test_length_alpha_reranks_finished_captions():
    decoder = SecondOrderDecoder(5)
    features = biases(5, 3)
    plain = constrained_beam_search(decoder, features, [[]] * 3, beam_size=5, max_length=8)
    for alpha in (0.0, 0.5, 2.0):
        ranked = constrained_beam_search(decoder, features, [[]] * 3, beam_size=5, max_length=8,
                                         length_alpha=alpha)
        for mine, theirs in zip(ranked, plain, strict=True):
            assert sorted(mine, key=lambda h: h.tokens) == sorted(theirs, key=lambda h: h.tokens)
            keys = [h.log_prob / h.length ** alpha for h in mine]
            assert keys == sorted(keys, reverse=True)


@pytest.mark.parametrize("bad", [[[{4}]], [[set()]], [[{4}, {5}, {6}, {4}]], [[{99}]]])
def test_bad_constraints_are_refused(bad):
    with pytest.raises(ValueError):
        constrained_beam_search(SecondOrderDecoder(0), biases(0, 1) if len(bad) == 1 else biases(0, 2),
                                bad if bad != [[{4}]] else [[{4}], [{5}]], beam_size=2, max_length=4)


def test_content_words_are_the_vocabulary_less_function_words_and_colours():
    from captioning.data.text import RESERVED_TOKENS, Vocabulary

    vocab = Vocabulary([*RESERVED_TOKENS, "a", "dog", "in", "red", "shirt", "s", "couch"])
    blocking = RepetitionBlocking.for_vocabulary(vocab)
    assert [vocab.words[i] for i in np.flatnonzero(blocking.content)] == ["dog", "shirt", "couch"]
    couch, a, in_ = vocab.id_of("couch"), vocab.id_of("a"), vocab.id_of("in")
    # "a couch in a couch": after "a couch in a", the couch may not come again.
    assert blocking.banned((a, couch, in_, a)) == [couch]
    # Function words repeat freely, but "a in a in" then "a" would repeat the trigram "a in a".
    assert blocking.banned((a, in_, a, in_)) == [a]
