"""Atomic file writes: a reader sees the old file or the complete new one, never half of one.

Every writer puts its bytes into a temp file beside the target (same folder, so the same disk),
flushes them to disk, then ``os.replace``s the temp file onto the target. When anything fails
(full disk, Ctrl-C, a writer's exception) the temp file is removed and the target keeps its old
content. Temp files are named ``.<target name>.<random><suffix>``: hidden, and recognisable as
leftovers should the process be killed in between.

``exchange`` swaps two folders in one step where the system can (Linux ``renameat2``), which is how
a bundle folder is replaced with never a moment without one.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import functools
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# mkstemp makes files private (0600); what this tool writes is ordinary user data.
FILE_MODE = 0o644


@contextlib.contextmanager
def atomic_output(path: str | Path, suffix: str | None = None, replace: bool = True) -> Iterator[Path]:
    """A temp path beside ``path`` that replaces ``path`` when the block succeeds.

    For writers that want a file name (``figure.savefig``, ``np.save``, Keras ``save_weights``)
    or open the file themselves. The folder must exist.

    Args:
        path: the target file.
        suffix: the temp file's ending, for writers that choose the format from the name or
            append their own (``".png"``, ``".npy"``, ``".weights.h5"``); default ``".tmp"``.
        replace: False publishes only where nothing is at ``path`` yet (a hard link, which fails
            if the name is taken, so a file someone puts there meanwhile is never written over).

    Yields:
        The temp file's path (the file exists, empty).

    Raises:
        FileExistsError: ``replace=False`` and something is at ``path``; it is left as it was.
        OSError: the temp file cannot be created, written, synced or renamed; the target is
            untouched and the temp file removed.
    """
    path = Path(path)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" if suffix is None else suffix,
                                    dir=path.parent)
    os.close(handle)
    temp = Path(name)
    try:
        yield temp
        _sync(temp)  # the data reaches the disk before the rename that publishes it
        os.chmod(temp, FILE_MODE)
        if replace:
            os.replace(temp, path)
        else:
            _publish_new(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


# Errors of os.link on file systems without hard links (FAT, some network and FUSE mounts).
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK, errno.EXDEV}


def _publish_new(temp: Path, path: Path) -> None:
    """Give ``temp`` the name ``path`` only if that name is free, in one step where links exist."""
    try:
        os.link(temp, path)  # atomic, and fails with EEXIST rather than replacing
    except OSError as error:
        if error.errno not in _NO_HARD_LINKS:
            raise
        if os.path.lexists(path):  # no links here: check, then rename (a tiny window remains)
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
        os.replace(temp, path)
        return
    temp.unlink()


def write_text_atomic(path: str | Path, text: str, replace: bool = True) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically.

    Args:
        path: the target file; its folder must exist.
        text: the whole new content.
        replace: False writes only where nothing is at ``path`` (as ``atomic_output``).

    Returns:
        ``path`` as a Path.

    Raises:
        FileExistsError: ``replace=False`` and something is at ``path``; it is left as it was.
        OSError: the file cannot be written; ``path`` keeps its old content.
    """
    path = Path(path)
    with atomic_output(path, replace=replace) as temp:
        temp.write_text(text, encoding="utf-8")
    return path


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically.

    Args:
        path: the target file; its folder must exist.
        data: the whole new content.

    Returns:
        ``path`` as a Path.

    Raises:
        OSError: the file cannot be written (a full disk included); ``path`` keeps its old content.
    """
    path = Path(path)
    with atomic_output(path) as temp:
        temp.write_bytes(data)
    return path


def write_json_atomic(path: str | Path, data: Any, sort_keys: bool = False, replace: bool = True) -> Path:
    """Write ``data`` as indented UTF-8 JSON (non-ASCII kept as is, trailing newline) atomically.

    Args:
        path: the target file; its folder must exist.
        data: JSON-serialisable value.
        sort_keys: sort object keys (stable files for diffs).
        replace: False writes only where nothing is at ``path`` (as ``atomic_output``).

    Returns:
        ``path`` as a Path.

    Raises:
        FileExistsError: ``replace=False`` and something is at ``path``; it is left as it was.
        OSError: the file cannot be written; ``path`` keeps its old content.
        TypeError, ValueError: ``data`` is not JSON-serialisable (nothing is written).
    """
    text = json.dumps(data, indent=2, ensure_ascii=False, sort_keys=sort_keys) + "\n"
    return write_text_atomic(path, text, replace=replace)


# renameat2(2)'s flag that swaps two existing paths in one step (Linux 3.15+, glibc 2.28+).
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange(first: str | Path, second: str | Path) -> bool:
    """Swap two existing paths in one atomic step, where the system can.

    Readers see either the old or the new entry at both paths at every instant, never a gap (two
    renames leave one for a moment; a kill there loses the path).

    Args:
        first, second: existing files or folders on the same file system.

    Returns:
        True when swapped; False when this system or file system has no atomic exchange (the
        caller then falls back to renames), with nothing changed.

    Raises:
        OSError: the swap itself failed (a missing path, permissions).
    """
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):  # kernel or file system lacks it
        return False
    raise OSError(code, os.strerror(code), str(first), None, str(second))


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """libc's ``renameat2``, or None off Linux or with a libc that lacks it (looked up once)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def _sync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())
