"""The typed schema of a bundle's ``config.json``: its only reader and its only writer.

``read_config(path)`` reads the file within limits and ``BundleConfig.from_json(data, source)`` checks every field's type and plausible size (vocabulary,
caption length, layer widths, feature shape against the encoder) and raises a one-line
``BundleError`` naming the file and the field. A model is built from these numbers, so an
implausible one would otherwise allocate gigabytes (a 10-million-word vocabulary), loop for hours
(``max_length: 100000``) or fail deep inside Keras with a traceback (``"decoder": null``).

Keys this version does not know are ignored (a newer tool may add some; an incompatible change
raises ``FORMAT_VERSION``). Optional records (dataset, split, training, ...) may be absent or null.
``BundleConfig.to_json()`` gives back what this tool writes (``write_config``): a bundle read and
written again is the same file. The limits come from ``captioning.config``. TensorFlow-free.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from captioning import config
from captioning.bundles.config_fields import HINT, Fields, describe_value
from captioning.bundles.layout import WEIGHTS_FILE, member_weights_file
from captioning.data.text import RESERVED_TOKENS
from captioning.errors import BundleError, InputFileError
from captioning.storage.atomic import write_json_atomic
from captioning.storage.safe_json import read_json_file
from captioning.storage.safe_text import escape

FORMAT_VERSION = 1
WEIGHTS_DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class EncoderSpec:
    """``config.json["encoder"]``: which image encoder the decoder was trained on."""

    name: str
    weights_id: str | None = None  # "imagenet", "none" or "md5-<hex>" of a local weights file
    input_size: int | None = None
    feature_kind: str | None = None  # "pooled" or "grid"
    weights: str | None = None  # the local weights file, when weights_id is an md5
    random_weights: bool = False
    note: str | None = None

    def weights_to_load(self, source: str | Path) -> str:
        """What ``encoders.build_encoder`` takes to rebuild this encoder: ``imagenet``, ``none`` or a file.

        Raises:
            BundleError: the weights were a local file that config.json does not name.
        """
        if self.weights is not None:
            return self.weights
        if self.weights_id not in (None, "imagenet", "none"):
            raise BundleError(f"{escape(source)}: the model was trained with encoder weights {self.weights_id} "
                              "but config.json does not say where that file is; retrain the model")
        return self.weights_id or "imagenet"

    @property
    def feature_dim(self) -> int:
        """Channels of this encoder's features (2048 for resnet50, 1280 for efficientnet_lite0)."""
        return config.ENCODER_SHAPES[self.name].feature_dim

    @property
    def grid_size(self) -> int:
        """Side of this encoder's feature grid (7 at 224 px, 8 at 240, 9 at 260)."""
        return config.ENCODER_SHAPES[self.name].grid_size

    @property
    def has_random_weights(self) -> bool:
        """Built with ``weights="none"`` (tests and benchmarks): its features mean nothing."""
        return self.random_weights or self.weights_id == "none"

    @property
    def has_classifier(self) -> bool:
        """Whether these weights keep the CNN's ImageNet classifier, which tags come from
        (``config.ENCODERS_WITH_CLASSIFIER``, real weights; ``captioning.tags``)."""
        return self.name in config.ENCODERS_WITH_CLASSIFIER and not self.has_random_weights


@dataclass(frozen=True)
class DatasetRecord:
    """``config.json["dataset"]``: what the model was trained on."""

    source: str | None = None  # "mini-coco" or the dataset folder
    key: str | None = None
    name: str | None = None
    limit: int | None = None
    train_images: int | None = None
    val_images: int | None = None
    test_images: int | None = None
    train_captions: int | None = None
    val_captions: int | None = None


