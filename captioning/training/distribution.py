"""The tf.distribute strategy a run trains under, and how its datasets are split between workers.

``--strategy``: ``default`` (one device), ``mirrored`` (every GPU of this host, or its logical CPUs),
``auto`` (mirrored when several GPUs are visible) and ``multi-worker``
(``tf.distribute.MultiWorkerMirroredStrategy`` over the hosts ``TF_CONFIG`` names; see
``cluster.py``).

How a multi-worker run splits its data: every worker builds the same input pipeline (the batch
order depends only on the seed and the epoch) and keeps its share of each global batch, with
tf.data's ``AutoShardPolicy.DATA``. ``FILE`` sharding cannot apply: the features are one
memory-mapped cache file read through ``tf.numpy_function``, not a set of files a worker could
own. ``OFF`` with a hand-made per-worker split would read only a worker's rows, but it would need
its own copy of the batching rules to keep batches equal to a one-worker run's; with ``DATA``, the
global batches are by construction the one-worker run's, split between the replicas, so one step on
N workers computes the same gradient as one step on one. The price is that every worker gathers
the feature rows of whole global batches and drops the others' share: for pooled features that is
160 KB per batch of 64, for attention grids about 8 MB.
"""

from __future__ import annotations

import tensorflow as tf

from captioning.config import DEFAULT_STRATEGY, MULTI_WORKER_STRATEGY
from captioning.training.cluster import ClusterConfigError, read_cluster


def make_strategy(name: str = DEFAULT_STRATEGY) -> tf.distribute.Strategy:
    """The tf.distribute strategy for ``--strategy``.

    Args:
        name: ``auto`` (MirroredStrategy when more than one GPU is visible, else the default),
            ``default``, ``mirrored`` (over every GPU, or every logical CPU when there is no
            GPU) or ``multi-worker`` (MultiWorkerMirroredStrategy over the cluster in
            ``TF_CONFIG``; it must be made before TensorFlow runs anything else in the process).

    Returns:
        The strategy; build and compile the model inside ``strategy.scope()``.

    Raises:
        ClusterConfigError: ``multi-worker`` with a missing or unusable ``TF_CONFIG``, or made too late.
    """
    if name == MULTI_WORKER_STRATEGY:
        return multi_worker_strategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "default" or (name == "auto" and len(gpus) <= 1):
        return tf.distribute.get_strategy()
    if name not in ("auto", "mirrored"):
        raise ValueError(f"unknown strategy {name!r}; expected auto, default, mirrored or {MULTI_WORKER_STRATEGY}")
    devices = gpus or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy(devices=[d.name for d in devices])


def multi_worker_strategy() -> tf.distribute.MultiWorkerMirroredStrategy:
    """MultiWorkerMirroredStrategy over the cluster ``TF_CONFIG`` describes (checked first).

    The strategy starts this task's gRPC server; its first collective (the variable broadcast when
    the model is built) waits until every worker has started.
    """
    read_cluster()  # one clear line for a missing or malformed TF_CONFIG, before TensorFlow's own errors
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as error:
        if "program startup" not in str(error):
            raise
        # TensorFlow configures collective ops only before its runtime starts.
        raise ClusterConfigError("the multi-worker strategy must be created before TensorFlow runs anything "
                                 "else in the process; start training in a fresh process") from None


def dataset_options() -> tf.data.Options:
    """Options for a training or validation dataset: split between workers by data (see above)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


__all__ = ["dataset_options", "make_strategy", "multi_worker_strategy"]
