"""Read a PyTorch legacy (pre-zip) state-dict file into numpy arrays, without torch.

Why this is safe although the format is pickle: a pickle can only run code through the globals it
names (``find_class``) and the objects it builds from them. :class:`_StateDictUnpickler` resolves
just four names, none of which runs anything: ``collections.OrderedDict`` (a plain container),
``torch._utils._rebuild_tensor_v2`` (replaced by a function that records its arguments in a
:class:`TensorRef`), and the storage classes ``torch.FloatStorage`` etc. (replaced by dtype markers).
Every other global raises, persistent ids must have the exact shape of a storage reference, and the
tensor data itself is read as raw bytes with numpy, never unpickled. This module is the only place
in the project that uses pickle's machinery, and ``pickle.load`` is never called.

The legacy layout (``torch.save(..., _use_new_zipfile_serialization=False)``):

1. pickle: magic number ``0x1950a86a20f9469cfc6c``; pickle: protocol version ``1001``;
   pickle: system info ``{"little_endian": True, ...}``.
2. pickle: the state dict; each tensor is ``_rebuild_tensor_v2(storage, offset, size, stride,
   requires_grad, hooks)`` over a persistent id
   ``("storage", StorageType, key, location, numel, view_metadata)``.
3. pickle: the list of storage keys, in the order their data follows.
4. per storage: an 8-byte little-endian element count, then the raw little-endian elements.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from captioning import config
from captioning.errors import EncoderError, InputFileError
from captioning.storage.regular_files import read_regular_file

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

# torch storage class -> numpy little-endian dtype.
_STORAGE_DTYPES = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "<i1",
    "ByteStorage": "<u1",
    "BoolStorage": "?",
}


@dataclass(frozen=True)
class StorageType:
    """Stands in for a torch storage class; only carries the element dtype."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(_STORAGE_DTYPES[self.name])


@dataclass(frozen=True)
class StorageRef:
    """A persistent id: which storage (by key) a tensor views, and how many elements it has."""

    storage_type: StorageType
    key: str
    numel: int


@dataclass(frozen=True)
class TensorRef:
    """The arguments of ``_rebuild_tensor_v2``, resolved into an array once storages are read."""

    storage: StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False,
                    backward_hooks=None, metadata=None) -> TensorRef:
    """Replacement for ``torch._utils._rebuild_tensor_v2``: records the view, builds nothing."""
    if not isinstance(storage, StorageRef):
        raise _BadCheckpoint("tensor without a storage reference")
    size, stride = tuple(size), tuple(stride)
    if len(size) != len(stride) or not all(isinstance(v, int) and v >= 0 for v in size + stride):
        raise _BadCheckpoint(f"bad tensor size {size} / stride {stride}")
    if not isinstance(storage_offset, int) or storage_offset < 0:
        raise _BadCheckpoint(f"bad storage offset {storage_offset!r}")
    return TensorRef(storage, storage_offset, size, stride)


class _BadCheckpoint(Exception):
    """Internal: the file is not a legacy state dict we can read (turned into EncoderError)."""


class _StateDictUnpickler(pickle.Unpickler):
    """An unpickler that can only build containers, tensor references and storage references."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return StorageType(name)
        raise _BadCheckpoint(f"refusing to load global {module}.{name}")

    def persistent_load(self, pid) -> StorageRef:
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise _BadCheckpoint(f"unexpected persistent id {pid!r:.80}")
        storage_type, key, _location, numel = pid[1:5]
        view = pid[5] if len(pid) == 6 else None
        if not isinstance(storage_type, StorageType) or not isinstance(key, str):
            raise _BadCheckpoint(f"unexpected storage reference {pid!r:.80}")
        if view is not None:  # storage views are not written by modern torch.save; not needed
            raise _BadCheckpoint("storage views are not supported")
        if not isinstance(numel, int) or numel < 0:
            raise _BadCheckpoint(f"bad storage size {numel!r}")
        return StorageRef(storage_type, key, numel)


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Read a PyTorch legacy-format state dict into numpy arrays.

    Args:
        path: the ``.pth`` file.

    Returns:
        Parameter name -> array in PyTorch's layout (e.g. conv weights ``(out, in, kh, kw)``),
        in the file's order.

    Raises:
        EncoderError: the file is missing, not a legacy state dict, names a disallowed global,
            or is truncated.
    """
    path = Path(path)
    try:
        # Read whole (19 MB for efficientnet_lite0): the unpickler then reads from memory, so a
        # length field claiming terabytes cannot make it allocate them, and every size below is
        # checked against the bytes really there.
        data = read_regular_file(path, config.MAX_TORCH_CHECKPOINT_BYTES)
    except InputFileError as error:
        raise EncoderError(f"{path}: cannot read PyTorch weights ({error.reason})") from None
    try:
        return _read(io.BytesIO(data), len(data))
    except _BadCheckpoint as error:
        raise EncoderError(f"{path}: not a readable PyTorch state dict ({error})") from None
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, KeyError,
            IndexError, MemoryError, OverflowError, RecursionError) as error:
        raise EncoderError(f"{path}: cannot read PyTorch weights ({type(error).__name__}: "
                           f"{str(error)[:120]}); reinstall the package that provides it") from None


