"""A toy training problem for the fit loop: random feature rows, random captions, a small merge model."""

from __future__ import annotations

import numpy as np

from captioning.config import DecoderConfig, TrainConfig
from captioning.models import build_decoder
from captioning.training.fit import TrainingData, compile_model

VOCAB, MAX_LENGTH, FEATURE_DIM = 15, 7, 8
DECODER = DecoderConfig(kind="merge", embedding_dim=8, units=8, dropout=0.3)
CONFIG = TrainConfig(epochs=4, batch_size=16, learning_rate=0.01, early_stopping_patience=10,
                     reduce_lr_patience=1, reduce_lr_factor=0.5, seed=7)
FINGERPRINT = {"dataset": "toy", "batch_size": 16, "epochs": 4}


def toy_data(images=20, captions_per_image=3, seed=0) -> TrainingData:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(images, FEATURE_DIM)).astype(np.float16)
    rows = np.repeat(np.arange(images), captions_per_image)
    lengths = rng.integers(1, MAX_LENGTH - 1, size=len(rows))
    tokens = np.zeros((len(rows), MAX_LENGTH), dtype=np.int32)
    for i, n in enumerate(lengths):
        tokens[i, : n + 2] = [2, *rng.integers(4, VOCAB, size=n), 3]
    split = len(rows) * 3 // 4
    return TrainingData(features, rows[:split], tokens[:split], rows[split:], tokens[split:])


def toy_model(seed):
    import keras

    keras.utils.set_random_seed(seed)
    model = build_decoder(VOCAB, MAX_LENGTH, (FEATURE_DIM,), DECODER)
    compile_model(model, CONFIG.learning_rate)
    return model
