"""Caption text: the one normalisation, the vocabulary (JSON, never pickle) and caption lengths.

Normalisation rule (the single place it is defined, used for training, vocabulary and evaluation
references alike):

* Unicode is folded to ASCII where a letter has an accent (``café`` -> ``cafe``) and lowercased.
* Apostrophes inside a word are removed, so possessives and contractions stay one word
  (``dog's`` -> ``dogs``, ``don't`` -> ``dont``); splitting them would invent tokens like ``s``.
* Every other non-letter character separates words (``t-shirt`` -> ``t shirt``), so only
  words matching ``[a-z]+`` remain: punctuation and pure numbers are dropped (numbers are rare in
  captions and the model cannot read them off a photo anyway).
* Whitespace is collapsed to single spaces.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from captioning import config
from captioning.errors import BundleError, InputFileError
from captioning.storage.atomic import write_text_atomic
from captioning.storage.safe_json import read_json_file

PAD, UNK, START, END = 0, 1, 2, 3
RESERVED_TOKENS = ("<pad>", "<unk>", "<start>", "<end>")
VOCAB_FORMAT = 1

_INNER_APOSTROPHE = re.compile(r"(?<=[a-z])['\u2019`](?=[a-z])")
_NON_LETTERS = re.compile(r"[^a-z]+")


def normalize_caption(text: str) -> str:
    """Normalise a raw caption to lowercase ``[a-z]+`` words separated by single spaces.

    Args:
        text: A raw caption, any case, punctuation or accents.

    Returns:
        The normalised caption; empty when the caption holds no letters.
    """
    folded = unicodedata.normalize("NFKD", text)
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch)).lower()
    folded = _INNER_APOSTROPHE.sub("", folded)
    return " ".join(_NON_LETTERS.sub(" ", folded).split())


def tokenize(text: str) -> list[str]:
    """Split a raw caption into normalised words.

    Args:
        text: A raw caption.

    Returns:
        The words of ``normalize_caption(text)``.
    """
    return normalize_caption(text).split()


def choose_max_length(token_counts: Sequence[int], percentile: float) -> int:
    """Pick the caption length the model is built for: a high percentile, not the longest caption.

    A few very long captions would otherwise make every padded sequence (and the memory and time
    spent on it) longer for no gain; captions longer than this are truncated.

    Args:
        token_counts: Number of words of each normalised caption (``len(tokenize(caption))``),
            without START and END.
        percentile: In (0, 100]; 100 means the longest caption.

    Returns:
        Sequence length in tokens, counting START and END: at least 3, at most
        ``config.MAX_CAPTION_LENGTH``.

    Raises:
        ValueError: When ``token_counts`` is empty or ``percentile`` is out of range.
    """
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    if len(token_counts) == 0:
        raise ValueError("cannot choose a caption length from no captions")
    # "higher" picks a length some caption really has, so the choice never falls between counts.
    words = int(np.percentile(np.asarray(token_counts), percentile, method="higher"))
    # Bounded by what a bundle may hold (config.MAX_CAPTION_LENGTH); longer captions are truncated.
    return min(max(words, 1) + 2, config.MAX_CAPTION_LENGTH)


class Vocabulary:
    """Word <-> id mapping with reserved ids PAD=0, UNK=1, START=2, END=3."""

    def __init__(self, words: Sequence[str]):
        """Create a vocabulary from its words in id order.

        Args:
            words: Every token in id order, starting with the reserved tokens.

        Raises:
            ValueError: When the reserved tokens are not first or a word repeats.
        """
        words = list(words)
        if tuple(words[: len(RESERVED_TOKENS)]) != RESERVED_TOKENS:
            raise ValueError(f"a vocabulary must start with {list(RESERVED_TOKENS)}")
        if len(set(words)) != len(words):
            raise ValueError("a vocabulary cannot hold the same word twice")
        self.words = words
        self._ids = {word: index for index, word in enumerate(words)}

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 5, max_size: int | None = None) -> Vocabulary:
        """Build the vocabulary from TRAINING captions only (never validation or test).

        Args:
            captions: Raw captions; each is normalised here.
            min_count: Keep words seen at least this many times.
            max_size: At most this many entries in total, reserved tokens included; the most
                frequent words are kept. ``None`` means ``config.MAX_VOCAB_SIZE``, the most a bundle
                may hold.

        Returns:
            The vocabulary; words ordered by count (most frequent first), ties alphabetically, so
            the same captions always give the same ids.
        """
        if max_size is not None and max_size < len(RESERVED_TOKENS):
            raise ValueError(f"max_size must be at least {len(RESERVED_TOKENS)}, got {max_size}")
        counts = Counter(word for caption in captions for word in tokenize(caption))
        kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        max_size = config.MAX_VOCAB_SIZE if max_size is None else min(max_size, config.MAX_VOCAB_SIZE)
        kept = kept[: max_size - len(RESERVED_TOKENS)]
        return cls([*RESERVED_TOKENS, *kept])

    def __len__(self) -> int:
        return len(self.words)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.words == other.words

    def id_of(self, word: str) -> int:
        """The id of a normalised word, UNK when unknown."""
        return self._ids.get(word, UNK)

    def encode(self, caption: str) -> list[int]:
        """Encode a raw caption as ``[START] + word ids + [END]`` (unknown words -> UNK)."""
        return [START, *(self.id_of(word) for word in tokenize(caption)), END]

    def encode_batch(self, captions: Sequence[str], max_length: int) -> np.ndarray:
        """Encode captions into a padded int32 matrix for training.

        Args:
            captions: Raw captions.
            max_length: Columns of the result (tokens counting START and END), at least 2.

        Returns:
            ``(len(captions), max_length)`` int32, PAD (0) after END. A caption longer than
            ``max_length`` is truncated and still ends with END in the last column, so the
            model always learns to stop.
        """
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2 (START and END), got {max_length}")
        batch = np.full((len(captions), max_length), PAD, dtype=np.int32)  # (N, max_length)
        for row, caption in enumerate(captions):
            ids = self.encode(caption)
            if len(ids) > max_length:
                ids = ids[: max_length - 1] + [END]
            batch[row, : len(ids)] = ids
        return batch

    def decode(self, ids: Iterable[int]) -> str:
        """Turn ids back into text: stops at END, drops PAD, START and UNK.

        Args:
            ids: Token ids (a list or a 1-D array).

        Returns:
            The words joined by spaces.
        """
        words = []
        for token in ids:
            token = int(token)
            if token == END:
                break
            if token in (PAD, START, UNK) or not 0 <= token < len(self.words):
                continue
            words.append(self.words[token])
        return " ".join(words)

    def save(self, path: str | Path) -> None:
        """Write the vocabulary as JSON, atomically (temp file then rename).

        Args:
            path: Destination file, usually ``<bundle>/vocab.json``.
        """
        path = Path(path)
        data = {"format": VOCAB_FORMAT, "words": self.words}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(data, ensure_ascii=False, indent=0) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a vocabulary written by ``save``.

        Args:
            path: A ``vocab.json`` file.

        Returns:
            The vocabulary.

        Raises:
            BundleError: When the file is missing, not JSON, or not a vocabulary.
        """
        path = Path(path)
        try:
            data = read_json_file(path, config.MAX_VOCAB_JSON_BYTES)
        except InputFileError as error:
            if error.missing:
                raise BundleError(f"{path}: vocabulary file not found; the model bundle is incomplete") from None
            raise BundleError(f"{path}: cannot read the vocabulary ({error.reason}); "
                              "re-save or retrain the model") from None
        words = data.get("words") if isinstance(data, dict) else None
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise BundleError(f"{path}: not a vocabulary file (expected a 'words' list of strings); "
                              "re-save or retrain the model")
        if len(words) > config.MAX_VOCAB_SIZE:
            raise BundleError(f"{path}: {len(words):,} words, more than the {config.MAX_VOCAB_SIZE:,} this tool "
                              "loads; retrain the model")
        if data.get("format") != VOCAB_FORMAT:
            raise BundleError(f"{path}: vocabulary format {data.get('format')!r} is not supported "
                              f"(expected {VOCAB_FORMAT}); retrain the model")
        try:
            return cls(words)
        except ValueError as error:
            raise BundleError(f"{path}: invalid vocabulary ({error}); re-save or retrain the model") from None


__all__ = [
    "END", "PAD", "RESERVED_TOKENS", "START", "UNK", "Vocabulary", "choose_max_length",
    "normalize_caption", "tokenize",
]
