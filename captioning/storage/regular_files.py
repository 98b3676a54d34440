"""Open and read only regular files, so a FIFO, a device or a socket never blocks or floods the tool.

``open(path)`` on a FIFO waits for a writer forever, and reading ``/dev/zero`` never ends. Every
file the tool reads on the user's say-so goes through here: the path is checked with ``stat``
(so a device is never even opened), then opened with ``O_NONBLOCK`` (opening a FIFO returns at
once) and checked again with ``fstat`` on the open descriptor, which closes the race where the
path is swapped between the two. ``O_NONBLOCK`` changes nothing for a regular file's reads.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from captioning.errors import InputFileError
from captioning.storage.disk_space import format_bytes

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
               | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))


def file_kind(mode: int) -> str:
    """What a ``st_mode`` names, in words: ``a regular file``, ``a FIFO (named pipe)``, ..."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((words for test, words in _KINDS if test(mode)), "a special file")


def not_a_folder(mode: int) -> str:
    """The reason for refusing a non-folder where a folder is wanted: ``a file, not a folder``,
    ``a FIFO (named pipe), not a folder``."""
    return f"{'a file' if stat.S_ISREG(mode) else file_kind(mode)}, not a folder"


def not_regular(mode: int) -> str:
    """The reason for refusing a path whose ``st_mode`` is ``mode``: ``a FIFO (named pipe), not a
    regular file``."""
    return f"{file_kind(mode)}, not a regular file"


def check_regular_file(path: str | Path) -> os.stat_result:
    """Stat ``path`` (following symlinks) and insist it is a regular file.

    Returns:
        Its ``os.stat_result``.

    Raises:
        InputFileError: missing (``missing=True``), unreadable, or not a regular file.
    """
    try:
        info = os.stat(path)
    except OSError as error:
        raise _os_error(path, error) from None
    except ValueError as error:  # an embedded NUL byte
        raise InputFileError(path, f"not a usable file name ({error})") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputFileError(path, not_regular(info.st_mode))
    return info


@contextlib.contextmanager
def open_regular_file(path: str | Path) -> Iterator[BinaryIO]:
    """Open a regular file for binary reading without ever blocking on a FIFO or a device.

    Args:
        path: the file.

    Yields:
        The open file (closed on exit).

    Raises:
        InputFileError: missing (``missing=True``), unreadable, or not a regular file.
    """
    check_regular_file(path)
    try:
        descriptor = os.open(path, _OPEN_FLAGS)
    except OSError as error:
        raise _os_error(path, error) from None
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):  # swapped for something else since the stat above
            raise InputFileError(path, not_regular(mode))
        handle = os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
    with handle:
        yield handle


def read_regular_file(path: str | Path, max_bytes: int) -> bytes:
    """The bytes of a regular file no bigger than ``max_bytes``.

    The size is checked before reading (nothing is allocated for an oversized file) and again
    while reading (a file that grows meanwhile is not read past the limit).

    Args:
        path: the file.
        max_bytes: the most this file may hold.

    Returns:
        Its content.

    Raises:
        InputFileError: missing (``missing=True``), unreadable, not a regular file, or too large.
    """
    with open_regular_file(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > max_bytes:
            raise too_large(path, size, max_bytes)
        try:
            data = handle.read(max_bytes + 1)
        except OSError as error:
            raise _os_error(path, error) from None
    if len(data) > max_bytes:
        raise too_large(path, len(data), max_bytes)
    return data


def too_large(path: str | Path, size: int, max_bytes: int) -> InputFileError:
    """The error for a file over its size limit."""
    return InputFileError(path, f"the file is {format_bytes(size)}, over the {format_bytes(max_bytes)} "
                                "this tool reads from such a file")


def _os_error(path: str | Path, error: OSError) -> InputFileError:
    if error.errno == errno.ENOENT:
        return InputFileError(path, "file not found", missing=True)
    if error.errno in (errno.EACCES, errno.EPERM):
        return InputFileError(path, "permission denied; make the file readable")
    if error.errno == errno.ENXIO:  # a socket, or a FIFO opened for writing without a reader
        return InputFileError(path, "a socket or a pipe, not a regular file")
    return InputFileError(path, f"cannot read the file ({error.strerror or error})")


__all__ = ["check_regular_file", "file_kind", "not_a_folder", "not_regular", "open_regular_file",
           "read_regular_file", "too_large"]
