"""Model bundles on disk (``saved_models/NAME/``): save atomically, load with clear errors, find, list.

A bundle is a folder::

    model.weights.h5   Keras weights (no architecture code, no pickle)
    vocab.json         text.Vocabulary
    config.json        format_version, decoder config, vocab size, max_length, feature shape,
                       encoder, dataset and split, training summary
    history.json       per-epoch loss / val_loss / learning rate
    loss_curve.png     training and validation loss by epoch
    trained_photos.json  digests of the photos training saw (``trained_photos``; optional)

(``layout`` lists every name a bundle folder may hold, these and what evaluate and the export add.)

An ensemble (``bundles.combine``) is the same folder with one more weights file per extra member
(``model-2.weights.h5``, ...) and an ``ensemble`` entry in config.json describing every member;
the members share the architecture, vocabulary and encoder. A tool that predates ensembles reads
such a bundle as its first member alone.

config.json is read and written through ``schema`` only. Loading rebuilds the architecture from it
with ``models.build_decoder`` and loads the weights into it, so nothing is deserialised from code
and renamed classes cannot break old bundles. TensorFlow is imported only inside the functions that
need it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from captioning import config as settings
from captioning.bundles import layout
from captioning.bundles.layout import (
    CONFIG_FILE,
    HISTORY_FILE,
    LOSS_CURVE_FILE,
    TRAINED_PHOTOS_FILE,
    VOCAB_FILE,
)
from captioning.bundles.schema import (
    FORMAT_VERSION,
    WEIGHTS_FILE,
    BundleConfig,
    DatasetRecord,
    FineTuningRecord,
    TrainingRecord,
    read_bundle_json,
    read_config,
    write_config,
)
from captioning.bundles.trained_photos import read_trained_photos, write_trained_photos
from captioning.data.text import Vocabulary
from captioning.errors import BundleError, ExportError
from captioning.storage import atomic
from captioning.storage.atomic import write_bytes_atomic, write_json_atomic
from captioning.storage.disk_space import ensure_free_space
from captioning.storage.output_folder import (
    BACKUP_INFIX,
    STAGING_INFIX,
    OutputFolderError,
    claim,
    recover_moved_bundle,
    recover_moved_bundles,
    write_failure,
)

if TYPE_CHECKING:
    import keras

REQUIRED_FILES = (CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE, HISTORY_FILE)
# Folders inside a bundle that belong to a training run, not to the bundle; kept across saves.
KEPT_FOLDERS = (layout.CHECKPOINT_FOLDER,)
TRAIN_HINT = "train one with `python image_captioning.py train`"


@dataclass
class Bundle:
    """A loaded model bundle."""

    path: Path
    config: BundleConfig
    vocab: Vocabulary
    model: keras.Model  # the training graph; make a step decoder from it to caption
    history: dict
    members: list[keras.Model] = field(default_factory=list)  # [model] unless an ensemble

    def __post_init__(self):
        if not self.members:
            self.members = [self.model]


def save_bundle(target: str | Path, model: keras.Model, vocab: Vocabulary, bundle_config: BundleConfig,
                history: dict, export: bool | None = None, trained_photos: Collection[str] | None = None) -> Path:
    """Write a bundle atomically: a temp folder beside ``target``, then a swap.

    An existing bundle at ``target`` stays untouched until the new one is complete; a training
    checkpoint folder inside it (``.checkpoint/``) is carried over.

    Args:
        target: The bundle folder.
        model: The trained keras model.
        vocab: Its vocabulary.
        bundle_config: The settings (decoder, vocab_size, max_length, feature_shape, ...);
            ``created`` and ``weights_dtype`` are set here.
        history: Per-epoch metrics, e.g. ``{"loss": [...], "val_loss": [...]}``.
        export: also write the exported form (as ``write_bundle_folder``).
        trained_photos: digests of the photos training saw (``bundles.trained_photos``),
            written to trained_photos.json so evaluations leave them out; None writes no record.

    Returns:
        The bundle folder.

    Raises:
        OutputFolderError: as ``write_bundle_folder``.
    """
    from captioning.render.loss_curve import save_loss_curve
    from captioning.storage.model_files import weights_as_float16, weights_file_bytes

    def fill(staging: Path) -> None:
        # Built in memory first: its size is known before writing, and a disk that fills anyway
        # fails a plain write (HDF5 writing to a full disk crashes the process).
        weights = weights_as_float16(weights_file_bytes(_inference_copy(model, bundle_config)))
        ensure_free_space(staging.parent, len(weights), "the model bundle", error=OutputFolderError)
        write_bytes_atomic(staging / WEIGHTS_FILE, weights)
        vocab.save(staging / VOCAB_FILE)
        write_json_atomic(staging / HISTORY_FILE, history, sort_keys=True)
        save_loss_curve(history, staging / LOSS_CURVE_FILE)
        if trained_photos is not None:
            write_trained_photos(staging, trained_photos)

    return write_bundle_folder(target, dataclasses.replace(bundle_config, weights_dtype="float16"), fill, export)


def write_bundle_folder(target: str | Path, bundle_config: BundleConfig, fill: Callable[[Path], None],
                        export: bool | None = None) -> Path:
    """Write a bundle atomically: ``fill`` writes its files into a temp folder, then a swap.

    Holds the folder's lock throughout (``output_folder.claim``; re-entrant, so a training run
    that holds it passes through) and refuses a folder that is not the tool's to replace. At every
    instant a complete bundle (the old, then the new) is at ``target``.

    Args:
        target: The bundle folder.
        bundle_config: The bundle's settings; ``format_version`` and ``created`` are set here.
        fill: ``fill(staging_folder)`` writes every file but config.json; config.json is written
            last, as its presence marks a complete bundle.
        export: also write the exported form (``exported/``, captioning without TensorFlow) from
            the weights files ``fill`` wrote; default ``config.EXPORT_BUNDLES``.

    Returns:
        The bundle folder.

    Raises:
        OutputFolderError: ``target`` is not the tool's to replace or is being written by another
            process, or the disk has no room (or fills) for the bundle: nothing at ``target``
            changed and no temp folder is left.
    """
    with claim(target) as target:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}{STAGING_INFIX}", dir=target.parent))
        try:
            written = dataclasses.replace(bundle_config, format_version=FORMAT_VERSION,
                                          created=datetime.now(UTC).isoformat(timespec="seconds"))
            staging.chmod(0o755)  # mkdtemp makes it private; a bundle is an ordinary folder
            fill(staging)
            if settings.EXPORT_BUNDLES if export is None else export:
                _export_into(staging, written)
            write_config(staging / CONFIG_FILE, written)
            _swap_into_place(staging, target)
        except OSError as error:
            shutil.rmtree(staging, ignore_errors=True)
            raise OutputFolderError(f"could not write the model bundle {target} ({write_failure(error)}); "
                                    "what was there is unchanged") from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return target


def _export_into(staging: Path, bundle_config: BundleConfig) -> None:
    """Write ``staging/exported`` from the weights files staged there, as they will be stored."""
    from captioning.bundles.exported import bundle_export_folder, source_digest
    from captioning.encoders import build_bundle_encoder
    from captioning.export.writer import write_export

    members = _build_members(staging, bundle_config)
    encoders = [build_bundle_encoder(spec, staging) for spec in bundle_config.encoders]
    folder = bundle_export_folder(staging)
    folder.mkdir()
    try:
        write_export(folder, bundle_config, members, encoders, source_digest(staging, bundle_config))
    except ExportError:
        # A model the converter got wrong is never kept; the bundle itself must still be saved
        # (a training run's result). Captioning tries again on first use, and says why it cannot.
        shutil.rmtree(folder, ignore_errors=True)


def _inference_copy(model: keras.Model, bundle_config: BundleConfig) -> keras.Model:
    """The model without its optimizer: Keras saves a compiled model's Adam slots too (3x the size)."""
    if getattr(model, "optimizer", None) is None:
        return model
    from captioning.models import build_decoder

    copy = build_decoder(bundle_config.vocab_size, bundle_config.max_length, bundle_config.feature_shape,
                         bundle_config.decoder)
    copy.set_weights(model.get_weights())
    return copy


