"""Model bundles on disk (``saved_models/NAME/``): save atomically, load with clear errors, find, list.

A bundle is a folder::

    model.weights.h5   Keras weights (no architecture code, no pickle)
    vocab.json         text.Vocabulary
    config.json        format_version, decoder config, vocab size, max_length, feature shape,
                       encoder, dataset and split, training summary
    history.json       per-epoch loss / val_loss / learning rate
    loss_curve.png     training and validation loss by epoch

An ensemble (``captioning.inference.ensemble``) is the same folder with one more weights file per extra
member (``model-2.weights.h5``, ...) and an ``ensemble`` entry in config.json describing every
member; the members share the architecture, vocabulary and encoder. A tool that predates
ensembles reads such a bundle as its first member alone.

Loading rebuilds the architecture from ``config.json`` with ``models.build_decoder`` and
loads the weights into it, so nothing is deserialised from code and renamed classes cannot break
old bundles. TensorFlow is imported only inside the functions that need it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from captioning import config as settings
from captioning.bundles.schema import FORMAT_VERSION, BundleConfig
from captioning.data.text import Vocabulary
from captioning.errors import BundleError, InputFileError
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
from captioning.storage.safe_json import read_json_file

WEIGHTS_FILE = "model.weights.h5"
VOCAB_FILE = "vocab.json"
CONFIG_FILE = settings.BUNDLE_CONFIG_FILE
HISTORY_FILE = "history.json"
LOSS_CURVE_FILE = "loss_curve.png"
REQUIRED_FILES = (CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE, HISTORY_FILE)
# Folders inside a bundle that belong to a training run, not to the bundle; kept across saves.
KEPT_FOLDERS = (settings.CHECKPOINT_FOLDER,)
TRAIN_HINT = "train one with `python image_captioning.py train`"
ENSEMBLE_KEY = "ensemble"


@dataclass
class Bundle:
    """A loaded model bundle."""

    path: Path
    config: dict
    vocab: Vocabulary
    model: Any  # keras.Model (the training graph; make a StepDecoder from it to caption)
    history: dict
    members: list = field(default_factory=list)  # every member's keras.Model; [model] unless an ensemble
    settings: BundleConfig | None = None  # config.json typed and checked (set by load_bundle)

    def __post_init__(self):
        if not self.members:
            self.members = [self.model]

    @property
    def decoder_config(self) -> settings.DecoderConfig:
        """The bundle's decoder settings as a DecoderConfig."""
        return decoder_config_from_dict(self.config.get("decoder", {}))

    @property
    def max_length(self) -> int:
        """Caption length in tokens counting START and END."""
        return int(self.config["max_length"])


def ensemble_members(bundle_config: dict) -> list:
    """An ensemble's member summaries from its config (source, decoder, training); [] otherwise."""
    ensemble = bundle_config.get(ENSEMBLE_KEY)
    members = ensemble.get("members") if isinstance(ensemble, dict) else None
    return members if isinstance(members, list) else []


def weights_files(bundle_config: dict, source: str | Path = CONFIG_FILE) -> list[str]:
    """The bundle's weights files, one per member: ``model.weights.h5``, then ``model-2...``.

    Args:
        bundle_config: A bundle's config.json contents.
        source: where the config came from, for the error message.

    Returns:
        File names inside the bundle folder, the first member's first.

    Raises:
        BundleError: an ``ensemble`` entry without a list of members.
    """
    if ENSEMBLE_KEY not in bundle_config:
        return [WEIGHTS_FILE]
    members = ensemble_members(bundle_config)
    if not members:
        raise BundleError(f"{source}: the {ENSEMBLE_KEY!r} entry has no list of members; "
                          "re-create the ensemble with `python image_captioning.py ensemble`")
    return [WEIGHTS_FILE] + [f"model-{n}.weights.h5" for n in range(2, len(members) + 1)]


def decoder_config_from_dict(values: dict) -> settings.DecoderConfig:
    """A DecoderConfig from JSON, ignoring keys this version does not know."""
    known = {f.name for f in dataclasses.fields(settings.DecoderConfig)}
    return settings.DecoderConfig(**{k: v for k, v in values.items() if k in known})


