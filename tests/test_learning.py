"""Learning, tested by learning: train on drawn shapes through the real pipeline (real
EfficientNet-Lite0 features, train_model, bundle) and name unseen drawings exactly right."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("tensorflow")

from captioning import config  # noqa: E402
from captioning.data.text import normalize_caption  # noqa: E402
from tests.support.shapes_dataset import write_shapes_dataset  # noqa: E402


@pytest.mark.slow  # ~1 min: real encoder, ~25 epochs
def test_trained_model_captions_unseen_shapes(tmp_path, capsys):
    from captioning.bundles.store import load_bundle
    from captioning.data.datasets import load_dataset
    from captioning.encoders import build_encoder
    from captioning.features.extraction import encode_paths
    from captioning.inference.search import greedy_search
    from captioning.models import make_step_decoder
    from captioning.training.pipeline import TrainOptions, train_model

    started = time.time()
    options = TrainOptions(
        dataset=str(write_shapes_dataset(tmp_path / "train", n_images=216, seed=1)),
        encoder="efficientnet_lite0",
        decoder=config.DecoderConfig(kind="merge", embedding_dim=64, units=128, dropout=0.2),
        train=config.TrainConfig(epochs=30, batch_size=32, learning_rate=3e-3, early_stopping_patience=4,
                                 seed=3),
        vocab=config.VocabConfig(min_count=1),
    )
    result = train_model(options, log=lambda line: None)
    assert result.bundle_dir == config.MODELS_DIR / "train-efficientnet_lite0-merge"
    assert not (result.bundle_dir / ".checkpoint").exists()  # finished: nothing to resume

    bundle = load_bundle(result.bundle_dir)
    unseen = load_dataset(write_shapes_dataset(tmp_path / "unseen", n_images=72, seed=2))
    encoder = build_encoder(bundle.config.encoder.name)
    features, failures = encode_paths(encoder, [image.path for image in unseen.images])
    assert not failures
    decoded = greedy_search(make_step_decoder(bundle.model, bundle.config.decoder), features, bundle.config.max_length)
    right = sum(bundle.vocab.decode(ids) in {normalize_caption(c) for c in image.captions}
                for ids, image in zip(decoded, unseen.images, strict=True))
    accuracy = right / len(unseen.images)
    with capsys.disabled():
        print(f"\nlearning: {right}/{len(unseen.images)} unseen shape images captioned exactly right "
              f"({accuracy:.0%}), {result.epochs_run} epochs, best val loss {result.best_val_loss:.3f}, "
              f"{time.time() - started:.0f} s")
    assert accuracy >= 0.9