def _read(file: BinaryIO, file_size: int) -> dict[str, np.ndarray]:
    """Parse the four sections of the legacy format (see the module docstring).

    Args:
        file: the checkpoint's bytes.
        file_size: how many there are; no storage or tensor may claim more.
    """
    if _StateDictUnpickler(file).load() != MAGIC_NUMBER:
        raise _BadCheckpoint("wrong magic number (a zip-format or non-PyTorch file?)")
    if _StateDictUnpickler(file).load() != PROTOCOL_VERSION:
        raise _BadCheckpoint("unsupported protocol version")
    sys_info = _StateDictUnpickler(file).load()
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
        raise _BadCheckpoint("only little-endian files are supported")
    state = _StateDictUnpickler(file).load()
    if not isinstance(state, dict) or not all(isinstance(v, TensorRef) for v in state.values()):
        raise _BadCheckpoint("top-level object is not a dict of tensors")
    _check_sizes(state, file_size)  # before anything is allocated for the tensors
    keys = _StateDictUnpickler(file).load()
    if not isinstance(keys, list):
        raise _BadCheckpoint("storage key list missing")
    storages = _read_storages(file, keys, _storage_types(state))
    return {name: _as_array(ref, storages[ref.storage.key]) for name, ref in state.items()}


def _check_sizes(state: dict[str, TensorRef], file_size: int) -> None:
    """Refuse storages, and tensors viewing them, that claim more bytes than the whole file holds.

    A storage's data is inside the file, so it cannot be larger. A tensor is copied out of its
    view; a stride-0 view could claim any size over one element, and ``torch.save`` never writes
    one, so a tensor is held to the same bound.
    """
    for name, ref in state.items():
        itemsize = ref.storage.storage_type.dtype.itemsize
        stored = ref.storage.numel * itemsize
        viewed = math.prod(ref.size) * itemsize
        if max(stored, viewed) > file_size:
            raise _BadCheckpoint(f"tensor {name!r:.60} claims {max(stored, viewed):,} bytes, more than the "
                                 f"whole file ({file_size:,} bytes)")


def _storage_types(state: dict[str, TensorRef]) -> dict[str, StorageRef]:
    """Each storage key with its dtype and element count, from the tensors that use it."""
    refs: dict[str, StorageRef] = {}
    for ref in state.values():
        if refs.setdefault(ref.storage.key, ref.storage) != ref.storage:
            raise _BadCheckpoint(f"storage {ref.storage.key} described two ways")
    return refs


def _read_storages(file: BinaryIO, keys: list, refs: dict[str, StorageRef]) -> dict[str, np.ndarray]:
    """Read each storage's raw data, in the order of ``keys``."""
    if sorted(keys) != sorted(refs):
        raise _BadCheckpoint("storage key list does not match the tensors")
    storages = {}
    for key in keys:
        ref = refs[key]
        count = int.from_bytes(_read_exactly(file, 8), "little")
        if count != ref.numel:
            raise _BadCheckpoint(f"storage {key} holds {count} elements, expected {ref.numel}")
        dtype = ref.storage_type.dtype
        storages[key] = np.frombuffer(_read_exactly(file, count * dtype.itemsize), dtype=dtype)
    return storages


def _read_exactly(file: BinaryIO, n: int) -> bytes:
    data = file.read(n)
    if len(data) != n:
        raise _BadCheckpoint("file is truncated")
    return data


def _as_array(ref: TensorRef, storage: np.ndarray) -> np.ndarray:
    """The tensor's view of its storage (offset, size, stride in elements) as an owned array."""
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride, strict=True) if n > 0)
    if any(n == 0 for n in ref.size):
        return np.zeros(ref.size, dtype=storage.dtype)
    if last >= storage.size:
        raise _BadCheckpoint("tensor view runs past the end of its storage")
    base = storage[ref.offset:]
    strides = tuple(s * storage.itemsize for s in ref.stride)
    return np.lib.stride_tricks.as_strided(base, ref.size, strides, writeable=False).copy()