def _swap_into_place(staging: Path, target: Path) -> None:
    """Put the complete bundle in ``staging`` at ``target``, with a complete bundle there throughout.

    The old bundle's training checkpoint moves into the new one first. Where the system exchanges
    two paths in one step (Linux), that is the swap; elsewhere two renames are, and a kill between
    them leaves ``.NAME.old-*`` without ``NAME``, which every reader and the next writer put back
    (``output_folder``). The old bundle is deleted last.
    """
    if not os.path.lexists(target):
        os.rename(staging, target)
        return
    carried = [name for name in KEPT_FOLDERS if (target / name).is_dir() and not (staging / name).exists()]
    for name in carried:
        os.rename(target / name, staging / name)
    try:
        if atomic.exchange(staging, target):
            old = staging
        else:
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}{BACKUP_INFIX}", dir=target.parent))
            old.rmdir()
            os.rename(target, old)
            try:
                os.rename(staging, target)
            except BaseException:
                os.rename(old, target)
                raise
    except BaseException:
        for name in carried:
            os.rename(staging / name, target / name)
        raise
    shutil.rmtree(old, ignore_errors=True)


def read_bundle_config(path: str | Path) -> BundleConfig:
    """Read and check a bundle's config.json without loading the model.

    Every field is checked by ``BundleConfig.from_json`` (types, plausible sizes, the feature shape
    against the encoder), so what is returned can be built from safely.

    Args:
        path: The bundle folder.

    Returns:
        The BundleConfig.

    Raises:
        BundleError: Not a folder, no or unreadable config.json, a newer format version, or a
            field that is missing, of the wrong type or implausible.
    """
    path = Path(path)
    recover_moved_bundle(path)  # a save killed between its renames, on systems without an atomic swap
    if not path.is_dir():
        raise BundleError(f"{path}: no model bundle there (not a folder); {TRAIN_HINT} or pass --model DIR")
    return read_config(path / CONFIG_FILE)


