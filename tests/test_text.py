"""Caption normalisation, vocabulary building, encoding and the JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from captioning.data.text import (
    END,
    PAD,
    START,
    UNK,
    Vocabulary,
    choose_max_length,
    normalize_caption,
    tokenize,
)
from captioning.errors import BundleError


@pytest.mark.parametrize("raw, expected", [
    ("A black dog is running after a white dog in the snow .", "a black dog is running after a white dog in the snow"),
    ("  Two   DOGS,\tplaying!  ", "two dogs playing"),
    ("The dog's ball", "the dogs ball"),
    ("A man don\u2019t", "a man dont"),
    ("a red t-shirt", "a red t shirt"),
    ("3 people on 2 bikes", "people on bikes"),
    ("Caf\u00e9 na\u00efve", "cafe naive"),
    ("...", ""),
    ("'quoted' words", "quoted words"),
])
def test_normalize_caption(raw, expected):
    assert normalize_caption(raw) == expected
    assert tokenize(raw) == expected.split()


def test_build_orders_by_count_then_alphabet_and_applies_min_count():
    captions = ["b a c", "b a", "b d", "z z"]
    vocab = Vocabulary.build(captions, min_count=2)
    # b:3, a:2, z:2 (tie with a -> alphabetical), c and d once -> dropped
    assert vocab.words == ["<pad>", "<unk>", "<start>", "<end>", "b", "a", "z"]
    assert len(vocab) == 7


def test_build_max_size_counts_reserved_tokens():
    vocab = Vocabulary.build(["b a c", "b a", "b"], min_count=1, max_size=6)
    assert vocab.words[4:] == ["b", "a"]
    with pytest.raises(ValueError):
        Vocabulary.build(["a"], min_count=1, max_size=3)


def test_encode_decode_round_trip_and_unknown_words():
    vocab = Vocabulary.build(["a dog runs", "a cat sits"], min_count=1)
    ids = vocab.encode("A dog sits.")
    assert ids[0] == START and ids[-1] == END
    assert vocab.decode(ids) == "a dog sits"
    unknown = vocab.encode("a zebra")
    assert unknown[2] == UNK
    assert vocab.decode(unknown) == "a"
    # decode stops at END and skips PAD
    assert vocab.decode([START, vocab.id_of("dog"), END, vocab.id_of("cat"), PAD]) == "dog"
    assert vocab.decode(np.array([vocab.id_of("cat"), PAD, vocab.id_of("sits")])) == "cat sits"


def test_encode_batch_pads_and_truncates_keeping_end():
    vocab = Vocabulary.build(["a b c d e"], min_count=1)
    batch = vocab.encode_batch(["a b", "a b c d e"], max_length=5)
    assert batch.dtype == np.int32 and batch.shape == (2, 5)
    a, b, c = vocab.id_of("a"), vocab.id_of("b"), vocab.id_of("c")
    assert batch[0].tolist() == [START, a, b, END, PAD]
    assert batch[1].tolist() == [START, a, b, c, END]
    assert vocab.encode_batch([], max_length=4).shape == (0, 4)


def test_choose_max_length_uses_percentile_not_longest():
    counts = [10] * 99 + [60]
    assert choose_max_length(counts, 95) == 12  # 10 words + START + END
    assert choose_max_length(counts, 100) == 62
    assert choose_max_length([0, 0], 50) == 3
    with pytest.raises(ValueError):
        choose_max_length([], 95)
    with pytest.raises(ValueError):
        choose_max_length([3], 0)


def test_save_and_load_round_trip(tmp_path):
    vocab = Vocabulary.build(["a dog runs", "a dog sits"], min_count=1)
    path = tmp_path / "bundle" / "vocab.json"
    vocab.save(path)
    loaded = Vocabulary.load(path)
    assert loaded == vocab
    assert loaded.encode("a dog sits") == vocab.encode("a dog sits")
    assert [p.name for p in path.parent.iterdir()] == ["vocab.json"]  # no temp file left behind


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "cannot read the vocabulary"),
    (json.dumps([1, 2]), "not a vocabulary file"),
    (json.dumps({"format": 1, "words": ["a", "b"]}), "invalid vocabulary"),
    (json.dumps({"format": 1, "words": ["<pad>", "<unk>", "<start>", "<end>", "a", "a"]}), "invalid vocabulary"),
    (json.dumps({"format": 99, "words": ["<pad>", "<unk>", "<start>", "<end>"]}), "format 99"),
])
def test_load_malformed_vocabulary_is_a_clear_error(tmp_path, content, fragment):
    path = tmp_path / "vocab.json"
    path.write_text(content)
    with pytest.raises(BundleError) as caught:
        Vocabulary.load(path)
    message = str(caught.value)
    assert fragment in message and str(path) in message and "\n" not in message


def test_load_missing_vocabulary(tmp_path):
    with pytest.raises(BundleError, match="not found"):
        Vocabulary.load(tmp_path / "vocab.json")
