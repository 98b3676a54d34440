"""Keras 3's ``Model.fit`` under ``MultiWorkerMirroredStrategy``: two Keras bugs worked around.

Keras 3 (3.15 here) cannot ``fit`` under a multi-worker strategy (keras-team/keras#20585, #20329;
the TensorFlow multi-worker tutorial fails the same way):

1. Before training, ``_maybe_symbolic_build`` all-reduces the first input batch, a dict of
   per-replica tensors, which the multi-worker strategy's ``reduce`` cannot take (it treats it as
   one tensor). It only runs for a model that recorded its strategy when built; a model that did
   not takes its strategy from the scope it is fitted in, and builds while its step is traced.
2. Each step's logs (scalars such as the loss) are reduced with ``strategy.reduce("MEAN", v,
   axis=0)``, which fails on a scalar. Here the model gets train and test functions of its own,
   as Keras builds them but reducing with ``axis=None``: the mean of the replicas' values, the
   same number Keras reports under MirroredStrategy.

So: ``prepare_model`` after building and compiling the model in the strategy's scope, and call
``fit`` inside ``strategy.scope()``. Everything else (callbacks, validation, history) is Keras's own.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def prepare_model(model: keras.Model, strategy: tf.distribute.Strategy) -> None:
    """Make ``model.fit`` / ``model.evaluate`` work under ``strategy`` (a MultiWorkerMirroredStrategy).

    Args:
        model: built and compiled inside ``strategy.scope()``; fit it inside that scope too.
        strategy: the multi-worker strategy.
    """
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)  # its slots are made here, not while tracing
    model._distribute_strategy = None  # bug 1: the strategy now comes from the enclosing scope
    model.train_function = _step_function(model.train_step, strategy)
    model.test_function = _step_function(model.test_step, strategy)


def _step_function(step, strategy: tf.distribute.Strategy):
    """One step per call on a distributed iterator, logs averaged over the replicas (bug 2)."""

    @tf.function(reduce_retracing=True)
    def one_step(iterator):
        outputs = strategy.run(step, args=(iterator.get_next(),))
        return tf.nest.map_structure(lambda value: strategy.reduce("MEAN", value, axis=None), outputs)

    def function(iterator):
        # Keras's epoch iterator turns the end of the data (OutOfRangeError) into the epoch's end.
        return one_step(iterator)

    return function


__all__ = ["prepare_model"]