def save_bundle(target: str | Path, model, vocab: Vocabulary, bundle_config: dict, history: dict) -> Path:
    """Write a bundle atomically: a temp folder beside ``target``, then a swap.

    An existing bundle at ``target`` stays untouched until the new one is complete; a training
    checkpoint folder inside it (``.checkpoint/``) is carried over.

    Args:
        target: The bundle folder.
        model: The trained keras model.
        vocab: Its vocabulary.
        bundle_config: JSON-able settings (decoder, vocab_size, max_length, feature_shape, ...);
            ``format_version`` and ``created`` are added here.
        history: Per-epoch metrics, e.g. ``{"loss": [...], "val_loss": [...]}``.

    Returns:
        The bundle folder.

    Raises:
        OutputFolderError: as ``write_bundle_folder``.
    """
    from captioning.render.loss_curve import save_loss_curve
    from captioning.storage.model_files import weights_as_float16, weights_file_bytes

    def fill(staging: Path, full_config: dict) -> None:
        # Built in memory first: its size is known before writing, and a disk that fills anyway
        # fails a plain write (HDF5 writing to a full disk crashes the process).
        weights = weights_as_float16(weights_file_bytes(_inference_copy(model, full_config)))
        ensure_free_space(staging.parent, len(weights), "the model bundle", error=OutputFolderError)
        write_bytes_atomic(staging / WEIGHTS_FILE, weights)
        full_config["weights_dtype"] = "float16"
        vocab.save(staging / VOCAB_FILE)
        write_json_atomic(staging / HISTORY_FILE, history, sort_keys=True)
        save_loss_curve(history, staging / LOSS_CURVE_FILE)

    return write_bundle_folder(target, bundle_config, fill)


def write_bundle_folder(target: str | Path, bundle_config: dict, fill) -> Path:
    """Write a bundle atomically: ``fill`` writes its files into a temp folder, then a swap.

    Holds the folder's lock throughout (``output_folder.claim``; re-entrant, so a training run
    that holds it passes through) and refuses a folder that is not the tool's to replace. At every
    instant a complete bundle (the old, then the new) is at ``target``.

    Args:
        target: The bundle folder.
        bundle_config: JSON-able settings; ``format_version`` and ``created`` are added here.
        fill: ``fill(staging_folder, full_config)`` writes every file but config.json and may add
            to ``full_config``; config.json is written last, as its presence marks a complete
            bundle.

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
            full_config = {"format_version": FORMAT_VERSION,
                           "created": datetime.now(UTC).isoformat(timespec="seconds"),
                           **bundle_config}
            staging.chmod(0o755)  # mkdtemp makes it private; a bundle is an ordinary folder
            fill(staging, full_config)
            write_json_atomic(staging / CONFIG_FILE, full_config, sort_keys=True)
            _swap_into_place(staging, target)
        except OSError as error:
            shutil.rmtree(staging, ignore_errors=True)
            raise OutputFolderError(f"could not write the model bundle {target} ({write_failure(error)}); "
                                    "what was there is unchanged") from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return target


def _inference_copy(model, bundle_config: dict):
    """The model without its optimizer: Keras saves a compiled model's Adam slots too (3x the size)."""
    if getattr(model, "optimizer", None) is None:
        return model
    from captioning.models import build_decoder

    copy = build_decoder(int(bundle_config["vocab_size"]), int(bundle_config["max_length"]),
                                tuple(bundle_config["feature_shape"]),
                                decoder_config_from_dict(bundle_config["decoder"]))
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


def read_bundle_config(path: str | Path) -> dict:
    """Read and check a bundle's config.json without loading the model.

    Every field is checked by ``BundleConfig.from_json`` (types, plausible sizes, the feature shape
    against the encoder), so what is returned can be built from safely.

    Args:
        path: The bundle folder.

    Returns:
        The config dict.

    Raises:
        BundleError: Not a folder, no or unreadable config.json, a newer format version, or a
            field that is missing, of the wrong type or implausible.
    """
    return _read_checked_config(Path(path))[0]


def _read_checked_config(path: Path) -> tuple[dict, BundleConfig]:
    """config.json as read, and typed by ``BundleConfig`` (see ``read_bundle_config``)."""
    recover_moved_bundle(path)  # a save killed between its renames, on systems without an atomic swap
    if not path.is_dir():
        raise BundleError(f"{path}: no model bundle there (not a folder); {TRAIN_HINT} or pass --model DIR")
    # NaN is allowed while parsing: a diverged run records a NaN loss; the schema refuses it
    # wherever a number is built from.
    data = _read_json(path / CONFIG_FILE, settings.MAX_BUNDLE_JSON_BYTES, allow_nan=True)
    return data, BundleConfig.from_json(data, path / CONFIG_FILE)


