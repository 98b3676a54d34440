"""Soft-attention LSTM decoder ("Show, Attend and Tell", Xu et al. 2015) over the CNN feature grid.

At every step the LSTM looks at the CNN grid (7x7, 8x8 or 9x9 cells) through additive (Bahdanau) attention, gates the
context vector with ``sigmoid(Dense(h))`` ("beta"), and feeds ``[embedding, context]`` to the cell.
The state starts from the mean grid feature. Training adds the doubly stochastic attention penalty
with ``add_loss`` so any ``model.fit``/``compute_loss`` loop picks it up.

Made for a 2-core CPU, so everything that does not depend on the previous step is taken out of the
recurrence: the grid is reduced (1280 -> ``attention_feature_dim``) and projected for attention once
per batch, the embedding half of the LSTM gates is one matmul over all steps, the three matmuls that
read ``h`` are fused into one, and the output layer runs once over all steps after the loop.

Two layers hold every weight the step decoder needs (``attention_encoder`` and ``attention_lstm``);
``AttentionStepDecoder`` calls their methods on one step at a time, so stepping and teacher forcing
share the exact same arithmetic.
"""

from __future__ import annotations

import functools
import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from captioning.config import DecoderConfig
from captioning.data.text import END, PAD

# Stable layer names: bundles rebuild the architecture from config and load weights by name/path.
ENCODER_LAYER = "attention_encoder"
LSTM_LAYER = "attention_lstm"
EMBEDDING_LAYER = "embedding"
DEEP_OUTPUT_LAYER = "deep_output"
DROPOUT_LAYER = "output_dropout"
LOGITS_LAYER = "logits"


class GridEncoder(keras.layers.Layer):
    """Turns the CNN grid into what the recurrence reads, once per image.

    Returns the reduced grid ``(B, P, D)`` the context is taken from, its attention projection
    ``(B, P, A)`` (``W_a * a`` of the paper, precomputed outside the loop), and the initial
    ``h, c`` (``tanh(Dense(mean feature))``).
    """

    def __init__(self, feature_dim: int, attention_dim: int, units: int, **kwargs):
        super().__init__(**kwargs)
        self.feature_dim = feature_dim
        self.attention_dim = attention_dim
        self.units = units
        # A ReLU reduction keeps the grid non-negative like the CNN's own output and makes the
        # per-step context and gate matmuls (D x 4U) several times cheaper than on raw 1280-d cells.
        self.reduce = keras.layers.Dense(feature_dim, activation="relu", name="reduce")
        self.project = keras.layers.Dense(attention_dim, name="attention_project")
        self.init_h = keras.layers.Dense(units, activation="tanh", name="init_h")
        self.init_c = keras.layers.Dense(units, activation="tanh", name="init_c")

    def build(self, input_shape):
        pixels = math.prod(input_shape[1:-1])
        channels = input_shape[-1]
        self.reduce.build((None, pixels, channels))
        self.project.build((None, pixels, self.feature_dim))
        self.init_h.build((None, self.feature_dim))
        self.init_c.build((None, self.feature_dim))

    def call(self, features):
        """Encode a grid.

        Args:
            features: ``(B, g, g, C)`` or ``(B, g * g, C)`` (any grid side ``g``), any float dtype.

        Returns:
            ``(grid (B, P, D), projected (B, P, A), h (B, U), c (B, U))``.
        """
        features = ops.cast(features, self.compute_dtype)
        channels = features.shape[-1]
        features = ops.reshape(features, (ops.shape(features)[0], -1, channels))  # (B, P, C)
        grid = self.reduce(features)  # (B, P, D)
        projected = self.project(grid)  # (B, P, A)
        mean = ops.mean(grid, axis=1)  # (B, D)
        return grid, projected, self.init_h(mean), self.init_c(mean)

    def compute_output_spec(self, features):
        batch = features.shape[0]
        pixels = math.prod(features.shape[1:-1])
        spec = keras.KerasTensor
        return (
            spec((batch, pixels, self.feature_dim), dtype=self.compute_dtype),
            spec((batch, pixels, self.attention_dim), dtype=self.compute_dtype),
            spec((batch, self.units), dtype=self.compute_dtype),
            spec((batch, self.units), dtype=self.compute_dtype),
        )

    def get_config(self):
        return {**super().get_config(), "feature_dim": self.feature_dim,
                "attention_dim": self.attention_dim, "units": self.units}


