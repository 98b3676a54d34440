"""CIDEr-D for training: document frequencies computed once, from the training references.

The COCO toolkit's scorer (``pycocoevalcap.cider``) recomputes n-gram document frequencies from
whatever references it is handed, so scoring one training batch at a time would give every batch
its own idf. Self-critical training needs one fixed idf for the whole run (Rennie et al. 2017;
ruotianluo/self-critical.pytorch precomputes it over the training references), and it scores tens
of thousands of sampled captions per epoch, so the references' tf-idf vectors are cooked once per
image and reused for every sample.

The arithmetic is the toolkit's CIDEr-D, term for term: n = 1..4, tf-idf vectors with
``idf = log(#images) - log(max(1, df))``, clipped numerator ``min(hyp, ref) * ref``, a Gaussian
length penalty (sigma 6) on the difference of the two sentences' lengths, the mean over n and over
references, times 10. ``tests/test_cider_reward.py`` checks equality with pycocoevalcap when both
see the same references. (The toolkit measures a sentence's "length" by its bigram count, a quirk
kept here so the numbers match.)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

NGRAM_ORDERS = 4
SIGMA = 6.0
END_MARKER = "<eos>"

Ngram = tuple[str, ...]


def ngram_counts(words: Sequence[str], orders: int = NGRAM_ORDERS) -> Counter:
    """Every n-gram of ``words`` for n = 1..orders with its count."""
    counts: Counter = Counter()
    for n in range(1, orders + 1):
        for start in range(len(words) - n + 1):
            counts[tuple(words[start:start + n])] += 1
    return counts


@dataclass(frozen=True)
class _Vector:
    """A sentence's tf-idf weights per n-gram order, their norms, and its length (bigram count)."""

    weights: tuple[dict[Ngram, float], ...]
    norms: tuple[float, ...]
    length: int


class CiderD:
    """CIDEr-D with a fixed idf.

    Args:
        corpus: every training image's references, each a list of word lists (already
            tokenised the way candidates will be). Document frequency counts the images whose
            references contain an n-gram.
        sigma: width of the length penalty.
    """

    def __init__(self, corpus: Sequence[Sequence[Sequence[str]]], sigma: float = SIGMA):
        if not corpus:
            raise ValueError("CIDEr-D needs at least one image's references for its idf")
        self.sigma = sigma
        frequency: Counter = Counter()
        for references in corpus:
            frequency.update({gram for words in references for gram in ngram_counts(words)})
        self._document_frequency = frequency
        self._log_images = math.log(float(len(corpus)))

    def prepare(self, references: Sequence[Sequence[str]]) -> list[_Vector]:
        """Cook one image's references once; pass the result to ``score`` for every candidate."""
        return [self._vector(ngram_counts(words)) for words in references]

    def score(self, candidate: Sequence[str], references: list[_Vector]) -> float:
        """CIDEr-D of one candidate against one image's prepared references (0..10 scale)."""
        if not references:
            raise ValueError("no references to score against")
        hypothesis = self._vector(ngram_counts(candidate))
        total = 0.0
        for reference in references:
            total += sum(self._similarity(hypothesis, reference))
        return total / NGRAM_ORDERS / len(references) * 10.0

    def _vector(self, counts: Counter) -> _Vector:
        weights: tuple[dict[Ngram, float], ...] = tuple({} for _ in range(NGRAM_ORDERS))
        squares = [0.0] * NGRAM_ORDERS
        length = 0
        for gram, count in counts.items():
            order = len(gram) - 1
            idf = self._log_images - math.log(max(1.0, self._document_frequency.get(gram, 0.0)))
            value = float(count) * idf
            weights[order][gram] = value
            squares[order] += value * value
            if order == 1:
                length += count
        return _Vector(weights, tuple(math.sqrt(s) for s in squares), length)

    def _similarity(self, hypothesis: _Vector, reference: _Vector) -> list[float]:
        delta = float(hypothesis.length - reference.length)
        penalty = math.exp(-(delta * delta) / (2 * self.sigma * self.sigma))
        values = []
        for order in range(NGRAM_ORDERS):
            ref_weights = reference.weights[order]
            value = 0.0
            for gram, weight in hypothesis.weights[order].items():
                ref_weight = ref_weights.get(gram, 0.0)
                value += min(weight, ref_weight) * ref_weight
            if hypothesis.norms[order] != 0 and reference.norms[order] != 0:
                value /= hypothesis.norms[order] * reference.norms[order]
            values.append(value * penalty)
        return values


def with_end_marker(words: Sequence[str]) -> list[str]:
    """The words followed by the end marker: rewarding the marker's n-grams teaches the model to
    end captions well (without it, SCST learns to cut captions short after "a man in a")."""
    return [*words, END_MARKER]


__all__ = ["CiderD", "END_MARKER", "ngram_counts", "with_end_marker"]
