"""Self-critical sequence training (Rennie et al. 2017) with the "new self-critical" baseline.

After cross-entropy training, the decoder is fine-tuned to maximise the CIDEr-D of its own
captions. For each photo, ``samples_per_image`` captions are drawn from the model; each is
rewarded with its CIDEr-D against the photo's references (idf fixed once from the training
references, ``cider_reward``; the end of the caption counts as a word, so ending well is
rewarded); the baseline of a sample is the mean reward of the photo's other samples
(ruotianluo/self-critical.pytorch's "new SCST", which its authors found always better than the
greedy-caption baseline). The loss is ``-(reward - baseline) * log p(sample)``, averaged over the
sampled tokens.

Sampling and the gradient pass both run with dropout off and with PAD/UNK/START excluded, so the
gradient follows exactly the distribution the samples were drawn from. (Left in, those ids were
never sampled and so never penalised: they soaked up the probability pushed away from bad
samples, and validation CIDEr-D collapsed after three epochs.)

Epochs, checkpoints, Ctrl-C and ``--resume`` work as in cross-entropy training (``fit.py``); the
epoch kept is the one with the best validation CIDEr-D (``caption_quality``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from captioning.config import DecoderConfig, SelfCriticalConfig
from captioning.data.text import END, PAD, START, UNK, Vocabulary, tokenize
from captioning.inference.search import StepDecoder
from captioning.models import make_step_decoder
from captioning.training.caption_quality import CaptionQuality
from captioning.training.checkpoint_layout import FitState, checkpoint_dir
from captioning.training.checkpoints import (
    interrupts_deferred,
    load_best_weights,
    save_checkpoint,
    start_state,
)
from captioning.training.cider_reward import CiderD, with_end_marker

NEVER_SAMPLED = (PAD, UNK, START)


@dataclass
class SelfCriticalData:
    """What the loop reads: each training photo's feature row and references, and the monitor."""

    features: np.ndarray  # (rows, *feature_shape), may be a read-only memmap
    train_rows: np.ndarray  # (photos,) int64
    train_references: Sequence[Sequence[str]]  # raw captions per training photo
    monitor: CaptionQuality  # validation CIDEr-D


@dataclass
class SelfCriticalResult:
    """How the fine-tuning ended."""

    history: dict  # per epoch: reward (mean training CIDEr-D of the samples), val_cider, seconds
    epochs_run: int
    best_epoch: int  # 0: no epoch beat the starting model, which is what the model holds then
    best_val_cider: float
    start_val_cider: float
    interrupted: bool
    stopped_early: bool
    seconds: float


@dataclass
class SampledCaptions:
    """Captions drawn for a batch of photos, ``samples`` per photo, photo after photo."""

    tokens: np.ndarray  # (B * K, T) int32: sampled ids, END included when reached, PAD after
    lengths: np.ndarray  # (B * K,) tokens up to and including END (T when cut at the limit)


def sample_captions(step_decoder: StepDecoder, features: np.ndarray, samples: int, steps: int,
                    rng: np.random.Generator) -> SampledCaptions:
    """Draw ``samples`` captions per photo from the decoder's own distribution (Gumbel-max).

    Args:
        step_decoder: ``initial_state(features)`` and ``step(tokens, state)``, batch-first numpy.
        features: ``(B, ...)`` photo features.
        samples: captions per photo (K).
        steps: at most this many tokens per caption (``max_length - 1``: the words and END).
        rng: the random source.

    Returns:
        The captions; photo ``i``'s are rows ``i*K .. i*K + K - 1``.
    """
    state = step_decoder.initial_state(features)
    repeat = np.repeat(np.arange(features.shape[0]), samples)
    state = tuple(np.take(array, repeat, axis=0) for array in state)  # (B*K, ...)
    count = len(repeat)
    tokens = np.full((count, steps), PAD, dtype=np.int32)
    lengths = np.full((count,), steps, dtype=np.int32)
    previous = np.full((count,), START, dtype=np.int32)
    done = np.zeros((count,), dtype=bool)
    for step in range(steps):
        log_probs, state = step_decoder.step(previous, state)
        log_probs = np.array(log_probs, dtype=np.float64)  # (B*K, V)
        log_probs[:, NEVER_SAMPLED] = -np.inf
        uniform = rng.uniform(size=log_probs.shape).clip(1e-12, 1 - 1e-12)
        drawn = np.argmax(log_probs - np.log(-np.log(uniform)), axis=1).astype(np.int32)
        drawn[done] = PAD
        tokens[:, step] = drawn
        ended = ~done & (drawn == END)
        lengths[ended] = step + 1
        done |= ended
        if done.all():
            break
        previous = drawn
    return SampledCaptions(tokens, lengths)