def _read_json(path: Path, max_bytes: int = settings.MAX_BUNDLE_JSON_BYTES, allow_nan: bool = False) -> Any:
    """A bundle's JSON file, read within limits (``safe_json``); any problem is one BundleError."""
    try:
        return read_json_file(path, max_bytes, allow_nan=allow_nan)
    except InputFileError as error:
        if error.missing:
            raise BundleError(f"{path}: file missing; the model bundle is incomplete, retrain or "
                              "re-copy it") from None
        raise BundleError(f"{path}: unreadable ({error.reason}); retrain or re-copy the model bundle") from None


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
    bundle_config, checked = _read_checked_config(path)
    weights = weights_files(bundle_config, path / CONFIG_FILE)
    for name in (*REQUIRED_FILES, *weights[1:]):
        if not (path / name).is_file():
            raise BundleError(f"{path / name}: file missing; the model bundle is incomplete, "
                              "retrain or re-copy it")
    vocab = Vocabulary.load(path / VOCAB_FILE)
    history = _read_json(path / HISTORY_FILE, allow_nan=True)  # a diverged run's losses are NaN
    if checked.vocab_size != len(vocab):
        raise BundleError(f"{path}: vocab.json has {len(vocab)} words but the model was trained with "
                          f"{checked.vocab_size}; the files come from different runs, retrain the model")
    members = [_build_and_load(path / name, checked.vocab_size, checked.max_length, checked.feature_shape,
                               checked.decoder)
               for name in weights]
    return Bundle(path=path, config=bundle_config, vocab=vocab, model=members[0], history=history,
                  members=members, settings=checked)


def _build_and_load(weights: Path, vocab_size: int, max_length: int, feature_shape: tuple,
                    decoder_config: settings.DecoderConfig):
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
        created = read_json_file(path / CONFIG_FILE, settings.MAX_BUNDLE_JSON_BYTES, allow_nan=True).get("created")
        return datetime.fromisoformat(created).timestamp()
    except (InputFileError, OSError, ValueError, TypeError, AttributeError):
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
    data = read_bundle_config(path)
    encoder = data.get("encoder", {})
    decoder = data.get("decoder", {})
    dataset = data.get("dataset") or {}  # optional records may be null
    training = data.get("training") or {}
    history = {}
    if (path / HISTORY_FILE).is_file():
        try:
            history = _read_json(path / HISTORY_FILE, allow_nan=True)
        except BundleError:
            history = {}
    encoder_text = f"{encoder.get('name', '?')} (weights {encoder.get('weights_id', '?')})"
    if encoder.get("random_weights"):
        encoder_text += " RANDOM WEIGHTS - for tests only, not for real use"
    lines = [
        f"model bundle: {path}",
        f"  format version: {data.get('format_version')}   created: {data.get('created', '?')}",
        f"  encoder: {encoder_text}",
        f"  decoder: {decoder.get('kind', '?')} (embedding {decoder.get('embedding_dim', '?')}, "
        f"units {decoder.get('units', '?')}, dropout {decoder.get('dropout', '?')})",
        f"  vocabulary: {data.get('vocab_size', '?')} words   max caption length: "
        f"{data.get('max_length', '?')} tokens   features: {data.get('feature_shape', '?')}",
        f"  dataset: {dataset.get('source', '?')} (key {dataset.get('key', '?')}, "
        f"{dataset.get('train_images', '?')} train / {dataset.get('val_images', '?')} val images)",
    ]
    members = ensemble_members(data)
    if members:
        lines.append(f"  ensemble of {len(members)} decoders, next-word probabilities averaged:")
        for member in (m for m in members if isinstance(m, dict)):
            decoder = member.get("decoder") or {}
            lines.append(f"    {member.get('source', '?')} (dropout {decoder.get('dropout', '?')}, attention "
                         f"penalty {decoder.get('attention_regularization', '?')}): "
                         f"{_training_summary(member.get('training') or {}, [])}")
        return "\n".join(lines)
    val_losses = _numbers(history.get("val_loss") if isinstance(history, dict) else None)
    if training or val_losses:
        lines.append(f"  training: {_training_summary(training, val_losses)}")
    return "\n".join(lines)


def _numbers(values) -> list[float]:
    """The numbers in a history.json list (None, text and a non-list are left out)."""
    if not isinstance(values, list):
        return []
    return [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]


def _training_summary(training: dict, val_losses: list) -> str:
    """``N epochs, best val loss X, M min`` from a config's training entry (and the history)."""
    best = training.get("best_val_loss")
    if best is None and val_losses:
        best = min(val_losses)
    best_text = f"{best:.4f}" if isinstance(best, (int, float)) else "?"
    seconds = training.get("seconds")
    duration = f"{seconds / 60:.1f} min" if isinstance(seconds, (int, float)) else "?"
    return f"{training.get('epochs_run', len(val_losses))} epochs, best val loss {best_text}, {duration}"


__all__ = [
    "Bundle", "FORMAT_VERSION", "describe_bundle", "ensemble_members", "is_bundle",
    "list_bundles", "load_bundle", "read_bundle_config", "save_bundle", "weights_files", "write_bundle_folder",
]
