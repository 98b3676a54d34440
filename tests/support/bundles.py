"""Tiny real model bundles for captioning tests.

``make_tiny_bundle`` saves an untrained merge decoder (small layers, random weights) over the
efficientnet_lite0 encoder with random weights through ``bundle.save_bundle``: every file a real
bundle has, the real encoder graph and step decoder, built in seconds. Captions from it are
arbitrary words from its vocabulary, which is all the CLI and Captioner plumbing tests need;
learning itself is tested by training on the shapes dataset (tests of the training pipeline).

The session-wide ``tiny_bundle`` fixture (tests/conftest.py) is one of these.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from captioning import config

WORDS = ["a", "red", "blue", "green", "circle", "square", "triangle", "on", "white", "background"]
MAX_LENGTH = 8
FEATURE_DIM = 1280  # the EfficientNet-Lite pooled width
# Grid side of each EfficientNet-Lite variant (input 224, 240, 260).
LITE_GRID = {"efficientnet_lite0": 7, "efficientnet_lite1": 8, "efficientnet_lite2": 9}


def shipped_architecture() -> str:
    """What every command says the shipped model is, e.g. ``efficientnet_lite1 + 4 x attention ensemble``.

    Taken from its config.json here rather than written into each test, so re-shipping the model
    changes no test of how models are named and chosen (``default_model.architecture`` has its own).
    """
    from captioning.bundles import default_model
    from captioning.bundles.store import read_bundle_config

    return default_model.architecture(read_bundle_config(config.DEFAULT_BUNDLE_DIR))


def config_without_dataset():
    """A valid BundleConfig that records no training dataset: every dataset is unseen by it."""
    from captioning.bundles.schema import BundleConfig, EncoderSpec
    from captioning.config import DecoderConfig

    return BundleConfig(encoder=EncoderSpec(name="efficientnet_lite0"), decoder=DecoderConfig(kind="merge"), vocab_size=10,
                        max_length=MAX_LENGTH, feature_shape=(FEATURE_DIM,))


def make_tiny_bundle(target: Path, kind: str = "merge", seed: int = 0, words: Sequence[str] = WORDS,
                     units: int = 16, encoder: str = "efficientnet_lite0", export: bool = False) -> Path:
    """Save a small untrained bundle at ``target``.

    Args:
        target: the bundle folder to write.
        kind: decoder kind, ``"merge"`` (pooled features) or ``"attention"`` (grid features).
        seed: Keras seed for the random weights.
        words: the vocabulary's words (after the reserved tokens).
        units: LSTM width.
        encoder: an EfficientNet-Lite variant (random weights); sets the grid of an attention
            bundle (7x7, 8x8 or 9x9).
        export: also write its exported (LiteRT) form, as a real save does (~10 s more).

    Returns:
        The bundle folder.
    """
    import keras

    from captioning.bundles import store as bundle
    from captioning.bundles.schema import BundleConfig, EncoderSpec
    from captioning.config import DecoderConfig
    from captioning.data.text import RESERVED_TOKENS, Vocabulary
    from captioning.models import build_decoder

    vocab = Vocabulary([*RESERVED_TOKENS, *words])
    decoder = DecoderConfig(kind=kind, embedding_dim=16, units=units, dropout=0.0, attention_dim=16)
    grid = LITE_GRID[encoder]
    feature_shape = (FEATURE_DIM,) if kind == "merge" else (grid, grid, FEATURE_DIM)
    keras.utils.set_random_seed(seed)
    model = build_decoder(len(vocab), MAX_LENGTH, feature_shape, decoder)
    settings = BundleConfig(encoder=EncoderSpec(name=encoder, weights_id="none", random_weights=True), decoder=decoder,
                            vocab_size=len(vocab), max_length=MAX_LENGTH, feature_shape=feature_shape)
    return bundle.save_bundle(target, model, vocab, settings, {"loss": [3.0], "val_loss": [3.1]}, export=export)
