"""``--word-vectors``: reading GloVe-format files and starting the word embedding from them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from captioning.cli.main import build_parser, main
from captioning.data.word_vectors import WordVectorsError, read_word_vectors, vector_dimension
from captioning.training.pipeline import TrainOptions


def _glove(path, vectors: dict[str, list[float]], header: str | None = None):
    lines = [header] if header else []
    lines += [" ".join([word, *(f"{x:.4f}" for x in vector)]) for word, vector in vectors.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_only_vocabulary_words_are_kept_and_word2vec_headers_skipped(tmp_path):
    path = _glove(tmp_path / "v.txt", {"dog": [1, 2, 3], "cat": [4, 5, 6], "zebra": [7, 8, 9]}, header="3 3")
    assert vector_dimension(path) == 3
    loaded = read_word_vectors(path, ["<pad>", "dog", "zebra", "unicorn"])
    assert loaded.dimension == 3 and sorted(loaded.vectors) == ["dog", "zebra"]
    assert loaded.vectors["zebra"].tolist() == [7, 8, 9] and loaded.vectors["dog"].dtype == np.float32


@pytest.mark.parametrize("content, message", [
    ("dog 1 2 3\ncat 1 2\n", "line 2: 2 numbers where earlier lines have 3"),
    ("dog 1 two 3\n", "line 1: a field that is not a number"),
    ("dog\n", "line 1: a word without numbers"),
    ("dog 1 nan 3\n", "infinite or NaN"),
    ("\n\n", "no word vectors in the file"),
])
def test_malformed_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(WordVectorsError, match=message):
        read_word_vectors(path, ["dog", "cat"])


def test_missing_folder_and_binary_files_say_what_to_pass(tmp_path):
    with pytest.raises(WordVectorsError, match="no such word-vector file .* downloaded"):
        vector_dimension(tmp_path / "glove.6B.100d.txt")
    with pytest.raises(WordVectorsError, match="is a folder"):
        vector_dimension(tmp_path)
    binary = tmp_path / "vectors.bin"
    binary.write_bytes(b"3 3\ndog \xff\xfe\x00\x01")
    with pytest.raises(WordVectorsError, match="not UTF-8 text .* binary word2vec"):
        vector_dimension(binary)


def test_the_embedding_takes_the_vectors_size_unless_told_otherwise(tmp_path, capsys):
    path = _glove(tmp_path / "v.txt", {"dog": [1.0] * 6})
    parse = build_parser().parse_args
    options = TrainOptions.from_args(parse(["train", "--word-vectors", str(path), "--freeze-word-vectors"]))
    assert options.decoder.embedding_dim == 6 and options.freeze_word_vectors and options.word_vectors == path
    assert TrainOptions.from_args(parse(["train"])).decoder.embedding_dim == 256
    assert main(["train", "--word-vectors", str(path), "--embedding-dim", "8"]) == 1
    assert "--embedding-dim 8 differs from the 6 numbers per word" in capsys.readouterr().err
    assert main(["train", "--freeze-word-vectors"]) == 1
    assert "needs --word-vectors FILE" in capsys.readouterr().err


@pytest.mark.slow  # trains a tiny model on 30 photos
def test_training_starts_from_the_vectors_and_frozen_ones_stay(tmp_path, capsys):
    from captioning.bundles.store import load_bundle
    from captioning.data.text import RESERVED_TOKENS
    from tests.support.shapes_dataset import write_shapes_dataset

    folder = write_shapes_dataset(tmp_path / "shapes", n_images=30, seed=4)
    rng = np.random.default_rng(0)
    words = ["red", "blue", "green", "circle", "square", "triangle", "on", "a", "the", "background", "unrelated"]
    vectors = {word: rng.normal(size=8).round(4).tolist() for word in words}
    path = _glove(tmp_path / "glove.txt", vectors)
    output = tmp_path / "bundle"
    assert main(["train", "--dataset", str(folder), "--encoder", "efficientnet_lite0", "--encoder-weights", "none",
                 "--epochs", "2", "--batch-size", "16", "--min-count", "1", "--units", "8",
                 "--word-vectors", str(path), "--freeze-word-vectors", "--output", str(output)]) == 0
    out = capsys.readouterr().out
    bundle = load_bundle(output)
    vocab = [w for w in bundle.vocab.words if w not in RESERVED_TOKENS]
    found = [w for w in vocab if w in vectors]
    assert found and f"word vectors: {len(found)} of {len(vocab)} vocabulary words found" in out
    embedding = next(w for w in bundle.model.weights if "embedding" in w.path and w.shape[-1] == 8).numpy()
    for word in found:  # frozen: exactly the file's numbers after training
        np.testing.assert_allclose(embedding[bundle.vocab.id_of(word)], vectors[word], atol=1e-3)
    training = json.loads((output / "config.json").read_text())["training"]
    assert training["word_vectors"] == str(path.resolve()) and training["freeze_word_vectors"] is True
    assert training["word_vectors_found"] == len(found)
