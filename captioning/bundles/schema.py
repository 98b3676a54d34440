"""The typed schema of a bundle's ``config.json``, checked before anything is built from it.

``BundleConfig.from_json(data, source)`` checks every field's type and plausible size (vocabulary,
caption length, layer widths, feature shape against the encoder) and raises a one-line
``BundleError`` naming the file and the field. A model is built from these numbers, so an
implausible one would otherwise allocate gigabytes (a 10-million-word vocabulary), loop for hours
(``max_length: 100000``) or fail deep inside Keras with a traceback (``"decoder": null``).

Keys this version does not know are ignored (a newer tool may add some; an incompatible change
raises ``FORMAT_VERSION``). Optional records (dataset, split, training, ...) may be absent or null.
The limits come from ``captioning.config``. TensorFlow-free.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from captioning import config
from captioning.data.text import RESERVED_TOKENS
from captioning.errors import BundleError
from captioning.storage.safe_text import escape

FORMAT_VERSION = 1
WEIGHTS_DTYPES = ("float16", "float32")
_HINT = "the bundle is damaged or was not written by this tool; retrain the model or re-copy the bundle"
_MISSING = object()


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

    @property
    def feature_dim(self) -> int:
        """Channels of this encoder's features (2048 for resnet50, 1280 for efficientnet_lite0)."""
        return config.ENCODER_SHAPES[self.name].feature_dim

    @property
    def grid_size(self) -> int:
        """Side of this encoder's feature grid (7 at 224 px, 8 at 240, 9 at 260)."""
        return config.ENCODER_SHAPES[self.name].grid_size


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
    split: config.SplitConfig | None = None  # some bundles record the split here


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
    epochs_run: int | None = None
    best_epoch: int | None = None
    best_val_loss: float | None = None  # may be NaN: a diverged run is still described
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


@dataclass(frozen=True)
class BundleConfig:
    """A bundle's ``config.json``, every field checked."""

    format_version: int
    encoder: EncoderSpec
    decoder: config.DecoderConfig
    vocab_size: int  # word ids, reserved tokens included
    max_length: int  # caption tokens counting START and END
    feature_shape: tuple[int, ...]  # (D,) pooled or (G, G, D) grid
    created: str | None = None
    dataset: DatasetRecord | None = None
    split: config.SplitConfig | None = None
    vocab_config: config.VocabConfig | None = None
    training: TrainingRecord | None = None
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
                              f"{_kind(data)}); retrain the model")
        fields = _Fields(data, source)
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
            ensemble=_ensemble(fields.record("ensemble")),
            weights_dtype=fields.choice("weights_dtype", WEIGHTS_DTYPES),
        )
        parameters = settings.estimated_parameters()
        if parameters > config.MAX_DECODER_PARAMETERS:
            raise BundleError(f"{escape(source)}: vocab_size {settings.vocab_size} with these decoder widths "
                              f"makes about {parameters:,} weights, over the {config.MAX_DECODER_PARAMETERS:,} "
                              f"this tool loads; {_HINT}")
        return settings

    @property
    def feature_kind(self) -> str:
        """``"grid"`` or ``"pooled"``: the features the decoder reads."""
        return self.decoder.feature_kind

    @property
    def member_count(self) -> int:
        """Weights files in the bundle: one per ensemble member, else one."""
        return len(self.ensemble) if self.ensemble else 1

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


