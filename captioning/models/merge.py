"""The merge decoder: its training graph (teacher forcing) and its step-wise inference graph.

The merge decoder (Tanti et al.'s merge architecture, as in the common Keras tutorials) keeps the
image out of the LSTM: the LSTM reads only words, and its output at each step is added to an image
embedding before the word classifier. Trained over whole captions at once, it computes exactly
what the tutorials' per-prefix model computes for every prefix, without expanding each caption
into all its prefixes or one-hot targets.

Layer names are part of the bundle format (weights are matched to a rebuilt architecture), so
never rename them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from captioning.config import DecoderConfig

# Stable layer names: bundles and checkpoints rely on them.
IMAGE_DROPOUT = "image_dropout"
IMAGE_DENSE = "image_dense"
IMAGE_STEPS = "image_steps"
WORD_EMBEDDING = "word_embedding"
WORD_DROPOUT = "word_dropout"
LSTM = "lstm"
MERGE_ADD = "merge_add"
MERGE_DENSE = "merge_dense"
WORD_LOGITS = "word_logits"


def build(vocab_size: int, max_length: int, feature_shape: Sequence[int], config: DecoderConfig) -> keras.Model:
    """The merge decoder's teacher-forcing graph (see ``captioning.models.build_decoder``).

    Its ``tokens`` input takes any length up to ``max_length - 1``: the trainer trims each batch's
    padding.

    Raises:
        ValueError: features that are not pooled vectors ``(D,)``.
    """
    if len(feature_shape) != 1:
        raise ValueError(f"the merge decoder takes pooled features (D,), got shape {tuple(feature_shape)}")
    return _build_merge_model(vocab_size, int(feature_shape[0]), config)


def _build_merge_model(vocab_size: int, feature_dim: int, config: DecoderConfig) -> keras.Model:
    features = keras.Input(shape=(feature_dim,), name="features")  # (B, D)
    # Any length (captions are at most max_length - 1 here): the trainer trims each batch's padding.
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")  # (B, T)

    image = layers.Dropout(config.dropout, name=IMAGE_DROPOUT)(features)
    image = layers.Dense(config.units, activation="relu", name=IMAGE_DENSE)(image)  # (B, U)
    image = layers.Reshape((1, config.units), name=IMAGE_STEPS)(image)  # (B, 1, U), broadcast over T

    # mask_zero: PAD positions (id 0) are skipped by the LSTM and excluded from the loss.
    words = layers.Embedding(vocab_size, config.embedding_dim, mask_zero=True, name=WORD_EMBEDDING)(tokens)
    words = layers.Dropout(config.dropout, name=WORD_DROPOUT)(words)  # (B, T, E)
    sequence = layers.LSTM(config.units, return_sequences=True, name=LSTM)(words)  # (B, T, U)

    merged = layers.Add(name=MERGE_ADD)([sequence, image])  # (B, T, U)
    hidden = layers.Dense(config.units, activation="relu", name=MERGE_DENSE)(merged)
    logits = layers.Dense(vocab_size, name=WORD_LOGITS)(hidden)  # (B, T, V)
    return keras.Model({"features": features, "tokens": tokens}, logits, name="merge_decoder")


class MergeStepDecoder:
    """Advance the merge decoder one word at a time from its LSTM state, sharing trained weights.

    The state is ``(image_embedding (B, U), h (B, U), c (B, U))``; every array has the batch first
    so beam search can reorder or repeat it with ``np.take``. Dropout is off (inference).
    """

    def __init__(self, training_model: keras.Model, config: DecoderConfig):
        """Wrap a merge training model.

        Args:
            training_model: A model from ``build`` (``kind="merge"``).
            config: Its decoder config.
        """
        self.config = config
        self.vocab_size = int(training_model.get_layer(WORD_LOGITS).units)
        self._image_dense = training_model.get_layer(IMAGE_DENSE)
        self._embedding = training_model.get_layer(WORD_EMBEDDING)
        self._cell = training_model.get_layer(LSTM).cell
        self._merge_dense = training_model.get_layer(MERGE_DENSE)
        self._logits = training_model.get_layer(WORD_LOGITS)
        self.units = int(self._cell.units)
        self.feature_dim = int(training_model.get_layer(IMAGE_DENSE).kernel.shape[0])
        state_spec = tf.TensorSpec((None, self.units), tf.float32)
        # Fixed signatures with a None batch: one trace serves every batch size and beam width.
        # Partials, so an ensemble's members are counted apart by TensorFlow's retracing warning
        # (as in attention.AttentionStepDecoder).
        self._embed_image = tf.function(functools.partial(MergeStepDecoder.embed_image_graph, self),
                                        input_signature=[tf.TensorSpec((None, self.feature_dim), tf.float32)])
        self._step = tf.function(functools.partial(MergeStepDecoder.step_graph, self), input_signature=[
            tf.TensorSpec((None,), tf.int32), state_spec, state_spec, state_spec])

    def embed_image_graph(self, features):
        """Tensor graph of the image embedding ``(B, D) -> (B, U)`` (``initial_state``'s first array).

        Public so the exporter (``captioning.export``) traces the very arithmetic captioning runs.
        """
        return self._image_dense(features, training=False)  # (B, U)

    def step_graph(self, tokens, image, h, c):
        """Tensor graph of ``step``: ``(log_probs (B, V), h, c)``."""
        # A plain lookup: calling the layer would attach a mask the cell cannot take.
        words = tf.gather(self._embedding.embeddings, tokens)  # (B, E)
        output, (h, c) = self._cell(words, [h, c], training=False)  # (B, U)
        hidden = self._merge_dense(output + image, training=False)
        logits = self._logits(hidden)  # (B, V)
        return tf.nn.log_softmax(logits, axis=-1), h, c

    def initial_state(self, features: np.ndarray) -> tuple[np.ndarray, ...]:
        """The state before the first word (START is fed to ``step`` next).

        Args:
            features: Pooled image features ``(B, D)`` (float16 or float32).

        Returns:
            ``(image_embedding, h, c)``, each float32 ``(B, U)``.
        """
        image = self._embed_image(np.asarray(features, dtype=np.float32)).numpy()
        zeros = np.zeros((image.shape[0], self.units), dtype=np.float32)
        return image, zeros, zeros.copy()

    def step(self, tokens: np.ndarray, state: tuple[np.ndarray, ...]) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """Feed one token per sequence and get the next word's log-probabilities.

        Args:
            tokens: The previous token of each sequence ``(B,)`` (START first).
            state: From ``initial_state`` or the previous ``step``.

        Returns:
            ``(log_probs (B, V) float32, new_state)``.
        """
        image, h, c = state
        log_probs, h, c = self._step(np.asarray(tokens, dtype=np.int32), image, h, c)
        return log_probs.numpy(), (image, h.numpy(), c.numpy())


STEP_DECODER = MergeStepDecoder  # what ``captioning.models.make_step_decoder`` builds for this kind