@dataclass(frozen=True)
class TrainingRecord:
    """``config.json["training"]``: the optimisation settings and how the run went."""

    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    early_stopping_patience: int | None = None
    reduce_lr_patience: int | None = None
    reduce_lr_factor: float | None = None
    reduce_lr_min_delta: float | None = None
    seed: int | None = None
    select_by: str | None = None  # None: written before the choice existed (val_loss)
    select_images: int | None = None
    select_beam_size: int | None = None
    epochs_run: int | None = None
    best_epoch: int | None = None
    best_val_loss: float | None = None  # may be NaN: a diverged run is still described
    best_val_cider: float | None = None  # with select_by "val_cider"
    word_vectors: str | None = None  # the GloVe-format file the word embedding started from
    freeze_word_vectors: bool | None = None
    word_vectors_found: int | None = None  # vocabulary words that file had
    stopped_early: bool | None = None
    interrupted: bool | None = None
    seconds: float | None = None
    precision: str | None = None  # the compute dtype trained in: "float32" or "bfloat16" (mixed)


@dataclass(frozen=True)
class FineTuningRecord:
    """``config.json["fine_tuning"]``: self-critical fine-tuning for CIDEr-D after cross-entropy.

    CIDEr-D here is the validation monitor's (x100, ``training.caption_quality``), on
    ``monitor_images`` validation photos at ``monitor_beam_size``.
    """

    method: str | None = None  # what was optimised, in words
    source: str | None = None  # the bundle that was fine-tuned
    epochs: int | None = None
    learning_rate: float | None = None
    samples_per_image: int | None = None
    images_per_batch: int | None = None
    patience: int | None = None
    seed: int | None = None
    monitor_images: int | None = None
    monitor_beam_size: int | None = None
    epochs_run: int | None = None
    best_epoch: int | None = None  # 0: no epoch beat the starting model
    start_val_cider: float | None = None
    best_val_cider: float | None = None
    stopped_early: bool | None = None
    interrupted: bool | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class EnsembleMember:
    """One entry of ``config.json["ensemble"]["members"]``: a decoder the ensemble averages."""

    source: str | None = None
    created: str | None = None
    decoder: config.DecoderConfig | None = None
    training: TrainingRecord | None = None
    fine_tuning: FineTuningRecord | None = None
    # The encoder whose features this member reads, when it is not the bundle's own (``encoder``):
    # an ensemble may mix members trained on different encoders' features (``inference.encoder_set``).
    encoder: EncoderSpec | None = None