class _Fields:
    """Typed access to one JSON object's fields, failing with the file and the field's full name."""

    def __init__(self, data: dict, source: str | Path, prefix: str = ""):
        self.data, self.source, self.prefix = data, source, prefix

    def fail(self, key: str, problem: str):
        raise BundleError(f"{escape(self.source)}: {self.prefix}{key} {problem}; {_HINT}")

    def _get(self, key: str, required: bool) -> Any:
        value = self.data.get(key, _MISSING)
        if value is _MISSING or value is None:
            if required:
                self.fail(key, "is missing" if value is _MISSING else "must be set, got null")
            return None
        return value

    def record(self, key: str, required: bool = False) -> _Fields | None:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.fail(key, f"must be an object, got {_kind(value)}")
        return _Fields(value, self.source, f"{self.prefix}{key}.")

    def integer(self, key: str, low: int | None = None, high: int | None = None, required: bool = False):
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(key, f"must be a whole number, got {_kind(value)}")
        if (low is not None and value < low) or (high is not None and value > high):
            self.fail(key, f"must be {_range(low, high)}, got {value}")
        return value

    def number(self, key: str, low: float | None = None, high: float | None = None, required: bool = False,
               below_high: bool = False, allow_nan: bool = False):
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            self.fail(key, f"must be a number, got {_kind(value)}")
        value = float(value)
        if math.isnan(value) and allow_nan:
            return value
        if not math.isfinite(value):
            self.fail(key, f"must be a finite number, got {value}")
        too_high = high is not None and (value >= high if below_high else value > high)
        if (low is not None and value < low) or too_high:
            self.fail(key, f"must be {_range(low, high, below_high)}, got {value}")
        return value

    def text(self, key: str, required: bool = False) -> str | None:
        value = self._get(key, required)
        if value is not None and not isinstance(value, str):
            self.fail(key, f"must be text, got {_kind(value)}")
        return value

    def flag(self, key: str) -> bool | None:
        value = self._get(key, False)
        if value is not None and not isinstance(value, bool):
            self.fail(key, f"must be true or false, got {_kind(value)}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], required: bool = False) -> str | None:
        value = self.text(key, required)
        if value is not None and value not in choices:
            self.fail(key, f"must be one of {', '.join(choices)}, got {escape(repr(value)[:40])}")
        return value


def _encoder(fields: _Fields) -> EncoderSpec:
    return EncoderSpec(
        name=fields.choice("name", config.ENCODER_NAMES, required=True),
        weights_id=fields.text("weights_id"),
        input_size=fields.integer("input_size", 32, 4096),
        feature_kind=fields.choice("feature_kind", config.FEATURE_KINDS),
        weights=fields.text("weights"),
        random_weights=bool(fields.flag("random_weights")),
        note=fields.text("note"),
    )


def _decoder(fields: _Fields) -> config.DecoderConfig:
    """The decoder's settings; absent ones take ``DecoderConfig``'s defaults, as old bundles need."""
    defaults = config.DecoderConfig()
    width = {"low": 1, "high": config.MAX_DECODER_WIDTH}
    values = {
        "kind": fields.choice("kind", config.DECODER_KINDS),
        "embedding_dim": fields.integer("embedding_dim", **width),
        "units": fields.integer("units", **width),
        "dropout": fields.number("dropout", 0.0, 1.0, below_high=True),
        "attention_dim": fields.integer("attention_dim", **width),
        "attention_regularization": fields.number("attention_regularization", 0.0, 1000.0),
        "attention_feature_dim": fields.integer("attention_feature_dim", **width),
    }
    return dataclasses.replace(defaults, **{k: v for k, v in values.items() if v is not None})


def _feature_shape(fields: _Fields, encoder: EncoderSpec, decoder: config.DecoderConfig) -> tuple[int, ...]:
    """``feature_shape``, which must be what the encoder gives the decoder's kind."""
    value = fields._get("feature_shape", True)
    if not isinstance(value, list) or not all(isinstance(n, int) and not isinstance(n, bool) for n in value):
        fields.fail("feature_shape", f"must be a list of whole numbers, got {_kind(value)}")
    kind = decoder.feature_kind
    expected = list(config.ENCODER_SHAPES[encoder.name].feature_shape(kind))
    if value != expected:
        fields.fail("feature_shape", f"{escape(str(value)[:60])} does not fit the {decoder.kind} decoder over the "
                                     f"{encoder.name} encoder ({kind} features are {expected})")
    if encoder.feature_kind not in (None, kind):
        fields.fail("encoder.feature_kind", f"is {encoder.feature_kind} but the {decoder.kind} decoder "
                                            f"takes {kind} features")
    return tuple(value)


def _split(fields: _Fields | None) -> config.SplitConfig | None:
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


def _vocab_config(fields: _Fields | None) -> config.VocabConfig | None:
    if fields is None:
        return None
    defaults = config.VocabConfig()
    return config.VocabConfig(
        min_count=_or(fields.integer("min_count", 1), defaults.min_count),
        max_size=fields.integer("max_size", len(RESERVED_TOKENS)),
        length_percentile=_or(fields.number("length_percentile", 0.0, 100.0), defaults.length_percentile),
    )


def _dataset(fields: _Fields | None) -> DatasetRecord | None:
    if fields is None:
        return None
    counts = {name: fields.integer(name, 0) for name in
              ("train_images", "val_images", "test_images", "train_captions", "val_captions")}
    return DatasetRecord(source=fields.text("source"), key=fields.text("key"), name=fields.text("name"),
                         limit=fields.integer("limit", 1), split=_split(fields.record("split")), **counts)


def _training(fields: _Fields | None) -> TrainingRecord | None:
    if fields is None:
        return None
    return TrainingRecord(
        epochs=fields.integer("epochs", 0), batch_size=fields.integer("batch_size", 1),
        learning_rate=fields.number("learning_rate", 0.0),
        early_stopping_patience=fields.integer("early_stopping_patience", 0),
        reduce_lr_patience=fields.integer("reduce_lr_patience", 0),
        reduce_lr_factor=fields.number("reduce_lr_factor", 0.0),
        reduce_lr_min_delta=fields.number("reduce_lr_min_delta", 0.0),
        seed=fields.integer("seed"), epochs_run=fields.integer("epochs_run", 0),
        best_epoch=fields.integer("best_epoch", 0),
        best_val_loss=fields.number("best_val_loss", allow_nan=True),
        stopped_early=fields.flag("stopped_early"), interrupted=fields.flag("interrupted"),
        seconds=fields.number("seconds", 0.0),
    )


def _ensemble(fields: _Fields | None) -> tuple[EnsembleMember, ...] | None:
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
            fields.fail(f"members[{index}]", f"must be an object, got {_kind(member)}")
        entry = _Fields(member, fields.source, f"{fields.prefix}members[{index}].")
        decoder = entry.record("decoder")
        parsed.append(EnsembleMember(source=entry.text("source"), created=entry.text("created"),
                                     decoder=_decoder(decoder) if decoder else None,
                                     training=_training(entry.record("training"))))
    return tuple(parsed)


def _or(value, default):
    return default if value is None else value


def _range(low, high, below_high: bool = False) -> str:
    """``between 3 and 100``, ``at least 0``, ``at least 0.0 and below 1.0``."""
    if low is not None and high is not None and not below_high:
        return f"between {low} and {high}"
    bounds = [f"at least {low}"] if low is not None else []
    if high is not None:
        bounds.append(f"below {high}" if below_high else f"at most {high}")
    return " and ".join(bounds)


def _kind(value: Any) -> str:
    """A JSON value described for a message: ``null``, ``a list``, ``the text 'abc'``, ``1.5``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the text {escape(repr(value[:30]))}"
    return escape(repr(value))[:40]


__all__ = ["BundleConfig", "DatasetRecord", "EncoderSpec", "EnsembleMember", "FORMAT_VERSION", "TrainingRecord"]
