"""The merge decoder: same maths as the tutorials' per-prefix model, a step decoder that matches the
training graph, and a loss averaged over real tokens only."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from captioning import models  # noqa: E402
from captioning.config import DecoderConfig  # noqa: E402
from captioning.models import merge  # noqa: E402

VOCAB, MAX_LENGTH, FEATURE_DIM = 23, 8, 12
CONFIG = DecoderConfig(kind="merge", embedding_dim=10, units=16, dropout=0.5)


def _softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def _random_model_and_batch(seed=0):
    keras.utils.set_random_seed(seed)
    model = models.build_decoder(VOCAB, MAX_LENGTH, (FEATURE_DIM,), CONFIG)
    # Non-zero biases everywhere so a mismatch in any layer would show.
    rng = np.random.default_rng(seed)
    model.set_weights([w + rng.normal(0, 0.1, w.shape).astype(w.dtype) for w in model.get_weights()])
    features = rng.normal(size=(3, FEATURE_DIM)).astype(np.float32)
    tokens = np.array([[2, 5, 9, 4, 3, 0, 0, 0],
                       [2, 7, 3, 0, 0, 0, 0, 0],
                       [2, 4, 4, 8, 11, 6, 12, 3]], dtype=np.int32)  # (B, max_length)
    return model, features, tokens


def _per_prefix_model(training_model):
    """The tutorials' model: features + padded prefix -> LSTM(return_sequences=False) -> softmax."""
    from keras import layers

    features = keras.Input(shape=(FEATURE_DIM,))
    prefix = keras.Input(shape=(MAX_LENGTH - 1,), dtype="int32")
    image = layers.Dense(CONFIG.units, activation="relu", name="d1")(layers.Dropout(CONFIG.dropout)(features))
    words = layers.Embedding(VOCAB, CONFIG.embedding_dim, mask_zero=True, name="emb")(prefix)
    sequence = layers.LSTM(CONFIG.units, name="rnn")(layers.Dropout(CONFIG.dropout)(words))
    hidden = layers.Dense(CONFIG.units, activation="relu", name="d2")(layers.add([image, sequence]))
    probs = layers.Dense(VOCAB, activation="softmax", name="out")(hidden)
    model = keras.Model([features, prefix], probs)
    for mine, theirs in (("d1", merge.IMAGE_DENSE), ("emb", merge.WORD_EMBEDDING), ("rnn", merge.LSTM),
                         ("d2", merge.MERGE_DENSE), ("out", merge.WORD_LOGITS)):
        model.get_layer(mine).set_weights(training_model.get_layer(theirs).get_weights())
    return model


def test_whole_caption_model_equals_per_prefix_model_for_every_prefix():
    model, features, tokens = _random_model_and_batch()
    probs = _softmax(model.predict({"features": features, "tokens": tokens[:, :-1]}, verbose=0))  # (B, T, V)
    per_prefix = _per_prefix_model(model)
    compared = 0
    for row in range(len(tokens)):
        length = int((tokens[row] != 0).sum())
        for t in range(length - 1):  # every prefix whose next word is a real token
            prefix = np.zeros((1, MAX_LENGTH - 1), dtype=np.int32)
            prefix[0, -(t + 1):] = tokens[row, : t + 1]  # pre-padded, as pad_sequences does
            expected = per_prefix.predict([features[row:row + 1], prefix], verbose=0)[0]
            assert np.allclose(probs[row, t], expected, atol=1e-5), (row, t)
            compared += 1
    assert compared == 4 + 2 + 7


def test_step_decoder_matches_training_graph():
    model, features, tokens = _random_model_and_batch(seed=1)
    logits = model.predict({"features": features, "tokens": tokens[:, :-1]}, verbose=0)  # (B, T, V)
    expected = np.log(_softmax(logits.astype(np.float64)))
    steps = models.make_step_decoder(model, CONFIG)
    state = steps.initial_state(features)
    assert all(s.shape[0] == len(features) for s in state)
    for t in range(MAX_LENGTH - 1):
        log_probs, state = steps.step(tokens[:, t], state)
        assert log_probs.shape == (len(features), VOCAB) and log_probs.dtype == np.float32
        real = tokens[:, t] != 0  # after PAD the training graph just carries its state
        assert np.allclose(log_probs[real], expected[real, t], atol=1e-4), t


def test_step_decoder_state_can_be_reordered_for_beam_search():
    model, features, tokens = _random_model_and_batch(seed=2)
    steps = merge.MergeStepDecoder(model, CONFIG)
    state = steps.initial_state(features)
    _, state = steps.step(tokens[:, 0], state)
    order = np.array([2, 2, 0])
    reordered = tuple(np.take(s, order, axis=0) for s in state)
    direct, _ = steps.step(tokens[order, 1], reordered)
    separate, _ = steps.step(tokens[:, 1], state)
    assert np.allclose(direct, separate[order], atol=1e-6)


def test_loss_is_averaged_over_real_tokens_only():
    model, features, tokens = _random_model_and_batch(seed=3)
    model.compile(optimizer="adam", loss=models.caption_loss())
    targets = tokens[:, 1:]
    loss = model.evaluate({"features": features, "tokens": tokens[:, :-1]}, targets, verbose=0)
    log_probs = np.log(_softmax(model.predict({"features": features, "tokens": tokens[:, :-1]}, verbose=0).astype(np.float64)))
    token_loss = -np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    real = targets != 0
    assert loss == pytest.approx(token_loss[real].mean(), rel=1e-4)
    assert abs(token_loss[real].mean() - token_loss.mean()) > 1e-3  # padding would change it


def test_layer_names_are_stable():
    model, _, _ = _random_model_and_batch()
    names = {layer.name for layer in model.layers}
    assert {merge.IMAGE_DENSE, merge.WORD_EMBEDDING, merge.LSTM, merge.MERGE_DENSE,
            merge.WORD_LOGITS, "features", "tokens"} <= names
    assert model.output_shape == (None, None, VOCAB)  # any caption length: batches are trimmed


def test_unknown_kind_and_wrong_features_are_refused():
    with pytest.raises(ValueError, match="unknown decoder kind"):
        models.build_decoder(VOCAB, MAX_LENGTH, (FEATURE_DIM,), DecoderConfig(kind="gru"))
    with pytest.raises(ValueError, match="pooled features"):
        models.build_decoder(VOCAB, MAX_LENGTH, (7, 7, FEATURE_DIM), CONFIG)
