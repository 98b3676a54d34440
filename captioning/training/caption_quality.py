"""Validation CIDEr-D during training: caption a fixed set of validation photos, score them.

Validation loss says how well the decoder predicts the references' next word; what a user sees is
the caption search produces. Scoring the search's captions on a fixed subset of validation photos
at the end of every epoch lets early stopping and the choice of the best epoch follow caption
quality (issue 17: "validation by caption quality"). The score is CIDEr-D as the COCO toolkit
computes it (``cider_reward.CiderD`` with the idf of these references, which is exactly the
toolkit's), over the tool's own normalised words, so no Java is needed; x100 like every score
the tool prints.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from captioning.data.text import Vocabulary, tokenize
from captioning.inference.search import beam_search
from captioning.training.cider_reward import CiderD

BATCH_IMAGES = 100  # photos per search call: one batched beam search each


class CaptionQuality:
    """Caption a fixed set of photos with a decoder and score the captions with CIDEr-D.

    Args:
        features: ``(rows, ...)`` feature rows (a memmap is fine: only ``rows`` are read).
        rows: ``(N,)`` the feature row of each photo to caption.
        references: each photo's raw reference captions.
        vocab: the decoder's vocabulary (to turn token ids into words).
        max_length: caption length with START and END, as the decoder was built.
        beam_size: 1 is greedy (fast); the bundle's caption beam gives the number users see.
    """

    def __init__(self, features: np.ndarray, rows: np.ndarray, references: Sequence[Sequence[str]],
                 vocab: Vocabulary, max_length: int, beam_size: int = 1):
        if len(rows) != len(references) or not len(rows):
            raise ValueError(f"{len(rows)} feature rows for {len(references)} photos' references")
        self._features = features
        self._rows = np.asarray(rows, dtype=np.int64)
        tokenised = [[tokenize(caption) for caption in captions] for captions in references]
        self._cider = CiderD(tokenised)
        self._prepared = [self._cider.prepare(captions) for captions in tokenised]
        self._vocab = vocab
        self._max_length = max_length
        self.beam_size = beam_size

    def __len__(self) -> int:
        return len(self._rows)

    def captions(self, step_decoder) -> list[list[str]]:
        """The decoder's caption (as words) for every photo, in order."""
        words = []
        for start in range(0, len(self._rows), BATCH_IMAGES):
            rows = self._rows[start:start + BATCH_IMAGES]
            batch = np.asarray(self._features[rows], dtype=np.float32)  # (B, ...)
            for tokens in beam_search(step_decoder, batch, self.beam_size, self._max_length):
                words.append(self._vocab.decode(tokens).split())
        return words

    def score(self, step_decoder) -> float:
        """Corpus CIDEr-D of the decoder's captions, x100 (0-1000; about 50 for a good Flickr8k model)."""
        captions = self.captions(step_decoder)
        total = sum(self._cider.score(words, prepared) for words, prepared in zip(captions, self._prepared,
                                                                                   strict=True))
        return 100.0 * total / len(captions)


def monitor_subset(count: int, wanted: int, seed: int) -> np.ndarray:
    """Which of ``count`` validation photos to monitor: ``wanted`` of them, fixed by ``seed``.

    Sorted, so the memmap is read in order; the same photos every epoch and on resume.
    """
    if wanted >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=wanted, replace=False))