@dataclass(frozen=True)
class BundleConfig:
    """A bundle's ``config.json``, every field checked.

    ``format_version`` and ``created`` are set when the bundle is written (``store``).
    """

    encoder: EncoderSpec
    decoder: config.DecoderConfig
    vocab_size: int  # word ids, reserved tokens included
    max_length: int  # caption tokens counting START and END
    feature_shape: tuple[int, ...]  # (D,) pooled or (G, G, D) grid
    format_version: int = FORMAT_VERSION
    created: str | None = None
    dataset: DatasetRecord | None = None
    split: config.SplitConfig | None = None
    vocab_config: config.VocabConfig | None = None
    training: TrainingRecord | None = None
    fine_tuning: FineTuningRecord | None = None  # None unless fine-tuned with ``scst``
    ensemble: tuple[EnsembleMember, ...] | None = None  # None unless an ensemble
    weights_dtype: str | None = None

    @classmethod
    def from_json(cls, data: Any, source: str | Path) -> BundleConfig:
        """Check a parsed ``config.json`` and return it typed.

        Args:
            data: the parsed JSON.
            source: the file it came from, for messages.

        Returns:
            The BundleConfig.

        Raises:
            BundleError: one line naming ``source`` and the first field that is missing, of the
                wrong type or implausible; or a format version newer than this tool's.
        """
        if not isinstance(data, dict):
            raise BundleError(f"{escape(source)}: not a bundle config (expected a JSON object, got "
                              f"{describe_value(data)}); retrain the model")
        fields = Fields(data, source)
        version = data.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise BundleError(f"{escape(source)}: no format_version; not a bundle written by this tool")
        if version > FORMAT_VERSION:
            raise BundleError(f"{escape(source)}: bundle format {version} is newer than this tool supports "
                              f"({FORMAT_VERSION}); update the tool or retrain the model")
        if version < 1:
            fields.fail("format_version", f"must be 1 or more, got {version}")
        encoder = _encoder(fields.record("encoder", required=True))
        decoder = _decoder(fields.record("decoder", required=True))
        settings = cls(
            format_version=version,
            encoder=encoder,
            decoder=decoder,
            vocab_size=fields.integer("vocab_size", len(RESERVED_TOKENS), config.MAX_VOCAB_SIZE, required=True),
            max_length=fields.integer("max_length", config.MIN_CAPTION_LENGTH, config.MAX_CAPTION_LENGTH,
                                      required=True),
            feature_shape=_feature_shape(fields, encoder, decoder),
            created=fields.text("created"),
            dataset=_dataset(fields.record("dataset")),
            split=_split(fields.record("split")),
            vocab_config=_vocab_config(fields.record("vocab_config")),
            training=_training(fields.record("training")),
            fine_tuning=_fine_tuning(fields.record("fine_tuning")),
            ensemble=_ensemble(fields.record("ensemble")),
            weights_dtype=fields.choice("weights_dtype", WEIGHTS_DTYPES),
        )
        parameters = settings.estimated_parameters()
        if parameters > config.MAX_DECODER_PARAMETERS:
            raise BundleError(f"{escape(source)}: vocab_size {settings.vocab_size} with these decoder widths "
                              f"makes about {parameters:,} weights, over the {config.MAX_DECODER_PARAMETERS:,} "
                              f"this tool loads; {HINT}")
        return settings

    @property
    def feature_kind(self) -> str:
        """``"grid"`` or ``"pooled"``: the features the decoder reads."""
        return self.decoder.feature_kind

    @property
    def members(self) -> tuple[EnsembleMember, ...]:
        """An ensemble's members (source, decoder, training); empty for a single decoder."""
        return self.ensemble or ()

    @property
    def member_encoders(self) -> tuple[EncoderSpec, ...]:
        """The encoder each weights file's decoder reads, in weights-file order (the bundle's own
        ``encoder`` unless a member records another)."""
        if not self.ensemble:
            return (self.encoder,)
        return tuple(member.encoder or self.encoder for member in self.ensemble)

    @property
    def encoders(self) -> tuple[EncoderSpec, ...]:
        """The distinct encoders the decoders read, the bundle's own first: one unless the ensemble
        mixes encoders. Every photo is encoded by each of them."""
        distinct: list[EncoderSpec] = []
        for spec in (self.encoder, *self.member_encoders):
            if spec not in distinct:
                distinct.append(spec)
        return tuple(distinct)

    def features_of(self, spec: EncoderSpec) -> tuple[int, ...]:
        """The shape of one photo's features from encoder ``spec`` for this bundle's decoder kind
        (``feature_shape`` for the bundle's own encoder)."""
        return config.ENCODER_SHAPES[spec.name].feature_shape(self.feature_kind)

    @property
    def member_count(self) -> int:
        """Weights files in the bundle: one per ensemble member, else one."""
        return len(self.ensemble) if self.ensemble else 1

    @property
    def weights_files(self) -> list[str]:
        """The bundle's weights files, one per member: ``model.weights.h5``, then ``model-2.weights.h5``..."""
        return [member_weights_file(n) for n in range(1, self.member_count + 1)]

    def to_json(self) -> dict[str, Any]:
        """config.json's content: what ``from_json`` reads back as this same BundleConfig.

        Unset values are left out, but for ``dataset.limit`` and ``vocab_config.max_size``, where
        null means "none" and is written as such.
        """
        data: dict[str, Any] = {
            "format_version": self.format_version, "created": self.created,
            "encoder": _fields(self.encoder, drop_false=("random_weights",)),
            "decoder": dataclasses.asdict(self.decoder),
            "vocab_size": self.vocab_size, "max_length": self.max_length,
            "feature_shape": list(self.feature_shape),
            "dataset": None if self.dataset is None else _fields(self.dataset, keep_none=("limit",)),
            "split": None if self.split is None else dataclasses.asdict(self.split),
            "vocab_config": None if self.vocab_config is None else dataclasses.asdict(self.vocab_config),
            "training": None if self.training is None else _fields(self.training),
            "fine_tuning": None if self.fine_tuning is None else _fields(self.fine_tuning),
            "ensemble": None if self.ensemble is None else {"members": [_member(m) for m in self.ensemble]},
            "weights_dtype": self.weights_dtype,
        }
        return {key: value for key, value in data.items() if value is not None}

    def estimated_parameters(self) -> int:
        """About how many weights one decoder of these sizes has (the largest layers only).

        Checked before a model is built, so an implausible config cannot allocate gigabytes.
        """
        d = self.decoder
        vocab, feature_dim = self.vocab_size, self.feature_shape[-1]
        words = vocab * d.embedding_dim + d.units * vocab  # embedding + word classifier
        lstm_input = d.embedding_dim + (d.attention_feature_dim if d.kind == "attention" else 0)
        lstm = 4 * d.units * (lstm_input + d.units)
        image = feature_dim * (d.attention_feature_dim if d.kind == "attention" else d.units)
        attention = d.attention_dim * (d.units + d.attention_feature_dim) if d.kind == "attention" else 0
        return words + lstm + image + attention + d.units * d.units


