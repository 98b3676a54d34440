"""Every default of the tool, in one place.

Modules take these dataclasses as arguments instead of reading globals, so tests and the CLI can
override any field with ``dataclasses.replace``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Overridable so tests (and users with a read-only checkout) can redirect what the tool writes.
DATA_DIR = Path(os.environ.get("CAPTIONING_DATA_DIR", PROJECT_ROOT / "data"))
MODELS_DIR = Path(os.environ.get("CAPTIONING_MODELS_DIR", PROJECT_ROOT / "saved_models"))
FEATURE_CACHE_DIR = DATA_DIR / "features"
DEFAULT_BUNDLE_DIR = PROJECT_ROOT / "saved_models" / "default"

MINI_COCO_SOURCE = "mini-coco"
MINI_COCO_HANDLE = "nagasai524/mini-coco2014-dataset-for-image-captioning"

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# The menu numbers these in this order: new encoders go at the end.
ENCODER_NAMES = ("resnet50", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
                 "densenet201")
DEFAULT_ENCODER = "resnet50"
DECODER_KINDS = ("merge", "attention")

DEFAULT_CAPTION_PNG = "captioned_image.png"
DEFAULT_BEAM_SIZE = 3


@dataclass(frozen=True)
class SplitConfig:
    """How images are assigned to train/validation/test (by image, never by caption)."""

    seed: int = 1234
    val_fraction: float = 0.1
    test_fraction: float = 0.1


@dataclass(frozen=True)
class VocabConfig:
    """How the vocabulary and the maximum caption length are chosen from training captions."""

    min_count: int = 5
    max_size: int | None = None
    length_percentile: float = 95.0


@dataclass(frozen=True)
class DecoderConfig:
    """Sizes and regularisation of the caption decoder."""

    kind: str = "merge"
    embedding_dim: int = 256
    units: int = 256
    dropout: float = 0.5
    attention_dim: int = 256
    # Weight of the doubly stochastic attention penalty. The paper's 1.0 scored BLEU-4 19.1 on
    # Flickr8k validation, 0.3 scored 20.2 and 0 scored 19.2 (saved_models/default/MODEL_CARD.md).
    attention_regularization: float = 0.3
    # Attention decoders first reduce each grid cell (1280/2048-d) to this width, once per image.
    attention_feature_dim: int = 256


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings for ``train``."""

    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 1e-3
    early_stopping_patience: int = 3
    reduce_lr_patience: int = 1
    reduce_lr_factor: float = 0.5
    # Validation loss is in nats per word; a gain under 0.01 (1% perplexity) counts as a plateau.
    # Keras's default, 1e-4, kept the rate high through epochs that improved by 0.002 while the
    # decoder had already begun to overfit.
    reduce_lr_min_delta: float = 0.01
    seed: int = 1234


@dataclass(frozen=True)
class ExtractConfig:
    """Batching of feature extraction."""

    batch_size: int = 32
