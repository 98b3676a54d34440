"""Where a training run keeps its checkpoints, and reading their state, without TensorFlow.

Checkpoint layout (``<bundle>/.checkpoint/``)::

    state.json         epoch, history, early-stopping/plateau state, option fingerprint and the
                       name of the folder below; replaced atomically, so it always names a
                       complete folder
    epoch-0003/model.keras         full model with optimizer state (architecture kept only for
                                   inspection: resuming rebuilds the model and loads into it)
    epoch-0003/best.weights.h5     the best weights so far (restored at the end)

plus what a killed save leaves: ``.state.json.<random>.tmp`` and a staging folder
``.epoch-0003-<random>`` (``is_part_of_checkpoint`` knows these shapes, and nothing else, so
``storage.output_folder`` refuses a ``.checkpoint`` holding a file of the user's: a finished run
deletes the folder).

The menu asks ``has_checkpoint`` whether to offer resuming; ``checkpoints.py`` writes and restores
them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from captioning import config
from captioning.errors import CaptioningError, InputFileError
from captioning.storage.safe_json import read_json_file

CHECKPOINT_DIR = config.CHECKPOINT_FOLDER
STATE_FILE = "state.json"
MODEL_FILE = "model.keras"
BEST_WEIGHTS_FILE = "best.weights.h5"
STATE_VERSION = 1
_EPOCH_FOLDER = r"epoch-[0-9]{4,9}"  # f"epoch-{epoch:04d}"
_TEMP = r"[a-z0-9_]{8}"  # tempfile's random part (as bundles.layout.TEMP_TAIL)
_STATE_TEMP = re.compile(r"\." + re.escape(STATE_FILE) + r"\." + _TEMP + r"\.tmp")
_STAGING_FOLDER = re.compile(r"\." + _EPOCH_FOLDER + "-" + _TEMP)
_EPOCH_FILE_TEMP = re.compile(r"\.(?:" + re.escape(MODEL_FILE) + "|" + re.escape(BEST_WEIGHTS_FILE) + r")\."
                              + _TEMP + r"\.tmp")


def epoch_folder(epoch: int) -> str:
    """The checkpoint folder of ``epoch`` finished epochs: ``epoch-0003``."""
    return f"epoch-{epoch:04d}"


def is_part_of_checkpoint(name: str, is_folder: bool) -> bool:
    """Whether an entry of ``.checkpoint/`` is one a training run writes there."""
    if is_folder:
        return re.fullmatch(_EPOCH_FOLDER, name) is not None or _STAGING_FOLDER.fullmatch(name) is not None
    return name == STATE_FILE or _STATE_TEMP.fullmatch(name) is not None


def is_part_of_epoch_folder(name: str, is_folder: bool, staging: bool) -> bool:
    """Whether an entry of an epoch folder (or, ``staging``, of one being written) is the run's own."""
    if is_folder:
        return False
    return name in (MODEL_FILE, BEST_WEIGHTS_FILE) or (staging and _EPOCH_FILE_TEMP.fullmatch(name) is not None)


class ResumeError(CaptioningError):
    """There is no interrupted run to resume, or it was started with other options."""


@dataclass
class FitState:
    """What a checkpoint remembers besides the weights and the optimizer."""

    epoch: int = 0  # finished epochs
    history: dict = field(default_factory=lambda: {"loss": [], "val_loss": [], "learning_rate": [],
                                                   "seconds": []})
    best: float = math.inf  # early stopping: best monitored loss so far
    best_epoch: int = 0  # 1-based epoch of ``best``; 0 before any
    wait: int = 0  # early stopping: epochs since the best
    plateau_best: float = math.inf
    plateau_wait: int = 0
    learning_rate: float = 0.0
    stopped_early: bool = False


def checkpoint_dir(bundle_dir: str | Path) -> Path:
    """``<bundle>/.checkpoint``: where a run writing ``bundle_dir`` keeps its checkpoints."""
    return Path(bundle_dir) / CHECKPOINT_DIR


def has_checkpoint(bundle_dir: str | Path) -> bool:
    """Whether ``bundle_dir`` holds an interrupted run's checkpoint (its state file, at least).

    An interrupted run is also one whose epochs were all done but whose bundle was not written
    (killed during the final save): resuming it writes the bundle.
    """
    return (checkpoint_dir(bundle_dir) / STATE_FILE).is_file()


def read_checkpoint_state(checkpoints: Path) -> dict:
    """The checkpoint's state.json, checked.

    Args:
        checkpoints: The ``.checkpoint`` folder.

    Returns:
        The parsed state.

    Raises:
        ResumeError: When there is no (readable) checkpoint.
    """
    path = checkpoints / STATE_FILE
    if not path.exists():  # anything else there (a FIFO, say) is reported by the reader
        raise ResumeError(f"no interrupted training run to resume in {checkpoints.parent} "
                          f"(no {CHECKPOINT_DIR}/{STATE_FILE}); run again without --resume")
    try:
        # Infinity is allowed: a fresh early-stopping state records its best loss as infinite.
        saved = read_json_file(path, config.MAX_BUNDLE_JSON_BYTES, allow_nan=True)
        _check_state(saved)
        folder = checkpoints / saved["folder"]
        if not (folder / MODEL_FILE).is_file():
            raise ValueError("incomplete checkpoint")
    except InputFileError as error:
        raise ResumeError(f"{path}: unusable checkpoint ({error.reason}); run again without --resume to "
                          "start over") from None
    except (OSError, ValueError) as error:
        raise ResumeError(f"{path}: unusable checkpoint ({error}); run again without --resume to start over") from None
    return saved


def _check_state(saved) -> None:
    """Check what ``_save_checkpoint`` writes, before anything is built from it.

    Raises:
        ValueError: a one-line reason.
    """
    if not isinstance(saved, dict) or saved.get("version") != STATE_VERSION:
        raise ValueError(f"not a version-{STATE_VERSION} checkpoint state")
    if not isinstance(saved.get("folder"), str) or not re.fullmatch(r"epoch-\d{1,9}", saved["folder"]):
        raise ValueError("no epoch folder named")
    fit, fingerprint = saved.get("fit"), saved.get("fingerprint", {})
    if not isinstance(fit, dict) or not isinstance(fingerprint, dict):
        raise ValueError("'fit' and 'fingerprint' must be objects")
    for name, kind in _FIT_FIELDS.items():
        if not _valid(fit.get(name, getattr(FitState(), name)), kind):
            raise ValueError(f"fit.{name} is not a valid {kind}")
    history = fit.get("history", {})
    if not all(isinstance(v, list) for v in history.values()):
        raise ValueError("fit.history must hold lists")


# What each FitState field must be: a count (int >= 0), a number (inf allowed, NaN not), a flag,
# or a record (an object).
_FIT_FIELDS = {"epoch": "count", "best_epoch": "count", "wait": "count", "plateau_wait": "count",
               "best": "number", "plateau_best": "number", "learning_rate": "number",
               "stopped_early": "flag", "history": "record"}


def _valid(value, kind: str) -> bool:
    if kind == "flag":
        return isinstance(value, bool)
    if kind == "record":
        return isinstance(value, dict)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return value >= 0 and isinstance(value, int) if kind == "count" else not math.isnan(value)


__all__ = ["BEST_WEIGHTS_FILE", "CHECKPOINT_DIR", "MODEL_FILE", "STATE_FILE", "epoch_folder",
           "is_part_of_checkpoint", "is_part_of_epoch_folder", "FitState", "ResumeError", "checkpoint_dir", "has_checkpoint",
           "read_checkpoint_state"]
