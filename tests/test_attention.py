"""The soft-attention decoder: attention is a distribution, stepping equals teacher forcing, the
penalty is the paper's, weights round-trip, it learns where things are, and the map has a panel per
word."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from captioning import models  # noqa: E402
from captioning.config import DecoderConfig  # noqa: E402
from captioning.errors import BundleError, ImageError  # noqa: E402
from captioning.inference import attention_weights  # noqa: E402
from captioning.inference import search as decoding  # noqa: E402
from captioning.models import attention  # noqa: E402
from captioning.render import attention_map  # noqa: E402
from captioning.render.photo import load_photo  # noqa: E402

VOCAB, MAX_LENGTH, CHANNELS = 19, 8, 12
CONFIG = DecoderConfig(kind="attention", embedding_dim=10, units=16, attention_dim=8,
                       attention_feature_dim=12, dropout=0.5, attention_regularization=1.0)
TOKENS = np.array([[2, 5, 9, 4, 3, 0, 0, 0],
                   [2, 7, 3, 0, 0, 0, 0, 0],
                   [2, 4, 4, 8, 11, 6, 12, 3]], dtype=np.int32)  # (B, max_length)


def _model_and_features(seed=0, config=CONFIG, grid=(7, 7)):
    keras.utils.set_random_seed(seed)
    model = attention.build(VOCAB, MAX_LENGTH, (*grid, CHANNELS), config)
    rng = np.random.default_rng(seed)
    # Non-zero biases everywhere so a mismatch in any layer would show.
    model.set_weights([w + rng.normal(0, 0.1, w.shape).astype(w.dtype) for w in model.get_weights()])
    features = rng.random((3, *grid, CHANNELS)).astype(np.float16)
    return model, features


def _attention_over_steps(model, features, tokens):
    """Teacher-forced alphas ``(B, T, P)`` from the training graph's own layers."""
    encoded = model.get_layer(attention.ENCODER_LAYER)(features)
    embedded = model.get_layer(attention.EMBEDDING_LAYER)(tokens)
    lstm = model.get_layer(attention.LSTM_LAYER)
    _, _, alphas = lstm(embedded, *encoded, attention.real_step_mask(tokens))
    return np.asarray(alphas)


