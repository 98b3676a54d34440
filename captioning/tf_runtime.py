"""Import TensorFlow once, with its C++ start-up chatter kept off the user's terminal.

TensorFlow 2.21 prints absl/CUDA probing lines on stderr while importing and on first device use,
whatever TF_CPP_MIN_LOG_LEVEL says. They are noise to a CLI user (and look like errors on a machine
without a GPU), so file descriptor 2 is pointed at /dev/null for exactly that window.
"""

from __future__ import annotations

import contextlib
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def _stderr_silenced():
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


def import_tensorflow():
    """Return the ``tensorflow`` module, imported and its devices initialised quietly.

    Returns:
        The tensorflow module (also cached in ``sys.modules`` as usual).
    """
    if "tensorflow" in sys.modules and getattr(import_tensorflow, "_done", False):
        return sys.modules["tensorflow"]
    with _stderr_silenced():
        import tensorflow as tf

        tf.config.list_physical_devices()  # the CUDA probe (cuInit) happens here, still silenced
    import_tensorflow._done = True
    return tf