def self_critical_advantages(rewards: np.ndarray, samples: int) -> np.ndarray:
    """Each sample's reward minus the mean reward of the same photo's other samples.

    Args:
        rewards: ``(B * K,)``, photo after photo.
        samples: K, at least 2.

    Returns:
        ``(B * K,)``; they sum to zero for each photo.
    """
    if samples < 2:
        raise ValueError("the self-critical baseline needs at least 2 samples per photo")
    grouped = rewards.reshape(-1, samples)  # (B, K)
    others = (grouped.sum(axis=1, keepdims=True) - grouped) / (samples - 1)
    return (grouped - others).reshape(-1)


def sample_rewards(cider: CiderD, sampled: SampledCaptions, words: Sequence[str],
                   references: Sequence, samples: int) -> np.ndarray:
    """CIDEr-D (0-10 scale) of every sampled caption against its photo's prepared references.

    A caption that reached END gets the end marker as its last word, as the references have it.
    """
    rewards = np.zeros(len(sampled.tokens), dtype=np.float64)
    for row, (tokens, length) in enumerate(zip(sampled.tokens, sampled.lengths, strict=True)):
        ids = tokens[:length]
        ended = length > 0 and ids[-1] == END
        caption = [words[i] for i in (ids[:-1] if ended else ids)]
        rewards[row] = cider.score(with_end_marker(caption) if ended else caption, references[row // samples])
    return rewards


def teacher_forcing_inputs(sampled: SampledCaptions,
                           input_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The training graph's view of the samples: inputs, targets and which steps count.

    Returns:
        ``tokens_in (N, T)``: START then the sample shifted right; ``targets (N, T)``: the sample;
        ``mask (N, T)`` float32: 1 on every sampled token up to and including END.
    """
    count, steps = sampled.tokens.shape
    targets = np.zeros((count, input_length), dtype=np.int32)
    targets[:, :min(steps, input_length)] = sampled.tokens[:, :input_length]
    inside = np.arange(input_length)[None, :] < sampled.lengths[:, None]  # (N, T)
    tokens_in = np.zeros_like(targets)
    tokens_in[:, 0] = START
    tokens_in[:, 1:] = targets[:, :-1]
    return np.where(inside, tokens_in, PAD).astype(np.int32), targets, inside.astype(np.float32)


class _PolicyGradientStep:
    """One optimiser step on ``-(advantage) * log p(sample)``, averaged over sampled tokens."""

    def __init__(self, model: keras.Model, vocab_size: int, clip_norm: float):
        self._model = model
        self._clip_norm = clip_norm
        bias = np.zeros(vocab_size, dtype=np.float32)
        bias[list(NEVER_SAMPLED)] = -1e9  # the policy is the sampling distribution
        self._never_sampled = tf.constant(bias)
        self._step = tf.function(self._graph, reduce_retracing=True)

    def _graph(self, features, tokens_in, targets, weights, mask):
        with tf.GradientTape() as tape:
            logits = self._model({"features": features, "tokens": tokens_in}, training=False)  # (N, T, V)
            log_probs = tf.nn.log_softmax(logits + self._never_sampled, axis=-1)
            chosen = tf.gather(log_probs, targets, batch_dims=2)  # (N, T)
            loss = -tf.reduce_sum(chosen * weights) / tf.maximum(tf.reduce_sum(mask), 1.0)
        variables = self._model.trainable_variables
        gradients, _ = tf.clip_by_global_norm(tape.gradient(loss, variables), self._clip_norm)
        self._model.optimizer.apply_gradients(zip(gradients, variables, strict=True))
        return loss

    def __call__(self, features: np.ndarray, sampled: SampledCaptions, advantages: np.ndarray) -> float:
        input_length = int(self._model.inputs[1].shape[1] or sampled.tokens.shape[1])
        tokens_in, targets, mask = teacher_forcing_inputs(sampled, input_length)
        weights = (mask * advantages[:, None]).astype(np.float32)
        return float(self._step(tf.constant(features), tf.constant(tokens_in), tf.constant(targets),
                                tf.constant(weights), tf.constant(mask)))


def self_critical_fit(model: keras.Model, decoder_config: DecoderConfig, vocab: Vocabulary, max_length: int,
                      data: SelfCriticalData, config: SelfCriticalConfig, checkpoint_root: Path,
                      fingerprint: dict, resume: bool = False, log: Callable[[str], None] = print,
                      progress: bool = False) -> SelfCriticalResult:
    """Fine-tune ``model`` for CIDEr-D epoch by epoch, checkpointing after each; Ctrl-C stops cleanly.

    Args:
        model: A trained decoder (``models.build_decoder`` with weights loaded), compiled with
            ``keras.optimizers.Adam(config.learning_rate)`` (its state goes into checkpoints).
        decoder_config: the model's decoder settings (for its step decoder).
        vocab: the model's vocabulary.
        max_length: caption length with START and END, as the model was built.
        data: training photos with references, and the validation monitor.
        config: epochs, learning rate, samples, batch size, patience, seed.
        checkpoint_root: the output bundle folder; checkpoints go to ``<it>/.checkpoint``.
        fingerprint: JSON-able options a resumed run must share (but for ``epochs``).
        resume: continue from the last finished epoch in the checkpoint.
        log: receives one line per epoch.
        progress: show a per-batch progress bar (terminals).

    Returns:
        The SelfCriticalResult; the model holds the weights with the best validation CIDEr-D seen,
        the starting weights included (fine-tuning never hands back a worse model).

    Raises:
        ResumeError: ``resume`` with no usable checkpoint or with different options.
        OutputFolderError: a checkpoint could not be written (a full disk).
    """
    checkpoints = checkpoint_dir(checkpoint_root)
    state = start_state(model, checkpoints, fingerprint, resume, config, log)  # type: ignore[arg-type]
    if state.epoch == 0:
        state.history = {"reward": [], "val_cider": [], "learning_rate": [], "seconds": []}
    step_decoder = make_step_decoder(model, decoder_config)
    if state.epoch:
        best_weights = load_best_weights(model, checkpoints, state)
        start_cider = float(state.history.get("start_val_cider", [float("nan")])[0])
    else:
        start_cider = data.monitor.score(step_decoder)
        state.history["start_val_cider"] = [start_cider]
        state.best, best_weights = -start_cider, model.get_weights()
        log(f"before fine-tuning: validation CIDEr-D {start_cider:.2f} on {len(data.monitor)} photos "
            f"(beam {data.monitor.beam_size})")
    references = [[with_end_marker(tokenize(c)) for c in captions] for captions in data.train_references]
    cider = CiderD(references)
    prepared = [cider.prepare(captions) for captions in references]
    train_step = _PolicyGradientStep(model, len(vocab), config.gradient_clip_norm)
    started, interrupted = time.time(), False
    try:
        for epoch in range(state.epoch, config.epochs):
            if state.stopped_early:
                break
            epoch_start = time.time()
            reward = _run_epoch(step_decoder, train_step, data, cider, prepared, vocab, max_length, config,
                                epoch, progress)
            val_cider = data.monitor.score(step_decoder)
            improved = _record_epoch(state, reward, val_cider, time.time() - epoch_start, config)
            if improved:
                best_weights = model.get_weights()
            with interrupts_deferred():
                save_checkpoint(model, best_weights, checkpoints, state, fingerprint)
            log(_epoch_line(state, config.epochs, improved))
    except KeyboardInterrupt:
        interrupted = True
    if best_weights is not None:
        model.set_weights(best_weights)
    return SelfCriticalResult(
        history=state.history, epochs_run=state.epoch, best_epoch=state.best_epoch,
        best_val_cider=-state.best, start_val_cider=start_cider, interrupted=interrupted,
        stopped_early=state.stopped_early, seconds=time.time() - started)


def _run_epoch(step_decoder, train_step: _PolicyGradientStep, data: SelfCriticalData, cider: CiderD,
               prepared: list, vocab: Vocabulary, max_length: int, config: SelfCriticalConfig, epoch: int,
               progress: bool) -> float:
    """One pass over the training photos in a (seed, epoch) order; the mean sample reward (x100)."""
    from tqdm import tqdm

    order = np.random.default_rng([config.seed, epoch]).permutation(len(data.train_rows))
    batches = range(0, len(order), config.images_per_batch)
    rewards = []
    with tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", leave=False,
              file=sys.stderr, disable=not progress) as bar:
        for number, start in enumerate(bar):
            photos = order[start:start + config.images_per_batch]
            photos = photos[np.argsort(data.train_rows[photos])]  # read the memmap in order
            features = np.asarray(data.features[data.train_rows[photos]], dtype=np.float32)  # (B, ...)
            rng = np.random.default_rng([config.seed, epoch, number])  # resumed epochs draw alike
            sampled = sample_captions(step_decoder, features, config.samples_per_image, max_length - 1, rng)
            batch_rewards = sample_rewards(cider, sampled, vocab.words, [prepared[p] for p in photos],
                                           config.samples_per_image)
            advantages = self_critical_advantages(batch_rewards, config.samples_per_image)
            train_step(np.repeat(features, config.samples_per_image, axis=0), sampled, advantages)
            rewards.append(batch_rewards.mean())
            bar.set_postfix(reward=f"{100 * np.mean(rewards[-20:]):.1f}", refresh=False)
    return 100.0 * float(np.mean(rewards))


def _record_epoch(state: FitState, reward: float, val_cider: float, seconds: float,
                  config: SelfCriticalConfig) -> bool:
    """Append the epoch; early stopping on validation CIDEr-D (``state.best`` holds minus it)."""
    state.epoch += 1
    state.history["reward"].append(round(reward, 4))
    state.history["val_cider"].append(round(val_cider, 4))
    state.history["learning_rate"].append(config.learning_rate)
    state.history["seconds"].append(round(seconds, 3))
    improved = -val_cider < state.best
    if improved:
        state.best, state.best_epoch, state.wait = -val_cider, state.epoch, 0
    else:
        state.wait += 1
        state.stopped_early = state.wait >= config.patience
    state.learning_rate = config.learning_rate
    return improved


def _epoch_line(state: FitState, epochs: int, improved: bool) -> str:
    history = state.history
    line = (f"epoch {state.epoch}/{epochs}: training reward {history['reward'][-1]:.1f}, validation "
            f"CIDEr-D {history['val_cider'][-1]:.2f}, {history['seconds'][-1]:.0f} s")
    if improved:
        line += " (best so far)"
    if state.stopped_early:
        best = f"epoch {state.best_epoch}" if state.best_epoch else "the starting model"
        line += f"; stopping early, best was {best}"
    return line


__all__ = ["SampledCaptions", "SelfCriticalData", "SelfCriticalResult", "sample_captions", "sample_rewards",
           "self_critical_advantages", "self_critical_fit", "teacher_forcing_inputs"]
