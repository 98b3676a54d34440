"""Silencing what native libraries print on file descriptor 2 while they start up.

TensorFlow prints absl/CUDA probing lines while importing, whatever TF_CPP_MIN_LOG_LEVEL says, and
LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." on a process's first model
run, with no setting to turn it off. Both are noise to a user (and look like errors), so the few
places that start them point descriptor 2 at /dev/null for exactly that window. Python's own
``sys.stderr`` is flushed first, so nothing of the tool's is lost.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the block (process-wide: keep the block short)."""
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


__all__ = ["stderr_silenced"]