def load_bundle(path: str | Path) -> Bundle:
    """Load a bundle: check its files, rebuild the architecture from config.json, load weights.

    Args:
        path: The bundle folder.

    Returns:
        The Bundle with a ready keras model.

    Raises:
        BundleError: A missing file, unreadable JSON, a newer format version, or weights that do
            not fit the architecture the config and vocabulary describe.
    """
    path = Path(path)
    checked = read_bundle_config(path)
    weights = checked.weights_files
    for name in (*REQUIRED_FILES, *weights[1:]):
        if not (path / name).is_file():
            raise BundleError(f"{path / name}: file missing; the model bundle is incomplete, "
                              "retrain or re-copy it")
    vocab = Vocabulary.load(path / VOCAB_FILE)
    history = read_bundle_json(path / HISTORY_FILE, allow_nan=True)  # a diverged run's losses are NaN
    if checked.vocab_size != len(vocab):
        raise BundleError(f"{path}: vocab.json has {len(vocab)} words but the model was trained with "
                          f"{checked.vocab_size}; the files come from different runs, retrain the model")
    members = _build_members(path, checked)
    return Bundle(path=path, config=checked, vocab=vocab, model=members[0], history=history, members=members)


def _build_members(path: Path, bundle_config: BundleConfig) -> list[keras.Model]:
    """Every decoder of the bundle at ``path``, each over its own encoder's features, weights loaded."""
    return [_build_and_load(path / name, bundle_config.vocab_size, bundle_config.max_length,
                            bundle_config.features_of(spec), bundle_config.decoder)
            for name, spec in zip(bundle_config.weights_files, bundle_config.member_encoders, strict=True)]