def _encoder(fields: Fields) -> EncoderSpec:
    return EncoderSpec(
        name=fields.choice("name", config.ENCODER_NAMES, required=True),
        weights_id=fields.text("weights_id"),
        input_size=fields.integer("input_size", 32, 4096),
        feature_kind=fields.choice("feature_kind", config.FEATURE_KINDS),
        weights=fields.text("weights"),
        random_weights=bool(fields.flag("random_weights")),
        note=fields.text("note"),
    )


# Bundles written before the attention decoder existed record no ``decoder.kind``: they are merge,
# whatever ``DecoderConfig``'s default for new training runs is.
LEGACY_DECODER_KIND = "merge"


def _decoder(fields: Fields) -> config.DecoderConfig:
    """The decoder's settings; absent ones take ``DecoderConfig``'s defaults, as old bundles need
    (but ``kind``, which old bundles lack, is ``LEGACY_DECODER_KIND``)."""
    defaults = config.DecoderConfig(kind=LEGACY_DECODER_KIND)
    widest = config.MAX_DECODER_WIDTH
    values: dict[str, Any] = {
        "kind": fields.choice("kind", config.DECODER_KINDS),
        "embedding_dim": fields.integer("embedding_dim", 1, widest),
        "units": fields.integer("units", 1, widest),
        "dropout": fields.number("dropout", 0.0, 1.0, below_high=True),
        "attention_dim": fields.integer("attention_dim", 1, widest),
        "attention_regularization": fields.number("attention_regularization", 0.0, 1000.0),
        "attention_feature_dim": fields.integer("attention_feature_dim", 1, widest),
    }
    return dataclasses.replace(defaults, **{k: v for k, v in values.items() if v is not None})


def _feature_shape(fields: Fields, encoder: EncoderSpec, decoder: config.DecoderConfig) -> tuple[int, ...]:
    """``feature_shape``, which must be what the encoder gives the decoder's kind."""
    value = fields.get("feature_shape", True)
    if not isinstance(value, list) or not all(isinstance(n, int) and not isinstance(n, bool) for n in value):
        fields.fail("feature_shape", f"must be a list of whole numbers, got {describe_value(value)}")
    kind = decoder.feature_kind
    expected = list(config.ENCODER_SHAPES[encoder.name].feature_shape(kind))
    if value != expected:
        fields.fail("feature_shape", f"{escape(str(value)[:60])} does not fit the {decoder.kind} decoder over the "
                                     f"{encoder.name} encoder ({kind} features are {expected})")
    if encoder.feature_kind not in (None, kind):
        fields.fail("encoder.feature_kind", f"is {encoder.feature_kind} but the {decoder.kind} decoder "
                                            f"takes {kind} features")
    return tuple(value)


