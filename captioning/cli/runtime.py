"""How the command line runs: exit statuses, which commands need TensorFlow, and its quiet import.

TensorFlow is imported only once a command's cheap checks have passed (a missing model or path, an
output folder that is not the tool's to replace), so those are answered at once; ``extract`` needs
it from its first step. TensorFlow 2.21 prints absl/CUDA probing lines on stderr while importing
and on first device use, whatever TF_CPP_MIN_LOG_LEVEL says. They are noise to a CLI user (and look
like errors on a machine without a GPU), so ``import_tensorflow`` points file descriptor 2 at
/dev/null for exactly that window.
"""

from __future__ import annotations

import os
from types import ModuleType

from captioning.native_logs import stderr_silenced

# TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notices) is noise for a CLI user.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# Subcommands that need TensorFlow from their first step. ``caption``, ``evaluate``, ``train`` and
# ``ensemble`` import it themselves after their cheap checks, so those are reported at once (and the
# model line comes first); ``info`` and ``default`` never need it.
EAGER_TENSORFLOW_COMMANDS = frozenset({"extract"})


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
    _imported.append(tf)
    return tf
