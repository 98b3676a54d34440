"""Which worker this process is in a multi-worker run, read from ``TF_CONFIG`` without TensorFlow.

``tf.distribute.MultiWorkerMirroredStrategy`` reads the cluster from the ``TF_CONFIG`` environment
variable, a JSON object as TensorFlow documents it
(https://www.tensorflow.org/guide/distributed_training#setting_up_the_tf_config_environment_variable)::

    {"cluster": {"worker": ["host1:12345", "host2:23456"]},
     "task": {"type": "worker", "index": 0}}

Every host gets the same ``cluster`` and its own ``task``. A cluster may also name one ``chief``
(``"chief": ["host0:34567"]``, task type ``chief``); without one, worker 0 is the chief, the task
that writes the model (TensorFlow's own rule, ``_is_chief`` in its multi-worker guide). ``TF_CONFIG``
is checked here, before TensorFlow is imported, so a missing or malformed one is one line at once
rather than a hang or a traceback from deep inside the strategy.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from captioning.errors import CaptioningError

ENVIRONMENT_VARIABLE = "TF_CONFIG"
# Task types that train under MultiWorkerMirroredStrategy; "ps" belongs to ParameterServerStrategy
# and an "evaluator" trains nothing.
TRAINING_TASK_TYPES = ("chief", "worker")
# Top-level keys TensorFlow's TFConfigClusterResolver reads; anything else is most likely a typo.
KNOWN_KEYS = ("cluster", "task", "rpc_layer", "environment")
MAX_TF_CONFIG_CHARS = 1_000_000
EXAMPLE = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}} '
           "(index 1 on the second host)")
_ADDRESS = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})")


class ClusterConfigError(CaptioningError):
    """``TF_CONFIG`` is missing or does not describe a multi-worker training cluster."""


class WorkerLostError(CaptioningError):
    """A multi-worker run stopped because another worker stopped or could not be reached."""


@dataclass(frozen=True)
class ClusterTask:
    """This process's place in the cluster.

    Attributes:
        task_type: ``"worker"`` or ``"chief"``.
        task_index: index within its type.
        num_workers: chief plus workers: the number of processes that train together.
        is_chief: whether this task writes the model bundle and checkpoints (the others write
            theirs into temporary folders that are removed).
    """

    task_type: str
    task_index: int
    num_workers: int
    is_chief: bool

    @property
    def name(self) -> str:
        """``worker 1 of 3``, ``chief of 3``: how log lines name this task."""
        if self.task_type == "chief":
            return f"chief of {self.num_workers}"
        return f"worker {self.task_index} of {self.num_workers}"


def read_cluster(environ: Mapping[str, str] | None = None) -> ClusterTask:
    """Parse and check ``TF_CONFIG`` for ``--strategy multi-worker``.

    Args:
        environ: the environment to read (default ``os.environ``).

    Returns:
        This process's task.

    Raises:
        ClusterConfigError: ``TF_CONFIG`` is unset, not JSON, or not a training cluster; the
            message says what to set.
    """
    environ = os.environ if environ is None else environ
    text = environ.get(ENVIRONMENT_VARIABLE, "").strip()
    if not text:
        raise ClusterConfigError(f"--strategy multi-worker needs the {ENVIRONMENT_VARIABLE} environment variable "
                                 f"on every host, e.g. {EXAMPLE}")
    if len(text) > MAX_TF_CONFIG_CHARS:
        raise _invalid(f"it is longer than {MAX_TF_CONFIG_CHARS} characters")
    try:
        value = json.loads(text)
    except ValueError as error:
        raise _invalid(f"it is not JSON ({error})") from None
    return _task_of(value)


def _task_of(value) -> ClusterTask:
    if not isinstance(value, dict):
        raise _invalid("it must be a JSON object with 'cluster' and 'task'")
    unknown = sorted(set(value) - set(KNOWN_KEYS))
    if unknown:
        raise _invalid(f"unknown key {unknown[0]!r} (TensorFlow reads {', '.join(KNOWN_KEYS)})")
    cluster, task = value.get("cluster"), value.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise _invalid("'cluster' must map task types to lists of host:port addresses")
    extra = sorted(set(cluster) - set(TRAINING_TASK_TYPES))
    if extra:
        raise _invalid(f"cluster task type {extra[0]!r} is not used by MultiWorkerMirroredStrategy "
                       f"(only {' and '.join(TRAINING_TASK_TYPES)})")
    for kind, addresses in cluster.items():
        _check_addresses(kind, addresses)
    if len(cluster.get("chief", [])) > 1:
        raise _invalid("a cluster has at most one 'chief'")
    if not cluster.get("worker") and not cluster.get("chief"):
        raise _invalid("'cluster' lists no worker")
    everyone = [a for kind in TRAINING_TASK_TYPES for a in cluster.get(kind, [])]
    repeated = sorted({a for a in everyone if everyone.count(a) > 1})
    if repeated:
        raise _invalid(f"address {repeated[0]} is listed twice; every task needs its own host:port")
    if not isinstance(task, dict):
        raise _invalid("'task' must be an object like {\"type\": \"worker\", \"index\": 0}")
    task_type, index = task.get("type"), task.get("index", 0)
    if task_type not in cluster:
        raise _invalid(f"task type {task_type!r} is not in the cluster ({', '.join(sorted(cluster))})")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cluster[task_type]):
        raise _invalid(f"task index {index!r} must be a whole number from 0 to {len(cluster[task_type]) - 1} "
                       f"(the position of this host in cluster.{task_type})")
    is_chief = task_type == "chief" or (task_type == "worker" and index == 0 and "chief" not in cluster)
    return ClusterTask(task_type=str(task_type), task_index=index, num_workers=len(everyone), is_chief=is_chief)


def _check_addresses(kind: str, addresses) -> None:
    if not isinstance(addresses, list) or not addresses:
        raise _invalid(f"cluster.{kind} must be a non-empty list of \"host:port\" strings")
    for address in addresses:
        match = _ADDRESS.fullmatch(address) if isinstance(address, str) else None
        if match is None or not 1 <= int(match.group(1)) <= 65535:
            raise _invalid(f"cluster.{kind} entry {address!r} is not host:port (a port from 1 to 65535)")


def _invalid(reason: str) -> ClusterConfigError:
    return ClusterConfigError(f"{ENVIRONMENT_VARIABLE} is not a usable cluster description: {reason}; "
                              f"set it as TensorFlow documents, e.g. {EXAMPLE}")


__all__ = ["ENVIRONMENT_VARIABLE", "ClusterConfigError", "ClusterTask", "WorkerLostError", "read_cluster"]
