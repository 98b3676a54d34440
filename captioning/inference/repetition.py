"""Repetition blocking for beam search: no content word and no trigram twice in a caption.

A decoder trained on short captions often loops ("a couch with a couch", "riding a motorcycle on
a motorcycle"). Barring, during the search, any word that would repeat a content word or complete
a trigram the caption already has removes those loops at no training cost (n-gram blocking as in
Paulus et al. 2017). Function words and colours may repeat: "a man in a black shirt and black
pants" is a good caption.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from captioning.data.text import RESERVED_TOKENS, Vocabulary

# Words a caption may repeat: articles, prepositions, conjunctions, pronouns, auxiliaries, counts,
# colours, and the "s" left of possessives written "man 's" in the training captions.
REPEATABLE_WORDS = frozenset("""
a an the and or but of in on at to into onto from with without by for over under near next behind
beside besides between across along around through down up out off while as than is are was were
be being been has have its his her their them they he she it this that these those who which what
whose there here front top side some one two three four five another other others each both all s
very white black red blue green yellow brown orange pink purple gray grey dark light
""".split())


@dataclass(frozen=True)
class RepetitionBlocking:
    """Which words may not repeat within a caption.

    Attributes:
        content: ``(V,)`` bool, True for words that may appear only once per caption.
        ngram: no n-gram of this length may occur twice (0 turns n-gram blocking off).
    """

    content: np.ndarray
    ngram: int = 3

    @classmethod
    def for_vocabulary(cls, vocab: Vocabulary, ngram: int = 3) -> RepetitionBlocking:
        """Every word of ``vocab`` but the reserved ids and ``REPEATABLE_WORDS`` is a content word."""
        content = np.array([index >= len(RESERVED_TOKENS) and word not in REPEATABLE_WORDS
                            for index, word in enumerate(vocab.words)], dtype=bool)
        return cls(content=content, ngram=ngram)

    def banned(self, sequence: tuple[int, ...]) -> list[int]:
        """The tokens that may not follow ``sequence`` (generated word ids, no START)."""
        banned = [token for token in sequence if token < len(self.content) and self.content[token]]
        n = self.ngram
        if n and len(sequence) >= n - 1:
            prefix = sequence[len(sequence) - (n - 1):]
            for start in range(len(sequence) - n + 1):
                if sequence[start:start + n - 1] == prefix:
                    banned.append(sequence[start + n - 1])
        return banned
