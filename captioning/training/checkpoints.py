"""Checkpoints of a training run: written after every epoch, restored to resume it.

Every file is built in memory first, so the free space is checked against its real size and a disk
that fills anyway fails a plain write (one line), never HDF5, which crashes the process. A
checkpoint is never left half-written by Ctrl-C: the interrupt waits until the epoch's files and
``state.json`` are in place. The layout is in ``checkpoint_layout``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import keras

from captioning.config import TrainConfig
from captioning.storage.atomic import write_bytes_atomic, write_json_atomic
from captioning.storage.disk_space import ensure_free_space
from captioning.storage.model_files import model_file_bytes, weights_file_bytes
from captioning.storage.output_folder import OutputFolderError, write_failure
from captioning.training.checkpoint_layout import (
    BEST_WEIGHTS_FILE,
    CHECKPOINT_DIR,
    MODEL_FILE,
    STATE_FILE,
    STATE_VERSION,
    FitState,
    ResumeError,
    epoch_folder,
    read_checkpoint_state,
)

# Options that may change between an interrupted run and its resumption.
RESUMABLE_CHANGES = ("epochs",)


def start_state(model: keras.Model, checkpoints: Path, fingerprint: dict, resume: bool, config: TrainConfig,
                 log: Callable[[str], None]) -> FitState:
    """A fresh state, or the checkpoint's (weights and optimizer loaded) when resuming."""
    if not resume:
        if checkpoints.exists():
            log(f"starting over: discarding the interrupted run's checkpoint in {checkpoints}")
            shutil.rmtree(checkpoints)
        return FitState(learning_rate=config.learning_rate)
    saved = read_checkpoint_state(checkpoints)
    _check_fingerprint(checkpoints, saved.get("fingerprint", {}), fingerprint)
    state = FitState(**{k: v for k, v in saved["fit"].items() if k in FitState.__dataclass_fields__})
    _restore_model(model, checkpoints / saved["folder"] / MODEL_FILE)
    model.optimizer.learning_rate.assign(state.learning_rate)
    # A run with nothing left to train still has a checkpoint only when its bundle was not written
    # (killed or out of disk during the final save): resuming it writes that bundle.
    if state.stopped_early:
        log(f"that run stopped early after epoch {state.epoch}: nothing left to train, writing its model "
            f"from the checkpoint in {checkpoints}")
    elif state.epoch >= config.epochs:
        log(f"that run finished {state.epoch} of {config.epochs} epochs: nothing left to train, writing its "
            f"model from the checkpoint in {checkpoints}")
    else:
        log(f"resuming after epoch {state.epoch} from {checkpoints}")
    return state


def _check_fingerprint(checkpoints: Path, saved: dict, current: dict) -> None:
    keys = sorted((set(saved) | set(current)) - set(RESUMABLE_CHANGES))
    differing = [k for k in keys if saved.get(k) != current.get(k)]
    if differing:
        details = ", ".join(f"{k}: {saved.get(k)!r} then, {current.get(k)!r} now" for k in differing[:4])
        raise ResumeError(f"cannot resume the run in {checkpoints.parent}: options differ ({details}); "
                          "use the same options, or run again without --resume to start over")


def _restore_model(model: keras.Model, path: Path) -> None:
    """Load weights and optimizer state from a checkpoint into the rebuilt, compiled model."""
    # The optimizer's slots must exist before loading, or Keras skips them with a warning.
    model.optimizer.build(model.trainable_variables)
    try:
        model.load_weights(str(path))
    except (ValueError, OSError, KeyError) as error:
        raise ResumeError(f"{path}: checkpoint does not fit this model ({str(error).splitlines()[0]}); "
                          "run again without --resume to start over") from None


def load_best_weights(model: keras.Model, checkpoints: Path, state: FitState) -> list | None:
    saved = read_checkpoint_state(checkpoints)
    current = model.get_weights()
    model.load_weights(str(checkpoints / saved["folder"] / BEST_WEIGHTS_FILE))
    best = model.get_weights()
    model.set_weights(current)
    return best


def save_checkpoint(model: keras.Model, best_weights: list | None, checkpoints: Path, state: FitState,
                     fingerprint: dict) -> None:
    """Write this epoch's folder, then point state.json at it, then drop older folders.

    Both files are built in memory first, so the free space is checked against their real size and
    a disk that fills anyway fails a plain write (one line, the folder removed), never HDF5, which
    crashes the process. The previous epoch's checkpoint stays usable throughout.

    Raises:
        OutputFolderError: not enough space, or the write failed.
    """
    model_bytes = model_file_bytes(model)
    current = model.get_weights()
    if best_weights is not None:
        model.set_weights(best_weights)
    try:
        best_bytes = weights_file_bytes(model)
    finally:
        model.set_weights(current)
    folder = epoch_folder(state.epoch)
    then = (f"; then run the same command with --resume (it continues after epoch {state.epoch - 1})"
            if state.epoch > 1 else "; then run the same command again")
    ensure_free_space(checkpoints, len(model_bytes) + len(best_bytes), f"the checkpoint of epoch {state.epoch}", then,
                      error=OutputFolderError)
    created = [path for path in (checkpoints.parent, checkpoints) if not path.exists()]
    try:
        checkpoints.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder}-", dir=checkpoints))
        try:
            write_bytes_atomic(staging / MODEL_FILE, model_bytes)
            write_bytes_atomic(staging / BEST_WEIGHTS_FILE, best_bytes)
            if (checkpoints / folder).exists():
                shutil.rmtree(checkpoints / folder)
            os.replace(staging, checkpoints / folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        saved = {"version": STATE_VERSION, "folder": folder, "fingerprint": fingerprint,
                 "fit": state.__dict__}
        try:
            write_json_atomic(checkpoints / STATE_FILE, saved, sort_keys=True)
        except BaseException:
            shutil.rmtree(checkpoints / folder, ignore_errors=True)  # state.json still names the last one
            raise
    except OSError as error:
        for path in reversed(created):  # a first checkpoint that failed leaves no empty folders
            with contextlib.suppress(OSError):
                path.rmdir()
        raise OutputFolderError(f"could not write the checkpoint of epoch {state.epoch} in {checkpoints} "
                                f"({write_failure(error)}){then}") from None
    for old in checkpoints.iterdir():
        if old.is_dir() and old.name != folder:
            shutil.rmtree(old, ignore_errors=True)


def remove_checkpoint(checkpoint_root: Path) -> None:
    """Delete ``<bundle>/.checkpoint`` once a run has finished (nothing left to resume)."""
    shutil.rmtree(Path(checkpoint_root) / CHECKPOINT_DIR, ignore_errors=True)


@contextlib.contextmanager
def interrupts_deferred():
    """Hold Ctrl-C until the block ends, so a checkpoint is never left half-written by it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt


__all__ = ["interrupts_deferred", "load_best_weights", "remove_checkpoint", "save_checkpoint", "start_state"]