# Grids of EfficientNet-Lite0/1/2 (224, 240, 260 pixels): the decoder takes any grid size.
@pytest.mark.parametrize("side", [7, 9])
def test_attention_weights_are_a_distribution_over_the_grid_at_every_step(side):
    model, features = _model_and_features(grid=(side, side))
    alphas = _attention_over_steps(model, features, TOKENS[:, :-1])
    assert alphas.shape == (3, MAX_LENGTH - 1, side * side)
    assert (alphas >= 0).all()
    np.testing.assert_allclose(alphas.sum(axis=-1), 1.0, atol=1e-5)
    step_decoder = attention.AttentionStepDecoder(model, CONFIG)
    state = step_decoder.initial_state(features)
    for t in range(MAX_LENGTH - 1):
        _, state, alpha = step_decoder.step_with_attention(TOKENS[:, t], state)
        assert alpha.shape == (3, side * side) and (alpha >= 0).all()
        np.testing.assert_allclose(alpha.sum(axis=-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("grid", [(7, 7), (49,), (8, 8), (9, 9)])
def test_stepping_from_state_equals_the_teacher_forced_sequence(grid):
    model, features = _model_and_features(grid=grid)
    inputs = TOKENS[:, :-1]
    full = keras.ops.convert_to_numpy(
        keras.ops.log_softmax(model({"features": features, "tokens": inputs}, training=False)))
    full_alphas = _attention_over_steps(model, features, inputs)
    step_decoder = attention.AttentionStepDecoder(model, CONFIG)
    state = step_decoder.initial_state(features)
    assert all(array.shape[0] == 3 for array in state)  # batch first, for beam search
    for t in range(inputs.shape[1]):
        log_probs, state, alpha = step_decoder.step_with_attention(inputs[:, t], state)
        np.testing.assert_allclose(log_probs, full[:, t], atol=1e-4)
        np.testing.assert_allclose(alpha, full_alphas[:, t], atol=1e-5)


def test_one_trace_serves_every_batch_size_and_beam_width():
    # Tags decode a second, smaller batch; an ensemble's members retracing for it made TensorFlow
    # print retracing warnings into `caption`'s output.
    model, features = _model_and_features()
    step_decoder = attention.AttentionStepDecoder(model, CONFIG)
    for rows in (3, 1, 2):
        decoding.beam_search(step_decoder, features[:rows], beam_size=rows, max_length=MAX_LENGTH)
    assert step_decoder._initial.experimental_get_tracing_count() == 1
    assert step_decoder._step.experimental_get_tracing_count() == 1


def test_an_ensembles_members_each_traced_once_draw_no_retracing_warning(caplog):
    # TensorFlow counts traces per Python code object: six members sharing `initial_graph` looked
    # like one function retraced six times, and `caption` printed its warning to users who had
    # TF_CPP_MIN_LOG_LEVEL set.
    import logging

    from captioning.models.merge import MergeStepDecoder
    from captioning.models.merge import build as build_merge

    model, features = _model_and_features()
    merge_model = build_merge(VOCAB, MAX_LENGTH, (CHANNELS,), DecoderConfig(kind="merge", embedding_dim=8, units=8))
    pooled = features.mean(axis=(1, 2)).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        for _ in range(6):
            attention.AttentionStepDecoder(model, CONFIG).initial_state(features)
            MergeStepDecoder(merge_model, DecoderConfig(kind="merge", embedding_dim=8, units=8)).initial_state(pooled)
    assert not [record for record in caplog.records if "retracing" in record.getMessage()]


def test_penalty_is_the_doubly_stochastic_term_over_real_steps_per_token():
    model, features = _model_and_features()
    inputs = TOKENS[:, :-1]
    model({"features": features, "tokens": inputs}, training=False)
    [penalty] = [float(loss) for loss in model.losses]
    alphas = _attention_over_steps(model, features, inputs)
    # Real steps predict a word or END: the input is neither PAD nor END.
    real = (inputs != 0) & (inputs != 3)
    assert real.sum(axis=1).tolist() == [4, 2, 7]
    coverage = (alphas * real[..., None]).sum(axis=1)  # (B, P)
    expected = ((1.0 - coverage) ** 2).sum() / real.sum()
    assert penalty == pytest.approx(expected, rel=1e-4)
    # Padding steps must not count: changing what follows END leaves the penalty alone.
    padded = inputs.copy()
    padded[1, 3:] = 0
    model({"features": features, "tokens": padded}, training=False)
    assert float(model.losses[0]) == pytest.approx(penalty, rel=1e-5)


def test_weights_round_trip_through_a_keras_weights_file_into_a_rebuilt_model(tmp_path):
    model, features = _model_and_features(seed=1)
    path = tmp_path / "model.weights.h5"
    model.save_weights(path)
    rebuilt = attention.build(VOCAB, MAX_LENGTH, (7, 7, CHANNELS), CONFIG)
    rebuilt.load_weights(path)
    batch = {"features": features, "tokens": TOKENS[:, :-1]}
    np.testing.assert_allclose(rebuilt(batch, training=False), model(batch, training=False), atol=1e-6)


def test_decoder_dispatches_attention_kind():
    model = models.build_decoder(VOCAB, MAX_LENGTH, (7, 7, CHANNELS), CONFIG)
    assert model.get_layer(attention.LSTM_LAYER) is not None
    assert isinstance(models.make_step_decoder(model, CONFIG), attention.AttentionStepDecoder)


def _located_shapes(count, rng, side=7):
    """``side x side`` grids where one cell holds a coloured object; every cell carries its own position.

    Like a CNN grid, each cell's features say where it is (row/column channels), so only by
    attending to the object's cell can the decoder say where the object is; the mean (the
    initial state) tells its colour but not its place. Caption: colour, row word, column word
    (the grid's top/middle/bottom and left/middle/right thirds).
    """
    colours = [4, 5, 6]
    thirds = [(2 * cell + 1) * 3 // (2 * side) for cell in range(side)]  # 7: 0 0 1 1 1 2 2
    rows, columns = [7 + t for t in thirds], [10 + t for t in thirds]
    features = np.zeros((count, side, side, 3 + 2 * side), dtype=np.float32)
    for r in range(side):
        features[:, r, :, 3 + r] = 1.0
        features[:, :, r, 3 + side + r] = 1.0
    features += rng.normal(0, 0.05, features.shape)
    captions = np.zeros((count, 6), dtype=np.int32)
    for i in range(count):
        colour, r, c = rng.integers(3), rng.integers(side), rng.integers(side)
        features[i, r, c, colour] += 2.0
        captions[i] = [2, colours[colour], rows[r], columns[c], 3, 0]
    return features.astype(np.float16), captions


@pytest.mark.parametrize("side", [7, 9])  # EfficientNet-Lite0's grid and Lite2's
def test_attention_decoder_learns_to_say_where_the_object_is(side):
    keras.utils.set_random_seed(7)
    rng = np.random.default_rng(7)
    train_features, train_captions = _located_shapes(2048, rng, side)
    test_features, test_captions = _located_shapes(200, rng, side)
    # No coverage penalty here: with 4-word captions over 49 cells, "cover every cell equally"
    # outweighs looking at the object (the model then reads the place by looking away from it).
    config = DecoderConfig(kind="attention", embedding_dim=32, units=64, attention_dim=32,
                           attention_feature_dim=32, dropout=0.1, attention_regularization=0.0)
    model = attention.build(13, 6, train_features.shape[1:], config)
    model.compile(keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0))
    model.fit({"features": train_features, "tokens": train_captions[:, :-1]}, train_captions[:, 1:],
              batch_size=64, epochs=6, verbose=0)
    step_decoder = attention.AttentionStepDecoder(model, config)
    predicted = decoding.greedy_search(step_decoder, test_features, max_length=6)
    expected = [list(caption[1:4]) for caption in test_captions]
    exact = np.mean([p == e for p, e in zip(predicted, expected, strict=True)])
    assert exact >= 0.9, f"only {exact:.0%} of unseen {side}x{side} grids captioned exactly"
    beamed = decoding.beam_search(step_decoder, test_features[:20], beam_size=3, max_length=6)
    assert np.mean([b == e for b, e in zip(beamed, expected[:20], strict=True)]) >= 0.9
    # Naming the place (row and column words), the decoder looks at the object's cell.
    for i in range(5):
        alphas = attention_weights.attention_for_tokens(step_decoder, test_features[i:i + 1], expected[i])
        object_cell = int(np.argmax(test_features[i, ..., :3].max(axis=-1)))
        assert alphas.shape == (3, side * side)
        assert np.argmax(alphas[1:3], axis=-1).tolist() == [object_cell, object_cell]


def test_attention_for_tokens_gives_one_row_per_word_from_a_fresh_start():
    model, features = _model_and_features()
    step_decoder = attention.AttentionStepDecoder(model, CONFIG)
    alphas = attention_weights.attention_for_tokens(step_decoder, features[:1], [5, 9, 4])
    assert alphas.shape == (3, 49)
    full = _attention_over_steps(model, features[:1], TOKENS[:1, :-1])
    np.testing.assert_allclose(alphas, full[0, :3], atol=1e-5)


@pytest.mark.parametrize("side", [7, 8, 9])
def test_attention_map_has_one_panel_per_word(tmp_path, side):
    from PIL import Image

    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(photo)
    words = ["a", "dog", "runs", "on", "the", "grass", "today"]
    alphas = np.random.default_rng(1).dirichlet(np.ones(side * side), size=len(words))
    figure = attention_map._draw_panels(load_photo(photo, attention_map.DISPLAY_SIZE), words,
                                         alphas.reshape(-1, side, side))
    assert [axes.get_title() for axes in figure.axes] == words
    output = attention_map.write_attention_map(photo, words, alphas, tmp_path / "out" / "map.png")
    with Image.open(output) as image:
        width, height = image.size
    assert width == pytest.approx(attention_map.COLUMNS * attention_map.PANEL_INCHES * 100, abs=2)
    assert height > width / attention_map.COLUMNS * 1.5  # two rows of panels
    assert [p.name for p in output.parent.iterdir()] == ["map.png"]  # no temp file left


def test_attention_map_rejects_mismatched_input_and_unreadable_photos(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageError, match="broken.jpg"):
        attention_map.write_attention_map(bad, ["a"], np.full((1, 49), 1 / 49), tmp_path / "m.png")
    with pytest.raises(ValueError):
        attention_map.write_attention_map(bad, ["a", "b"], np.full((1, 49), 1 / 49), tmp_path / "m.png")


def test_attention_map_of_a_model_without_attention_says_so():
    class MergeLike:
        def initial_state(self, features):
            return (features,)

    with pytest.raises(BundleError, match="--decoder attention"):
        attention_weights.attention_for_tokens(MergeLike(), np.zeros((1, 4)), [5])


@pytest.mark.slow  # ~1-2 min: real EfficientNet-Lite0 grid features, train_model, bundle
def test_attention_model_trained_by_the_pipeline_captions_unseen_shapes(tmp_path):
    from captioning import config
    from captioning.bundles.store import load_bundle
    from captioning.data.datasets import load_dataset
    from captioning.data.text import normalize_caption
    from captioning.encoders import build_encoder
    from captioning.features.extraction import encode_paths
    from captioning.models import make_step_decoder
    from captioning.training.pipeline import TrainOptions, train_model
    from tests.support.shapes_dataset import write_shapes_dataset

    options = TrainOptions(
        dataset=str(write_shapes_dataset(tmp_path / "train", n_images=216, seed=1)),
        encoder="efficientnet_lite0",
        decoder=DecoderConfig(kind="attention", embedding_dim=64, units=128, attention_dim=64,
                              attention_feature_dim=64, dropout=0.2),
        train=config.TrainConfig(epochs=30, batch_size=32, learning_rate=3e-3,
                                 early_stopping_patience=4, seed=3),
        vocab=config.VocabConfig(min_count=1),
    )
    result = train_model(options, log=lambda line: None)
    bundle = load_bundle(result.bundle_dir)
    assert bundle.config.decoder.kind == "attention"
    unseen = load_dataset(write_shapes_dataset(tmp_path / "unseen", n_images=72, seed=2))
    encoder = build_encoder(bundle.config.encoder.name)
    features, failures = encode_paths(encoder, [image.path for image in unseen.images], kind="grid")
    assert not failures
    step_decoder = make_step_decoder(bundle.model, bundle.config.decoder)
    decoded = decoding.greedy_search(step_decoder, features, bundle.config.max_length)
    right = sum(bundle.vocab.decode(ids) in {normalize_caption(c) for c in image.captions}
                for ids, image in zip(decoded, unseen.images, strict=True))
    assert right / len(unseen.images) >= 0.9, f"{right}/{len(unseen.images)} unseen images right"