def _split(fields: Fields | None) -> config.SplitConfig | None:
    if fields is None:
        return None
    defaults = config.SplitConfig()
    split = config.SplitConfig(
        seed=_or(fields.integer("seed"), defaults.seed),
        val_fraction=_or(fields.number("val_fraction", 0.0, 1.0, below_high=True), defaults.val_fraction),
        test_fraction=_or(fields.number("test_fraction", 0.0, 1.0, below_high=True), defaults.test_fraction),
    )
    if split.val_fraction + split.test_fraction >= 1:
        fields.fail("val_fraction", f"and test_fraction must sum below 1, got {split.val_fraction} + "
                                    f"{split.test_fraction}")
    return split


def _vocab_config(fields: Fields | None) -> config.VocabConfig | None:
    if fields is None:
        return None
    defaults = config.VocabConfig()
    return config.VocabConfig(
        min_count=_or(fields.integer("min_count", 1), defaults.min_count),
        max_size=fields.integer("max_size", len(RESERVED_TOKENS)),
        length_percentile=_or(fields.number("length_percentile", 0.0, 100.0), defaults.length_percentile),
    )


def _dataset(fields: Fields | None) -> DatasetRecord | None:
    if fields is None:
        return None
    counts = {name: fields.integer(name, 0) for name in
              ("train_images", "val_images", "test_images", "train_captions", "val_captions")}
    return DatasetRecord(source=fields.text("source"), key=fields.text("key"), name=fields.text("name"),
                         limit=fields.integer("limit", 1), **counts)


def _training(fields: Fields | None) -> TrainingRecord | None:
    if fields is None:
        return None
    return TrainingRecord(
        epochs=fields.integer("epochs", 0), batch_size=fields.integer("batch_size", 1),
        learning_rate=fields.number("learning_rate", 0.0),
        early_stopping_patience=fields.integer("early_stopping_patience", 0),
        reduce_lr_patience=fields.integer("reduce_lr_patience", 0),
        reduce_lr_factor=fields.number("reduce_lr_factor", 0.0),
        reduce_lr_min_delta=fields.number("reduce_lr_min_delta", 0.0),
        seed=fields.integer("seed"), select_by=fields.choice("select_by", config.EPOCH_SELECTION),
        select_images=fields.integer("select_images", 1), select_beam_size=fields.integer("select_beam_size", 1),
        epochs_run=fields.integer("epochs_run", 0), best_epoch=fields.integer("best_epoch", 0),
        best_val_loss=fields.number("best_val_loss", allow_nan=True),
        best_val_cider=fields.number("best_val_cider", 0.0),
        word_vectors=fields.text("word_vectors"), freeze_word_vectors=fields.flag("freeze_word_vectors"),
        word_vectors_found=fields.integer("word_vectors_found", 0),
        stopped_early=fields.flag("stopped_early"), interrupted=fields.flag("interrupted"),
        seconds=fields.number("seconds", 0.0), precision=fields.text("precision"),
    )


def _fine_tuning(fields: Fields | None) -> FineTuningRecord | None:
    if fields is None:
        return None
    return FineTuningRecord(
        method=fields.text("method"), source=fields.text("source"), epochs=fields.integer("epochs", 0),
        learning_rate=fields.number("learning_rate", 0.0), samples_per_image=fields.integer("samples_per_image", 1),
        images_per_batch=fields.integer("images_per_batch", 1), patience=fields.integer("patience", 0),
        seed=fields.integer("seed"), monitor_images=fields.integer("monitor_images", 0),
        monitor_beam_size=fields.integer("monitor_beam_size", 1), epochs_run=fields.integer("epochs_run", 0),
        best_epoch=fields.integer("best_epoch", 0), start_val_cider=fields.number("start_val_cider", 0.0),
        best_val_cider=fields.number("best_val_cider", 0.0), stopped_early=fields.flag("stopped_early"),
        interrupted=fields.flag("interrupted"), seconds=fields.number("seconds", 0.0),
    )


