"""From the encoder's ImageNet classifier to the tags a caption should name.

The classifier is the CNN's own last layer (``Encoder.classifier``): class probabilities are
``softmax(mean over the grid @ kernel + bias)``, computed from the features the caption is made
from, so no second CNN pass is needed. A tag's confidence is the summed probability of the classes
that carry it: 118 dog breeds, none of them sure alone, add up to a sure "dog". A tag is *confident*
at ``threshold`` or above and *usable* when the bundle's vocabulary has at least one of its forms;
only those forms are handed to the search (a model cannot write a word it never learnt).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from captioning import config
from captioning.data.text import Vocabulary
from captioning.tags.table import NUM_CLASSES, ImageNetWords


@dataclass(frozen=True)
class Tag:
    """A confident tag of one image.

    Attributes:
        word: the tag ("dog").
        confidence: the summed probability of its classes, 0..1.
        token_ids: vocabulary ids of its forms; a caption with any of them names it.
        named_by_ids: ids of every word that counts as naming it (forms and mentions).
    """

    word: str
    confidence: float
    token_ids: frozenset[int]
    named_by_ids: frozenset[int]

    def named_in(self, tokens: Sequence[int]) -> bool:
        """Whether a caption's token ids already name this tag."""
        return not self.named_by_ids.isdisjoint(tokens)


class Tagger:
    """Confident, usable tags for batches of image features."""

    def __init__(self, classifier: tuple[np.ndarray, np.ndarray], vocab: Vocabulary,
                 threshold: float = config.TAG_THRESHOLD, max_tags: int = config.MAX_TAGS,
                 table: ImageNetWords | None = None,
                 features_view: Callable[[np.ndarray], np.ndarray] | None = None):
        """Args:
            classifier: ``(kernel (D, 1000), bias (1000,))`` over pooled features.
            vocab: the bundle's ``data.text.Vocabulary``.
            threshold: least summed probability for a tag to count.
            max_tags: most tags per image, most confident first.
            table: the class -> word table (default: the shipped one).
            features_view: the classifier's encoder's features out of the features given, when
                those join several encoders' (``inference.encoder_set``); None: they are its own.
        """
        self.features_view = features_view
        kernel, bias = (np.asarray(array, dtype=np.float32) for array in classifier)
        if kernel.ndim != 2 or kernel.shape[1] != NUM_CLASSES or bias.shape != (NUM_CLASSES,):
            raise ValueError(f"expected an ImageNet classifier (D, {NUM_CLASSES}) + ({NUM_CLASSES},), "
                             f"got {kernel.shape} + {bias.shape}")
        self.kernel, self.bias = kernel, bias
        self.threshold, self.max_tags = float(threshold), int(max_tags)
        self.table = table or ImageNetWords.load()
        ids = {word: index for index, word in enumerate(vocab.words)}
        self.words: list[str] = []  # usable tags, in table order
        self._forms: list[frozenset[int]] = []
        self._named_by: list[frozenset[int]] = []
        for name, words in self.table.tags.items():
            forms = frozenset(ids[w] for w in words.forms if w in ids)
            if forms:
                self.words.append(name)
                self._forms.append(forms)
                self._named_by.append(forms | {ids[w] for w in words.mentions if w in ids})
        column = {name: position for position, name in enumerate(self.words)}
        # (1000, tags) 0/1: summing class probabilities into tag confidences is one product.
        self._membership = np.zeros((NUM_CLASSES, len(self.words)), dtype=np.float32)
        for entry in self.table.classes:
            if entry.tag in column:
                self._membership[entry.index, column[entry.tag]] = 1.0

    def class_probabilities(self, features: np.ndarray) -> np.ndarray:
        """ImageNet class probabilities ``(B, 1000)`` from grid ``(B, H, W, D)`` or pooled ``(B, D)``
        features (float16 as cached, computed in float32)."""
        if self.features_view is not None:
            features = self.features_view(features)
        features = np.asarray(features, dtype=np.float32)
        pooled = features.mean(axis=tuple(range(1, features.ndim - 1))) if features.ndim > 2 else features
        logits = pooled @ self.kernel + self.bias  # (B, 1000)
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        return probabilities / probabilities.sum(axis=1, keepdims=True)

    def tag_confidences(self, features: np.ndarray) -> np.ndarray:
        """``(B, len(self.words))``: each usable tag's summed class probability."""
        return self.class_probabilities(features) @ self._membership

    def tags(self, features: np.ndarray) -> list[list[Tag]]:
        """Per image, its confident usable tags, most confident first (at most ``max_tags``)."""
        confidences = self.tag_confidences(features)
        result = []
        for row in confidences:
            order = [int(c) for c in np.argsort(-row, kind="stable")[:self.max_tags]
                     if row[c] >= self.threshold]
            result.append([Tag(self.words[c], float(row[c]), self._forms[c], self._named_by[c])
                           for c in order])
        return result