def _build_and_load(weights: Path, vocab_size: int, max_length: int, feature_shape: tuple[int, ...],
                    decoder_config: settings.DecoderConfig) -> keras.Model:
    from captioning.models import build_decoder

    path = weights.parent
    try:
        model = build_decoder(vocab_size, max_length, feature_shape, decoder_config)
    except ValueError as error:
        raise BundleError(f"{path / CONFIG_FILE}: cannot rebuild the model ({error}); retrain the model") from None
    try:
        model.load_weights(str(weights))
    except (ValueError, KeyError, OSError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise BundleError(f"{weights}: weights do not fit the model described by "
                          f"config.json and vocab.json ({reason}); retrain the model") from None
    return model


def is_bundle(path: str | Path) -> bool:
    """Whether ``path`` looks like a bundle folder (has a config.json).

    First puts back a bundle a killed save left moved aside (one ``lstat`` when ``path`` exists).
    """
    recover_moved_bundle(path)
    return (Path(path) / CONFIG_FILE).is_file()


def _created_time(path: Path) -> float:
    """When a bundle was written: config.json's ``created``, else its modification time."""
    try:
        created = read_config(path / CONFIG_FILE).created
        return datetime.fromisoformat(created or "").timestamp()
    except (BundleError, ValueError):
        try:
            return (path / CONFIG_FILE).stat().st_mtime
        except OSError:
            return 0.0


def list_bundles() -> list[Path]:
    """Bundles in ``config.MODELS_DIR`` and the shipped default, newest first.

    Returns:
        Bundle folders (each holds a config.json).
    """
    found = []
    models_dir = Path(settings.MODELS_DIR)
    recover_moved_bundles(models_dir)
    if models_dir.is_dir():
        found = [p for p in models_dir.iterdir() if p.is_dir() and not p.name.startswith(".") and is_bundle(p)]
    found.sort(key=lambda p: (_created_time(p), p.name), reverse=True)
    default = Path(settings.DEFAULT_BUNDLE_DIR)
    if is_bundle(default) and all(p.resolve() != default.resolve() for p in found):
        found.append(default)
    return found


def describe_bundle(path: str | Path) -> str:
    """A readable multi-line summary of a bundle for ``info --model`` (no TensorFlow needed).

    Args:
        path: The bundle folder.

    Returns:
        The summary text.

    Raises:
        BundleError: As ``read_bundle_config``.
    """
    path = Path(path)
    bundle_config = read_bundle_config(path)
    encoder, decoder = bundle_config.encoder, bundle_config.decoder
    dataset = bundle_config.dataset or DatasetRecord()
    history = {}
    if (path / HISTORY_FILE).is_file():
        try:
            history = read_bundle_json(path / HISTORY_FILE, allow_nan=True)
        except BundleError:
            history = {}
    encoder_text = f"{encoder.name} (weights {_known(encoder.weights_id)})"
    if encoder.random_weights:
        encoder_text += " RANDOM WEIGHTS - for tests only, not for real use"
    others = [spec.name for spec in bundle_config.encoders[1:]]
    if others:
        encoder_text += f", and {' and '.join(others)} for the members that read its features"
    lines = [
        f"model bundle: {path}",
        f"  format version: {bundle_config.format_version}   created: {_known(bundle_config.created)}",
        f"  encoder: {encoder_text}",
        f"  decoder: {decoder.kind} (embedding {decoder.embedding_dim}, units {decoder.units}, "
        f"dropout {decoder.dropout})",
        f"  vocabulary: {bundle_config.vocab_size} words   max caption length: {bundle_config.max_length} "
        f"tokens   features: {list(bundle_config.feature_shape)}",
        f"  dataset: {_known(dataset.source)} (key {_known(dataset.key)}, {_known(dataset.train_images)} train / "
        f"{_known(dataset.val_images)} val images)",
    ]
    try:
        seen = read_trained_photos(path)
    except BundleError as error:
        lines.append(f"  photos it learnt from: unreadable record ({error})")
    else:
        if seen is not None:
            lines.append(f"  photos it learnt from: {len(seen):,}, recorded by content in {TRAINED_PHOTOS_FILE} "
                         "(evaluate leaves them out of any dataset)")
    if bundle_config.members:
        lines.append(f"  ensemble of {len(bundle_config.members)} decoders, next-word probabilities averaged:")
        for member in bundle_config.members:
            member_decoder = member.decoder
            dropout = None if member_decoder is None else member_decoder.dropout
            penalty = None if member_decoder is None else member_decoder.attention_regularization
            reads = "" if member.encoder is None else f"{member.encoder.name} features, "
            lines.append(f"    {_known(member.source)} ({reads}dropout {_known(dropout)}, attention penalty "
                         f"{_known(penalty)}): {_training_summary(member.training, [])}"
                         + (f"; then {_fine_tuning_summary(member.fine_tuning)}" if member.fine_tuning else ""))
        return "\n".join(lines)
    val_losses = _numbers(history.get("val_loss") if isinstance(history, dict) else None)
    if bundle_config.training is not None or val_losses:
        lines.append(f"  training: {_training_summary(bundle_config.training, val_losses)}")
    if bundle_config.fine_tuning is not None:
        lines.append(f"  fine-tuning: {_fine_tuning_summary(bundle_config.fine_tuning)}")
    return "\n".join(lines)


def _known(value: object) -> object:
    """``value``, or ``?`` where config.json does not record it."""
    return "?" if value is None else value


def _numbers(values: object) -> list[float]:
    """The numbers in a history.json list (None, text and a non-list are left out)."""
    if not isinstance(values, list):
        return []
    return [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]


def _training_summary(training: TrainingRecord | None, val_losses: list[float]) -> str:
    """``N epochs, best val loss X, M min`` from a config's training record (and the history)."""
    training = training or TrainingRecord()
    best = training.best_val_loss
    if best is None and val_losses:
        best = min(val_losses)
    best_text = f"{best:.4f}" if best is not None else "?"
    duration = f"{training.seconds / 60:.1f} min" if training.seconds is not None else "?"
    epochs = training.epochs_run if training.epochs_run is not None else len(val_losses)
    return f"{epochs} epochs, best val loss {best_text}, {duration}"


def _fine_tuning_summary(fine_tuning: FineTuningRecord) -> str:
    """``self-critical for CIDEr-D: N epochs, validation CIDEr-D A -> B, M min``."""
    start, best = fine_tuning.start_val_cider, fine_tuning.best_val_cider
    change = f"{start:.1f} -> {best:.1f}" if start is not None and best is not None else "?"
    duration = f"{fine_tuning.seconds / 60:.1f} min" if fine_tuning.seconds is not None else "?"
    return (f"self-critical for CIDEr-D: {_known(fine_tuning.epochs_run)} epochs, validation "
            f"CIDEr-D {change}, {duration}")


__all__ = ["Bundle", "describe_bundle", "is_bundle", "list_bundles", "load_bundle", "read_bundle_config",
           "save_bundle", "write_bundle_folder"]
