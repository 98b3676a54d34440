"""How the command line runs: exit statuses, which commands need TensorFlow, and its quiet import.

TensorFlow is imported only once a command's cheap checks have passed (a missing model or path, an
output folder that is not the tool's to replace, a bad ``--shard``), so those are answered at once. TensorFlow 2.21 prints absl/CUDA probing lines on stderr while importing
and on first device use, whatever TF_CPP_MIN_LOG_LEVEL says. They are noise to a CLI user (and look
like errors on a machine without a GPU), so ``import_tensorflow`` points file descriptor 2 at
/dev/null for exactly that window.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from types import ModuleType

# TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notices) is noise for a CLI user.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# Subcommands that need TensorFlow from their first step. ``caption``, ``evaluate``, ``train``,
# ``extract`` and ``ensemble`` import it themselves after their cheap checks, so those are reported
# at once (and the model line comes first); ``info`` and ``default`` never need it.
EAGER_TENSORFLOW_COMMANDS: frozenset[str] = frozenset()


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


_imported: list[ModuleType] = []  # the tensorflow module, once imported here


def import_tensorflow() -> ModuleType:
    """Return the ``tensorflow`` module, imported and its devices initialised quietly.

    Returns:
        The tensorflow module (also cached in ``sys.modules`` as usual).
    """
    if _imported:
        return _imported[0]
    with _stderr_silenced():
        import tensorflow as tf

        tf.config.list_physical_devices()  # the CUDA probe (cuInit) happens here, still silenced
    _imported.append(tf)
    return tf
