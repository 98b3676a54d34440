"""How the command line runs: exit statuses, which commands need TensorFlow, and its quiet import.

TensorFlow is imported only once a command has said what it is doing and its cheap checks have
passed (a missing model or path, a dataset folder in no known layout, an output folder that is not
the tool's to replace, a bad ``--shard``, ImageNet weights that cannot be downloaded), so those are answered at once.

TensorFlow 2.21 prints absl/CUDA probing lines on stderr while importing and on first device use,
whatever TF_CPP_MIN_LOG_LEVEL says. They are noise to a CLI user (and look like errors on a
machine without a GPU), so ``import_tensorflow`` points file descriptor 2 at
/dev/null for exactly that window. Later lines are filtered by level instead: C++ logging below
FATAL (``TF_CPP_MIN_LOG_LEVEL=3``, which must be set before the import; it hides the oneDNN
"E0000 ... DT_BOOL" notice training prints on CPUs without AVX-512) and TensorFlow's Python logger
below ERROR. A user who sets ``TF_CPP_MIN_LOG_LEVEL`` gets TensorFlow's logs as they asked.
"""

from __future__ import annotations

import os
from types import ModuleType

from captioning.native_logs import stderr_silenced

# TensorFlow's C++ chatter (CUDA probing, oneDNN notices) is noise for a CLI user; real failures
# still reach them as Python exceptions. Read by TensorFlow when it is imported, so set here, at
# the CLI's first import.
USER_CHOSE_TF_LOGGING = "TF_CPP_MIN_LOG_LEVEL" in os.environ
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# No subcommand imports TensorFlow up front: ``caption``, ``evaluate``, ``train``, ``extract``,
# ``ensemble`` and ``serve`` import it themselves after their first line and cheap checks, so those
# are answered at once; ``info`` and ``default`` never need it.


_imported: list[ModuleType] = []  # the tensorflow module, once imported here


def import_tensorflow() -> ModuleType:
    """Return the ``tensorflow`` module, imported and its devices initialised quietly.

    Returns:
        The tensorflow module (also cached in ``sys.modules`` as usual).
    """
    if _imported:
        return _imported[0]
    with stderr_silenced():
        import tensorflow as tf

        tf.config.list_physical_devices()  # the CUDA probe (cuInit) happens here, still silenced
    if not USER_CHOSE_TF_LOGGING:
        # Python-side warnings (retracing notices and the like) are for developers, not CLI users.
        tf.get_logger().setLevel("ERROR")
    _imported.append(tf)
    return tf