class AttentionLSTM(keras.layers.Layer):
    """LSTM with soft attention over the grid, a gated context, and the doubly stochastic penalty.

    Weights: ``input_kernel`` (E, 4U) for the embedding half of the gates (applied to all steps
    at once), ``context_kernel`` (D, 4U), and ``state_kernel`` (U, A + D + 4U): one matmul on
    ``h`` gives the attention query, the beta gate and the recurrent half of the gates.
    """

    def __init__(self, units: int, attention_dim: int, feature_dim: int, embedding_dim: int,
                 regularization: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.attention_dim = attention_dim
        self.feature_dim = feature_dim
        self.embedding_dim = embedding_dim
        self.regularization = regularization

    def build(self, *args, **kwargs):
        u, a, d, e = self.units, self.attention_dim, self.feature_dim, self.embedding_dim
        glorot = keras.initializers.GlorotUniform()
        self.input_kernel = self.add_weight(shape=(e, 4 * u), initializer=glorot, name="input_kernel")
        self.context_kernel = self.add_weight(shape=(d, 4 * u), initializer=glorot,
                                              name="context_kernel")
        self.state_kernel = self.add_weight(shape=(u, a + d + 4 * u), initializer=glorot,
                                            name="state_kernel")
        # Forget-gate bias 1 (gate order i, f, g, o): remember by default early in training.
        gate_bias = np.zeros(a + d + 4 * u, dtype="float32")
        gate_bias[a + d + u:a + d + 2 * u] = 1.0
        self.state_bias = self.add_weight(shape=(a + d + 4 * u,),
                                          initializer=keras.initializers.Constant(gate_bias),
                                          name="state_bias")
        self.score_kernel = self.add_weight(shape=(a, 1), initializer=glorot, name="score_kernel")
        self.built = True

    def input_gates(self, embeddings):
        """The embedding half of the LSTM gates, ``(..., E) -> (..., 4U)``; no recurrence needed."""
        return ops.matmul(embeddings, self.input_kernel)

    def step(self, input_gates, h, c, grid, projected):
        """One decoding step from ``h_{t-1}, c_{t-1}``.

        Args:
            input_gates: ``(B, 4U)`` from ``input_gates(embedding of y_{t-1})``.
            h, c: ``(B, U)`` previous state.
            grid: ``(B, P, D)`` reduced features; projected: ``(B, P, A)`` their attention keys.

        Returns:
            ``(h (B, U), c (B, U), context (B, D), alpha (B, P))``; alpha >= 0 and sums to 1.
        """
        a, d = self.attention_dim, self.feature_dim
        fused = ops.matmul(h, self.state_kernel) + self.state_bias  # (B, A + D + 4U)
        # split, not slices: a slice's gradient is a zero tensor the size of the whole input.
        query, beta, state_gates = ops.split(fused, [a, a + d], axis=-1)
        energy = ops.tanh(projected + ops.expand_dims(query, 1))  # (B, P, A)
        scores = ops.squeeze(ops.matmul(energy, self.score_kernel), -1)  # (B, P)
        alpha = ops.softmax(scores, axis=-1)
        context = ops.squeeze(ops.matmul(ops.expand_dims(alpha, 1), grid), 1)  # (B, D)
        context = ops.sigmoid(beta) * context
        gates = input_gates + state_gates + ops.matmul(context, self.context_kernel)  # (B, 4U)
        i, f, g, o = ops.split(gates, 4, axis=-1)
        c = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(g)
        h = ops.sigmoid(o) * ops.tanh(c)
        return h, c, context, alpha

    def call(self, embeddings, grid, projected, h, c, step_mask):
        """Teacher-forced pass over all steps.

        Args:
            embeddings: ``(B, T, E)`` embeddings of the input tokens.
            grid, projected, h, c: from ``GridEncoder``.
            step_mask: ``(B, T)`` 1.0 where the step predicts a real word (or END), 0.0 for padding.

        Returns:
            ``(hs (B, T, U), contexts (B, T, D), alphas (B, T, P))``.
        """
        gates = self.input_gates(embeddings)  # (B, T, 4U), one matmul for all steps
        hs, contexts, alphas = self._recur(gates, h, c, grid, projected)
        if self.regularization > 0:
            self.add_loss(self.regularization * attention_penalty(alphas, step_mask))
        return hs, contexts, alphas

    def _recur(self, gates, h, c, grid, projected):
        """``step`` over every time step of ``gates (B, T, 4U)``, T static.

        T is max_length - 1 (~20): a Python loop unrolls into one graph, which on CPU ran faster
        than a while loop (no per-iteration control flow). Batches are not cut to their longest
        caption: that needs batches of similar lengths, which slowed this decoder's learning
        (3 epochs on 1,500 Flickr8k photos: validation loss 3.87 against 3.80; seeds moved it 0.005).
        """
        hs, contexts, alphas = [], [], []
        # unstack, not gates[:, t]: each slice's gradient is a zero tensor of all T steps.
        for gate in ops.unstack(gates, axis=1):
            h, c, context, alpha = self.step(gate, h, c, grid, projected)
            hs.append(h)
            contexts.append(context)
            alphas.append(alpha)
        return ops.stack(hs, axis=1), ops.stack(contexts, axis=1), ops.stack(alphas, axis=1)

    def compute_output_spec(self, embeddings, grid, projected, h, c, step_mask):
        batch, steps = embeddings.shape[0], embeddings.shape[1]
        spec = keras.KerasTensor
        return (spec((batch, steps, self.units), dtype=self.compute_dtype),
                spec((batch, steps, self.feature_dim), dtype=self.compute_dtype),
                spec((batch, steps, grid.shape[1]), dtype=self.compute_dtype))

    def get_config(self):
        return {**super().get_config(), "units": self.units, "attention_dim": self.attention_dim,
                "feature_dim": self.feature_dim, "embedding_dim": self.embedding_dim,
                "regularization": self.regularization}


def attention_penalty(alphas, step_mask):
    """Doubly stochastic attention penalty, scaled to the trainer's per-token loss.

    The paper adds ``sum_pixels (1 - sum_t alpha)^2`` per caption to a cross-entropy *summed*
    over the caption's words. Our trainer averages the cross-entropy over real tokens, so the
    penalty is divided the same way (by the batch's real-token count): the balance between the two
    terms is then the paper's for any ``lambda`` (paper: 1).

    Args:
        alphas: ``(B, T, P)`` attention weights.
        step_mask: ``(B, T)`` 1.0 on real steps.

    Returns:
        A scalar: ``sum_b sum_p (1 - sum_t mask * alpha)^2 / sum_b sum_t mask``.
    """
    # float32 whatever the compute dtype: a bfloat16 sum over ~20 steps would round the coverage.
    alphas = ops.cast(alphas, "float32")
    mask = ops.cast(step_mask, "float32")
    coverage = ops.sum(alphas * ops.expand_dims(mask, -1), axis=1)  # (B, P)
    per_caption = ops.sum(ops.square(1.0 - coverage), axis=-1)  # (B,)
    return ops.sum(per_caption) / ops.maximum(ops.sum(mask), 1.0)


def real_step_mask(tokens):
    """``(B, T)`` float mask of steps whose target is a word or END: input not PAD and not END."""
    return ops.cast(ops.logical_and(ops.not_equal(tokens, PAD), ops.not_equal(tokens, END)),
                    "float32")


def output_logits(model: keras.Model, hs, contexts, embeddings, training=False):
    """The deep output layer, run once over every step: ``(..., U), (..., D), (..., E) -> (..., V)``.

    ``logits = W_o dropout(Dense_E([h, context]) + embedding)``: the paper's
    ``L_o(E y + L_h h + L_z z)`` with ``L_h, L_z`` fused into one Dense, which also shrinks the
    vocabulary matmul's input to E.
    """
    deep = model.get_layer(DEEP_OUTPUT_LAYER)(ops.concatenate([hs, contexts], axis=-1))
    deep = model.get_layer(DROPOUT_LAYER)(deep + embeddings, training=training)
    return model.get_layer(LOGITS_LAYER)(deep)


def build(vocab_size: int, max_length: int, feature_shape,
                                   config: DecoderConfig) -> keras.Model:
    """Build the teacher-forced training graph of the attention decoder.

    Args:
        vocab_size: number of token ids (PAD=0 .. V-1).
        max_length: caption length with START and END; the model reads ``T = max_length - 1``.
        feature_shape: one image's grid, ``(g, g, C)`` or ``(g * g, C)``; any ``g`` (the attention
            weights do not depend on it, the bundle records it).
        config: ``kind="attention"``; uses ``embedding_dim``, ``units``, ``attention_dim``,
            ``attention_feature_dim``, ``dropout``, ``attention_regularization``.

    Returns:
        A ``keras.Model`` with inputs ``{"features": (B, *feature_shape), "tokens": (B, T)
        int32}`` and output logits ``(B, T, vocab_size)``; the attention penalty is in
        ``model.losses``.
    """
    feature_shape = tuple(int(n) for n in feature_shape)
    if len(feature_shape) not in (2, 3):
        raise ValueError(f"attention decoder needs grid features (g, g, C) or (g * g, C), "
                         f"got shape {feature_shape}")
    feature_dim = config.attention_feature_dim
    features = keras.Input(shape=feature_shape, name="features")
    tokens = keras.Input(shape=(max_length - 1,), dtype="int32", name="tokens")

    encoder = GridEncoder(feature_dim, config.attention_dim, config.units, name=ENCODER_LAYER)
    grid, projected, h, c = encoder(features)
    embeddings = keras.layers.Embedding(vocab_size, config.embedding_dim,
                                        name=EMBEDDING_LAYER)(tokens)  # (B, T, E)
    lstm = AttentionLSTM(config.units, config.attention_dim, feature_dim, config.embedding_dim,
                         regularization=config.attention_regularization, name=LSTM_LAYER)
    hs, contexts, _ = lstm(embeddings, grid, projected, h, c, real_step_mask(tokens))

    deep = keras.layers.Dense(config.embedding_dim, name=DEEP_OUTPUT_LAYER)(
        ops.concatenate([hs, contexts], axis=-1))  # (B, T, E)
    deep = keras.layers.Dropout(config.dropout, name=DROPOUT_LAYER)(deep + embeddings)
    logits = keras.layers.Dense(vocab_size, name=LOGITS_LAYER)(deep)  # (B, T, V)
    return keras.Model({"features": features, "tokens": tokens}, logits,
                       name="attention_decoder")


class AttentionStepDecoder:
    """Step-wise inference for the attention decoder, sharing the training model's weights.

    State is ``(grid (B, P, D), projected (B, P, A), h (B, U), c (B, U))``, all numpy and
    batch-first, so beam search can reorder it with ``np.take``. Each step costs one cell step,
    never a re-run of the prefix.
    """

    def __init__(self, model: keras.Model, config: DecoderConfig):
        self.config = config
        self._encoder = model.get_layer(ENCODER_LAYER)
        self._embedding = model.get_layer(EMBEDDING_LAYER)
        self._lstm = model.get_layer(LSTM_LAYER)
        self._model = model
        # Fixed signatures with a None batch and grid: one trace serves every batch size and beam
        # width (tags' constrained search decodes a second batch of another size), so an ensemble's
        # members never retrace, and TensorFlow never warns about retracing.
        channels = int(self._encoder.reduce.kernel.shape[0])
        reduced, projected = int(self._encoder.reduce.units), int(self._encoder.project.units)
        units, dtype = int(self._encoder.units), self._encoder.compute_dtype
        # TensorFlow counts traces per Python code object, so an ensemble's members, each traced
        # once, would look like one function retraced six times and draw its retracing warning; a
        # partial has no code object of its own, so each member is counted apart.
        self._initial = tf.function(functools.partial(AttentionStepDecoder.initial_graph, self),
                                    input_signature=[tf.TensorSpec((None, None, channels), tf.float32)])
        self._step = tf.function(functools.partial(AttentionStepDecoder.step_graph, self), input_signature=[
            tf.TensorSpec((None,), tf.int32), tf.TensorSpec((None, None, reduced), dtype),
            tf.TensorSpec((None, None, projected), dtype), tf.TensorSpec((None, units), dtype),
            tf.TensorSpec((None, units), dtype)])

    @property
    def state_sizes(self) -> tuple[int, int, int]:
        """``(D, A, U)``: widths of the reduced grid, its attention projection and the LSTM state."""
        return self._lstm.feature_dim, self._lstm.attention_dim, self._lstm.units

    def initial_graph(self, features):
        """Tensor graph of ``initial_state``: grid ``(B, g, g, C)`` -> ``(grid, projected, h, c)``.

        Public so the exporter (``captioning.export``) traces the very arithmetic captioning runs.
        """
        return self._encoder(features)

    def step_graph(self, tokens, grid, projected, h, c):
        """Tensor graph of ``step_with_attention``: ``(log_probs (B, V), h, c, alpha (B, P))``."""
        embedded = self._embedding(tokens)  # (B, E)
        h, c, context, alpha = self._lstm.step(self._lstm.input_gates(embedded), h, c, grid,
                                               projected)
        logits = output_logits(self._model, h, context, embedded, training=False)  # (B, V)
        return tf.nn.log_softmax(logits, axis=-1), h, c, alpha

    def initial_state(self, features: np.ndarray) -> tuple[np.ndarray, ...]:
        """Encode a batch of grids.

        Args:
            features: ``(B, g, g, C)`` or ``(B, g * g, C)``.

        Returns:
            ``(grid, projected, h, c)`` numpy arrays, batch first.
        """
        features = np.asarray(features, dtype=np.float32)
        features = features.reshape(len(features), -1, features.shape[-1])  # (B, P, C), as the layer does
        return tuple(t.numpy() for t in self._initial(tf.convert_to_tensor(features)))

    def step_with_attention(self, tokens: np.ndarray, state):
        """Advance one step and also return where it looked.

        Args:
            tokens: ``(B,)`` previous token ids.
            state: from ``initial_state`` or a previous step.

        Returns:
            ``(log_probs (B, V), new_state, alpha (B, P))``.
        """
        grid, projected, h, c = state
        log_probs, h, c, alpha = self._step(
            tf.convert_to_tensor(np.asarray(tokens, dtype=np.int32)),
            tf.convert_to_tensor(grid), tf.convert_to_tensor(projected),
            tf.convert_to_tensor(h), tf.convert_to_tensor(c))
        return log_probs.numpy(), (grid, projected, h.numpy(), c.numpy()), alpha.numpy()

    def step(self, tokens: np.ndarray, state):
        """Advance one step.

        Args:
            tokens: ``(B,)`` previous token ids.
            state: from ``initial_state`` or a previous step.

        Returns:
            ``(log_probs (B, V), new_state)``.
        """
        log_probs, state, _ = self.step_with_attention(tokens, state)
        return log_probs, state


STEP_DECODER = AttentionStepDecoder  # what ``captioning.models.make_step_decoder`` builds for this kind
