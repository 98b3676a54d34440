"""Pretrained word vectors in GloVe's text format, for initialising the decoder's word embedding.

One word per line followed by its numbers, separated by spaces (``the 0.418 0.24968 ...``), as
the GloVe files (nlp.stanford.edu/projects/glove, downloaded by the user) and word2vec's text
format (whose first line, ``<count> <dim>``, is skipped) are written. Only the words of the
caption vocabulary are kept, so a 1 GB file costs a pass over it, never its size in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from captioning.errors import CaptioningError

MAX_DIMENSION = 4096  # GloVe and word2vec go up to 300; more is a wrong file
MAX_LINE_CHARACTERS = 1 << 16  # a word and MAX_DIMENSION numbers fit well within this


class WordVectorsError(CaptioningError):
    """An unreadable or malformed word-vector file."""


@dataclass(frozen=True)
class WordVectors:
    """The vectors of the vocabulary words a file has."""

    dimension: int
    vectors: dict[str, np.ndarray]  # word -> (dimension,) float32


def vector_dimension(path: str | Path) -> int:
    """The size of the vectors in ``path``, from its first vector line (a cheap check before training).

    Raises:
        WordVectorsError: a missing, unreadable or malformed file.
    """
    for _, _, numbers in _vector_lines(Path(path)):
        return len(numbers)
    raise WordVectorsError(f"{path}: no word vectors in the file; expected GloVe's text format "
                           "(a word then its numbers on each line)")


def read_word_vectors(path: str | Path, words: Sequence[str]) -> WordVectors:
    """The vectors of ``words`` found in ``path`` (every line is checked, all of the same size).

    Args:
        path: a GloVe-format text file.
        words: the vocabulary; words missing from the file are simply absent from the result.

    Raises:
        WordVectorsError: a missing, unreadable or malformed file, or vectors of different sizes.
    """
    wanted = set(words)
    dimension, found = 0, {}
    for number, word, numbers in _vector_lines(Path(path)):
        if not dimension:
            dimension = len(numbers)
        elif len(numbers) != dimension:
            raise WordVectorsError(f"{path}, line {number}: {len(numbers)} numbers where earlier lines have "
                                   f"{dimension}; every vector must have the same size")
        if word in wanted and word not in found:
            found[word] = _floats(numbers, path, number)
    if not dimension:
        raise WordVectorsError(f"{path}: no word vectors in the file; expected GloVe's text format")
    return WordVectors(dimension, found)


def _vector_lines(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line number, word, its number fields) for each vector line; word2vec's header is skipped."""
    try:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if len(line) > MAX_LINE_CHARACTERS:
                    raise WordVectorsError(f"{path}, line {number}: longer than {MAX_LINE_CHARACTERS} characters; "
                                           "is this a word-vector text file?")
                fields = line.split(" ")
                fields[-1] = fields[-1].rstrip("\n")
                fields = [field for field in fields if field]
                if not fields:
                    continue
                if number == 1 and len(fields) == 2 and all(f.isdigit() for f in fields):
                    continue  # word2vec text header: "<count> <dimension>"
                if len(fields) < 2:
                    raise WordVectorsError(f"{path}, line {number}: a word without numbers; expected GloVe's "
                                           "text format (a word then its numbers)")
                if len(fields) - 1 > MAX_DIMENSION:
                    raise WordVectorsError(f"{path}, line {number}: {len(fields) - 1} numbers, more than the "
                                           f"{MAX_DIMENSION} a word vector may have")
                yield number, fields[0], fields[1:]
    except FileNotFoundError:
        raise WordVectorsError(f"{path}: no such word-vector file (GloVe files are downloaded from "
                               "nlp.stanford.edu/projects/glove and unzipped first)") from None
    except IsADirectoryError:
        raise WordVectorsError(f"{path} is a folder; pass the word-vector .txt file inside it") from None
    except UnicodeDecodeError as error:
        raise WordVectorsError(f"{path}: not UTF-8 text near byte {error.start}; is it the binary "
                               "word2vec format? Pass a text file") from None
    except OSError as error:
        raise WordVectorsError(f"{path}: cannot read it ({error.strerror})") from None


def _floats(numbers: list[str], path: str | Path, line: int) -> np.ndarray:
    try:
        vector = np.array([float(n) for n in numbers], dtype=np.float32)
    except ValueError:
        raise WordVectorsError(f"{path}, line {line}: a field that is not a number") from None
    if not np.all(np.isfinite(vector)):
        raise WordVectorsError(f"{path}, line {line}: an infinite or NaN number")
    return vector


__all__ = ["WordVectors", "WordVectorsError", "read_word_vectors", "vector_dimension"]
