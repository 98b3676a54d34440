"""The caption loss: cross-entropy per real word, averaged over the real words of the global batch.

Under a tf.distribute strategy each replica sees part of a batch and the replicas' gradients are
summed. Keras's own mean loss divides each replica's mean over its own words by the number of
replicas, which weights a replica holding short captions more than one holding long ones, so N
replicas would not take the step one device takes on the same batch. Here each replica's loss is
the sum of its words' losses divided by the real words of the whole batch (summed across replicas)
and reduced with ``"sum"``, which Keras does not divide again: the summed gradients are then
exactly one device's, whatever the split. (Keras multiplies the *reported* loss of each replica by
the number of replicas and averages the replicas, so the reported loss is also one device's.)
"""

from __future__ import annotations

import keras
import tensorflow as tf

from captioning.data.text import PAD


@keras.saving.register_keras_serializable(package="captioning")
class CaptionLoss(keras.losses.Loss):
    """Cross-entropy on integer targets (logits in), PAD targets ignored, mean over the global batch's words."""

    def __init__(self, name: str = "caption_loss", **kwargs):
        kwargs.pop("reduction", None)  # always "sum": call() divides by the global batch's words itself
        super().__init__(name=name, reduction="sum", **kwargs)

    def call(self, y_true, y_pred):
        """Per-token losses whose sum is the batch's mean loss per real word.

        Args:
            y_true: ``(B, T)`` int target ids, PAD where there is no word.
            y_pred: ``(B, T, vocab)`` logits (any float type; the loss is computed in float32).

        Returns:
            ``(B, T)`` float32, zero at PAD targets.
        """
        y_true = keras.ops.cast(y_true, "int32")
        logits = keras.ops.cast(y_pred, "float32")
        per_token = keras.ops.sparse_categorical_crossentropy(y_true, logits, from_logits=True)  # (B, T)
        real = keras.ops.cast(keras.ops.not_equal(y_true, PAD), "float32")
        words = keras.ops.sum(real)
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            words = context.all_reduce(tf.distribute.ReduceOp.SUM, words)  # the whole global batch's
        return per_token * real / keras.ops.maximum(words, 1.0)


__all__ = ["CaptionLoss"]
