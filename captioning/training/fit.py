"""The fit loop: tf.data from cached features, Adam, early stopping, LR plateau, a checkpoint per epoch.

Training runs one ``model.fit`` call per epoch so that everything random in an epoch (the shuffle
order, the dropout masks) is derived from ``(seed, epoch)``: a run resumed at epoch k then sees
exactly what an uninterrupted run sees from epoch k on. Early stopping and the learning-rate
plateau are tracked here (same rules as Keras's ``EarlyStopping(restore_best_weights=True)`` and
``ReduceLROnPlateau``) because their state must go into the checkpoint, which Keras callbacks
reset at every ``fit``.

Checkpoints (``checkpoints.py``) hold that state with the weights, so a resumed run continues exactly.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from captioning.config import TrainConfig
from captioning.models import caption_loss
from captioning.training.checkpoint_layout import FitState, checkpoint_dir
from captioning.training.checkpoints import (
    interrupts_deferred,
    load_best_weights,
    save_checkpoint,
    start_state,
)
from captioning.training.distribution import dataset_options

MIN_LEARNING_RATE = 1e-6


@dataclass
class TrainingData:
    """Everything the fit loop reads: feature rows and, per caption, (feature row, tokens).

    One example per caption points at its image's feature row, so features are never duplicated
    five times; the pipeline gathers the rows per batch.
    """

    features: np.ndarray  # (rows, *feature_shape) float16, may be a read-only memmap
    train_rows: np.ndarray  # (train captions,) int64 rows of ``features``
    train_tokens: np.ndarray  # (train captions, max_length) int32
    val_rows: np.ndarray  # (val captions,) int64
    val_tokens: np.ndarray  # (val captions, max_length) int32


@dataclass
class FitResult:
    """How a fit ended."""

    history: dict
    epochs_run: int
    best_val_loss: float | None
    best_epoch: int
    interrupted: bool
    stopped_early: bool
    seconds: float


def compile_model(model: keras.Model, learning_rate: float) -> None:
    """Compile with Adam and the masked caption loss (call inside the strategy scope).

    Args:
        model: A model from ``models.build_decoder``.
        learning_rate: Adam's initial learning rate.
    """
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=caption_loss())


def make_dataset(features: np.ndarray, rows: np.ndarray, tokens: np.ndarray, batch_size: int,
                 shuffle_seed: int | list[int] | None = None, drop_remainder: bool = False,
                 trim: bool = False) -> tf.data.Dataset:
    """Batches of ``({"features", "tokens"}, targets)`` for teacher forcing.

    The dataset carries only (feature row, tokens); each batch's feature rows are read from
    ``features`` when the batch is made, so a memmap of the feature cache is never loaded whole
    (a Flickr8k grid cache is ~0.9 GB float16, 1.8 GB as float32).

    Args:
        features: ``(rows, *feature_shape)`` float16 feature rows (a read-only memmap is best).
        rows: ``(N,)`` the feature row of each caption.
        tokens: ``(N, max_length)`` int32 padded captions.
        batch_size: Captions per batch (global batch under a distribution strategy).
        shuffle_seed: Shuffle with this seed (into batches of similar lengths when ``trim``);
            ``None`` keeps the order.
        drop_remainder: Drop the last partial batch (needed with several replicas, where an
            uneven split of the last batch breaks the cross-replica reduction).
        trim: Cut each batch's padding after its longest caption (for models whose ``tokens``
            input takes any length): the LSTM and the vocabulary layer then skip most padding.

    Returns:
        A dataset of ``({"features": (B, ...) float32, "tokens": (B, T) int32}, (B, T) int32)``
        with ``T = max_length - 1`` (or the batch's longest caption - 1 when trimmed): inputs
        are the caption without its last token, targets without its first.
    """
    rows, tokens = np.asarray(rows, np.int64), np.asarray(tokens, np.int32)
    if shuffle_seed is not None:
        order = _batch_order(tokens, batch_size, shuffle_seed, by_length=trim)
        rows, tokens = rows[order], tokens[order]
    examples = tf.data.Dataset.from_tensor_slices((rows, tokens))
    gather = _row_reader(features)

    def to_inputs(batch_rows, batch_tokens):
        batch_features = tf.numpy_function(gather, [batch_rows], tf.float32, stateful=False)
        batch_features.set_shape(batch_rows.shape.concatenate(features.shape[1:]))  # (B, ...)
        if trim:
            length = tf.reduce_max(tf.reduce_sum(tf.cast(batch_tokens != 0, tf.int32), axis=1))
            batch_tokens = batch_tokens[:, :length]  # (B, longest caption)
        return {"features": batch_features, "tokens": batch_tokens[:, :-1]}, batch_tokens[:, 1:]

    return (examples.batch(batch_size, drop_remainder=drop_remainder)
            .map(to_inputs, num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE)
            .with_options(dataset_options()))  # how workers split it (distribution.py)


def _row_reader(features: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A function reading ``features[rows]`` as float32, for ``tf.numpy_function``.

    float32 on the numpy side: a float16 cast inside the graph makes oneDNN log an error line on
    CPUs without AVX-512 FP16, and only the batch's rows are ever converted.
    """
    def gather(batch_rows: np.ndarray) -> np.ndarray:
        return np.asarray(features[batch_rows]).astype(np.float32)  # (B, ...)

    return gather


def _batch_order(tokens: np.ndarray, batch_size: int, seed, by_length: bool) -> np.ndarray:
    """A shuffled order of the captions; with ``by_length``, batches of similar lengths.

    NumPy, not ``Dataset.shuffle``: the order depends on the seed alone, never on TensorFlow's
    global seed state, so a resumed run sees the same batches. By length: shuffle, sort by
    length within windows of 50 batches, then shuffle the order of the full batches, so batches
    stay random but a batch rarely mixes short and long captions.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(tokens))
    if not by_length:
        return order
    lengths = (tokens[order] != 0).sum(axis=1)
    window = batch_size * 50
    for start in range(0, len(order), window):
        part = slice(start, start + window)
        order[part] = order[part][np.argsort(lengths[part], kind="stable")]
    full = len(order) // batch_size * batch_size
    blocks = order[:full].reshape(-1, batch_size)[rng.permutation(full // batch_size)]
    return np.concatenate([blocks.reshape(-1), order[full:]])


def accepts_any_length(model: keras.Model) -> bool:
    """Whether the model's ``tokens`` input takes batches of any caption length."""
    return any(t.name.startswith("tokens") and len(t.shape) == 2 and t.shape[1] is None for t in model.inputs)


def fit(model: keras.Model, data: TrainingData, train_config: TrainConfig, checkpoint_root: Path,
        fingerprint: dict, resume: bool = False, log: Callable[[str], None] = print,
        progress: bool = False, caption_quality: Callable[[], float] | None = None) -> FitResult:
    """Train ``model`` (compiled) epoch by epoch, checkpointing after each; Ctrl-C stops cleanly.

    Args:
        model: Compiled (``compile_model``) inside the strategy scope it trains in.
        data: Features and caption rows.
        train_config: Epochs, batch size, patience, LR plateau and seed.
        checkpoint_root: The bundle folder; checkpoints go to ``<it>/.checkpoint``.
        fingerprint: JSON-able options the run depends on; a resumed run must match it (but for
            ``epochs``).
        resume: Continue from the last finished epoch in the checkpoint.
        log: Receives one line per epoch and notices.
        progress: Show a per-batch progress bar (for terminals).
        caption_quality: With ``train_config.select_by == "val_cider"``: scores the model's
            current captions of the validation photos (CIDEr-D x100); it then chooses the epoch
            kept and early stopping, while the learning-rate plateau stays on the loss.

    Returns:
        The FitResult; the model holds the best weights seen (by the selection metric) when at least
        one epoch finished. Resuming a run with no epoch left (all done, or stopped early, its
        bundle never written) trains nothing and gives the checkpoint's best weights.

    Raises:
        ResumeError: ``resume`` with no usable checkpoint or with different options.
        OutputFolderError: a checkpoint could not be written (a full disk); the previous one stays.
    """
    checkpoints = checkpoint_dir(checkpoint_root)
    state = start_state(model, checkpoints, fingerprint, resume, train_config, log)
    best_weights = load_best_weights(model, checkpoints, state) if state.epoch else None
    monitor = "val_loss" if len(data.val_rows) >= model.distribute_strategy.num_replicas_in_sync else "loss"
    if monitor == "loss":
        log("no validation captions: early stopping and the learning-rate plateau watch the training loss")
    replicas = model.distribute_strategy.num_replicas_in_sync
    several = replicas > 1
    # With several replicas every batch must split evenly, so a small validation set gets a
    # smaller batch rather than none.
    val_batch = min(train_config.batch_size, len(data.val_rows) // replicas * replicas)
    trim = accepts_any_length(model)
    val_data = (make_dataset(data.features, data.val_rows, data.val_tokens, val_batch,
                             drop_remainder=several, trim=trim) if val_batch else None)
    started, interrupted = time.time(), False
    try:
        for epoch in range(state.epoch, train_config.epochs):
            if state.stopped_early:
                break
            _seed_epoch(model, train_config.seed, epoch)
            train_data = make_dataset(data.features, data.train_rows, data.train_tokens,
                                      train_config.batch_size, shuffle_seed=[train_config.seed, epoch],
                                      drop_remainder=several, trim=trim)
            epoch_start = time.time()
            callbacks = [_BatchProgress(epoch, train_config.epochs)] if progress else []
            metrics = model.fit(train_data, validation_data=val_data, epochs=epoch + 1, initial_epoch=epoch,
                                verbose=0, callbacks=callbacks, shuffle=False).history
            if caption_quality is not None:
                metrics["val_cider"] = [caption_quality()]
            improved = _record_epoch(model, state, metrics, monitor, time.time() - epoch_start, train_config)
            if improved:
                best_weights = model.get_weights()
            with interrupts_deferred():
                save_checkpoint(model, best_weights, checkpoints, state, fingerprint)
            log(_epoch_line(state, train_config.epochs, improved))
    except KeyboardInterrupt:
        interrupted = True
    if best_weights is not None:
        model.set_weights(best_weights)
    history = state.history
    best = min(history[monitor]) if history[monitor] else None
    if history.get("val_cider") and state.best_epoch:
        best = history[monitor][state.best_epoch - 1]  # the loss of the epoch kept
    return FitResult(history=history, epochs_run=state.epoch, best_val_loss=best if monitor == "val_loss" else None,
                     best_epoch=state.best_epoch, interrupted=interrupted, stopped_early=state.stopped_early,
                     seconds=time.time() - started)


def _record_epoch(model: keras.Model, state: FitState, metrics: dict, monitor: str, seconds: float,
                  config: TrainConfig) -> bool:
    """Append the epoch to the history and update early stopping and the plateau; True if best."""
    state.epoch += 1
    learning_rate = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    state.history["loss"].append(float(metrics["loss"][-1]))
    if "val_loss" in metrics:
        state.history["val_loss"].append(float(metrics["val_loss"][-1]))
    state.history["learning_rate"].append(learning_rate)
    state.history["seconds"].append(round(seconds, 3))
    current = state.history[monitor][-1]
    selected = current  # lower is better
    if "val_cider" in metrics:
        state.history.setdefault("val_cider", []).append(round(float(metrics["val_cider"][-1]), 4))
        selected = -state.history["val_cider"][-1]
    improved = selected < state.best
    if improved:
        state.best, state.best_epoch, state.wait = selected, state.epoch, 0
    else:
        state.wait += 1
        state.stopped_early = state.wait >= config.early_stopping_patience
    if current < state.plateau_best - config.reduce_lr_min_delta:
        state.plateau_best, state.plateau_wait = current, 0
    else:
        state.plateau_wait += 1
        if state.plateau_wait >= config.reduce_lr_patience and learning_rate > MIN_LEARNING_RATE:
            learning_rate = max(learning_rate * config.reduce_lr_factor, MIN_LEARNING_RATE)
            model.optimizer.learning_rate.assign(learning_rate)
            state.plateau_wait = 0
    state.learning_rate = learning_rate
    return improved


def _epoch_line(state: FitState, epochs: int, improved: bool) -> str:
    history = state.history
    val = f", val loss {history['val_loss'][-1]:.4f}" if history["val_loss"] else ""
    if history.get("val_cider"):
        val += f", val CIDEr-D {history['val_cider'][-1]:.2f}"
    line = (f"epoch {state.epoch}/{epochs}: loss {history['loss'][-1]:.4f}{val}, "
            f"lr {history['learning_rate'][-1]:.2g}, {history['seconds'][-1]:.1f} s")
    if improved:
        line += " (best so far)"
    if state.stopped_early:
        line += f"; stopping early, best was epoch {state.best_epoch}"
    return line


def _seed_epoch(model: keras.Model, seed: int, epoch: int) -> None:
    """Reset every dropout RNG to a state derived from (seed, epoch).

    Keras keeps these RNG states in variables that checkpoints do not save; deriving them per
    epoch is what makes a resumed run draw the same dropout masks as an uninterrupted one.
    """
    generators = [v for v in model.non_trainable_variables if v.path.endswith("seed_generator_state")]
    for index, variable in enumerate(generators):
        value = (seed * 1_000_003 + epoch * 7919 + index) % (2**31 - 1)
        variable.assign(np.array([value, 0], dtype=variable.dtype))


class _BatchProgress(keras.callbacks.Callback):
    """A tqdm bar over the batches of one epoch (terminal only)."""

    def __init__(self, epoch: int, epochs: int):
        super().__init__()
        self._label = f"epoch {epoch + 1}/{epochs}"
        self._bar: Any = None  # a tqdm bar while the epoch runs

    def on_train_begin(self, logs=None):
        from tqdm import tqdm

        self._bar = tqdm(desc=self._label, unit="batch", leave=False, file=sys.stderr)

    def on_train_batch_end(self, batch, logs=None):
        self._bar.update(1)
        if logs and "loss" in logs:
            self._bar.set_postfix(loss=f"{float(logs['loss']):.3f}", refresh=False)

    def on_train_end(self, logs=None):
        self._bar.close()


