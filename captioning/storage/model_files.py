"""Keras weights and model files built in memory, so that putting them on disk is one plain write.

HDF5 writing straight to a file crashes the process when the disk fills under it (h5py then fails
inside its own clean-up: a traceback, then a segmentation fault, exit 139). Built in memory, the
file's bytes are known before anything is written, so the free space can be checked first, and a
disk that fills anyway is an ordinary ``OSError`` from a Python write, which the caller turns into
one line and a removed staging folder.

Nothing here imports TensorFlow: the functions take a built Keras model.
"""

from __future__ import annotations

import io


class _NamedBuffer(io.BytesIO):
    """An in-memory file whose ``str`` ends as Keras wants a path to end.

    Keras's ``save_weights`` and ``save`` check the file name's ending with ``str(filepath)``, then
    write into any ``io.BytesIO`` they are given (Keras 3.15, pinned in requirements.txt).
    """

    def __init__(self, name: str):
        super().__init__()
        self._name = name

    def __str__(self) -> str:
        return self._name


def weights_file_bytes(model) -> bytes:
    """The model's ``.weights.h5`` file (with the optimizer's state when compiled), as bytes.

    Args:
        model: a built keras Model.

    Returns:
        What ``model.save_weights("x.weights.h5")`` would write; ``model.load_weights`` reads it
        back from a file.
    """
    buffer = _NamedBuffer("memory.weights.h5")
    model.save_weights(buffer)
    return buffer.getvalue()


def model_file_bytes(model) -> bytes:
    """The model's ``.keras`` archive (architecture, weights, optimizer state), as bytes.

    Args:
        model: a built keras Model.

    Returns:
        What ``model.save("x.keras")`` would write.
    """
    buffer = _NamedBuffer("memory.keras")
    model.save(buffer)
    return buffer.getvalue()


def weights_as_float16(weights: bytes) -> bytes:
    """A ``.weights.h5`` file's bytes with every float32 array stored as float16.

    Halves the bundle (the shipped model is committed to git). Keras casts them back to the
    model's float32 variables on load; the decoder's weights are small numbers well inside float16's
    range, and evaluating the shipped model both ways gives the same scores (MODEL_CARD.md).

    Args:
        weights: a weights file's bytes (``weights_file_bytes``).

    Returns:
        The converted file's bytes (groups, attributes and other arrays unchanged).
    """
    import h5py
    import numpy as np

    converted = io.BytesIO()
    with h5py.File(io.BytesIO(weights), "r") as source, h5py.File(converted, "w") as target:
        target.attrs.update(source.attrs)

        def copy(name: str, item) -> None:
            if isinstance(item, h5py.Group):
                target.require_group(name).attrs.update(item.attrs)
                return
            data = item[()]
            if isinstance(data, np.ndarray) and data.dtype == np.float32:
                data = data.astype(np.float16)
            target.create_dataset(name, data=data).attrs.update(item.attrs)

        source.visititems(copy)
    return converted.getvalue()


__all__ = ["model_file_bytes", "weights_as_float16", "weights_file_bytes"]