def _ensemble(fields: Fields | None) -> tuple[EnsembleMember, ...] | None:
    if fields is None:
        return None
    members = fields.data.get("members")
    if not isinstance(members, list) or not members:
        raise BundleError(f"{escape(fields.source)}: the 'ensemble' entry has no list of members; "
                          "re-create the ensemble with `python image_captioning.py ensemble`")
    if len(members) > config.MAX_ENSEMBLE_MEMBERS:
        fields.fail("members", f"lists {len(members)} decoders, more than the {config.MAX_ENSEMBLE_MEMBERS} "
                               "this tool loads")
    parsed = []
    for index, member in enumerate(members):
        if not isinstance(member, dict):
            fields.fail(f"members[{index}]", f"must be an object, got {describe_value(member)}")
        entry = Fields(member, fields.source, f"{fields.prefix}members[{index}].")
        decoder = entry.record("decoder")
        encoder = entry.record("encoder")
        parsed.append(EnsembleMember(source=entry.text("source"), created=entry.text("created"),
                                     decoder=_decoder(decoder) if decoder else None,
                                     training=_training(entry.record("training")),
                                     fine_tuning=_fine_tuning(entry.record("fine_tuning")),
                                     encoder=None if encoder is None else _encoder(encoder)))
    return tuple(parsed)


def _fields(record: Any, keep_none: tuple[str, ...] = (), drop_false: tuple[str, ...] = ()) -> dict[str, Any]:
    """A flat record as JSON: its set fields (``keep_none`` ones even when None)."""
    values = dataclasses.asdict(record)
    return {key: value for key, value in values.items()
            if (value is not None or key in keep_none) and not (key in drop_false and value is False)}


def _member(member: EnsembleMember) -> dict[str, Any]:
    data = {"source": member.source, "created": member.created,
            "decoder": None if member.decoder is None else dataclasses.asdict(member.decoder),
            "training": None if member.training is None else _fields(member.training),
            "fine_tuning": None if member.fine_tuning is None else _fields(member.fine_tuning),
            "encoder": None if member.encoder is None else _fields(member.encoder, drop_false=("random_weights",))}
    return {key: value for key, value in data.items() if value is not None}


def read_bundle_json(path: Path, allow_nan: bool = False) -> Any:
    """One of a bundle's JSON files, read within limits (``safe_json``); any problem is one BundleError."""
    try:
        return read_json_file(path, config.MAX_BUNDLE_JSON_BYTES, allow_nan=allow_nan)
    except InputFileError as error:
        if error.missing:
            raise BundleError(f"{path}: file missing; the model bundle is incomplete, retrain or "
                              "re-copy it") from None
        raise BundleError(f"{path}: unreadable ({error.reason}); retrain or re-copy the model bundle") from None


def read_config(path: str | Path) -> BundleConfig:
    """Read and check a config.json file.

    Args:
        path: the file (``<bundle>/config.json``).

    Returns:
        The BundleConfig, every field checked.

    Raises:
        BundleError: the file is missing or unreadable, from a newer tool, or has a field that is
            missing, of the wrong type or implausible.
    """
    # NaN is allowed while parsing: a diverged run records a NaN loss; the schema refuses it
    # wherever a number is built from.
    return BundleConfig.from_json(read_bundle_json(Path(path), allow_nan=True), path)


def write_config(path: str | Path, bundle_config: BundleConfig) -> None:
    """Write ``bundle_config`` as config.json at ``path``, atomically, keys sorted.

    Raises:
        OSError: the file cannot be written (the caller turns it into one line).
    """
    write_json_atomic(path, bundle_config.to_json(), sort_keys=True)


def _or(value, default):
    return default if value is None else value


__all__ = ["FORMAT_VERSION", "WEIGHTS_FILE", "BundleConfig", "DatasetRecord", "EncoderSpec", "EnsembleMember",
           "FineTuningRecord",
           "TrainingRecord", "read_bundle_json", "read_config", "write_config"]
