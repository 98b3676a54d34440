"""CIDEr-D with a fixed idf equals the COCO toolkit's when both see the same references."""

from __future__ import annotations

import random

import pytest

from captioning.training.cider_reward import CiderD, ngram_counts, with_end_marker

REFERENCES = [
    ["a dog runs on the grass", "a brown dog running through a field", "the dog is running",
     "a dog plays outside", "brown dog on green grass"],
    ["a man rides a bike", "a person riding a bicycle down the street", "man on a bicycle",
     "a cyclist in the city", "a man is biking"],
    ["two children play in the water", "kids splashing in a pool", "two kids swim",
     "children playing in water", "two young children in a swimming pool"],
]
CANDIDATES = ["a dog runs through the grass", "a man riding a bicycle", "two kids play in the pool"]


def _toolkit_scores(candidates, references):
    from pycocoevalcap.cider.cider import Cider

    gts = {i: refs for i, refs in enumerate(references)}
    res = {i: [candidate] for i, candidate in enumerate(candidates)}
    mean, per_image = Cider().compute_score(gts, res)
    return mean, list(per_image)


def test_equals_the_coco_toolkit_on_the_same_references():
    scorer = CiderD([[r.split() for r in refs] for refs in REFERENCES])
    ours = [scorer.score(c.split(), scorer.prepare([r.split() for r in refs]))
            for c, refs in zip(CANDIDATES, REFERENCES, strict=True)]
    mean, theirs = _toolkit_scores(CANDIDATES, REFERENCES)
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12)
    assert sum(ours) / len(ours) == pytest.approx(mean)


def test_equals_the_toolkit_on_random_sentences():
    rng = random.Random(7)
    words = "a the dog man woman runs sits on in red blue grass street water ball".split()
    references = [[" ".join(rng.choices(words, k=rng.randint(3, 12))) for _ in range(5)]
                  for _ in range(20)]
    candidates = [" ".join(rng.choices(words, k=rng.randint(1, 14))) for _ in range(20)]
    scorer = CiderD([[r.split() for r in refs] for refs in references])
    ours = [scorer.score(c.split(), scorer.prepare([r.split() for r in refs]))
            for c, refs in zip(candidates, references, strict=True)]
    _, theirs = _toolkit_scores(candidates, references)
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12)


def test_idf_stays_fixed_whatever_is_scored():
    """The corpus sets the idf once: scoring one image alone gives the same number as in a batch."""
    corpus = [[r.split() for r in refs] for refs in REFERENCES]
    scorer = CiderD(corpus)
    prepared = scorer.prepare(corpus[0])
    alone = scorer.score(CANDIDATES[0].split(), prepared)
    again = scorer.score(CANDIDATES[0].split(), scorer.prepare(corpus[0]))
    assert alone == again > 0
    # A word no reference uses earns nothing; a perfect copy of a reference scores highest.
    assert scorer.score(["zebra"], prepared) == 0.0
    assert scorer.score(corpus[0][1], prepared) > alone


def test_end_marker_rewards_ending_like_the_references():
    corpus = [[with_end_marker(r.split()) for r in refs] for refs in REFERENCES]
    scorer = CiderD(corpus)
    prepared = scorer.prepare(corpus[0])
    ended = scorer.score(with_end_marker("the dog is running".split()), prepared)
    cut = scorer.score("the dog is running".split(), prepared)
    assert ended > cut


def test_ngram_counts():
    counts = ngram_counts("a b a".split())
    assert counts[("a",)] == 2 and counts[("a", "b")] == 1 and counts[("a", "b", "a")] == 1
    assert ("a", "b", "a", "x") not in counts
