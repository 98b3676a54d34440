"""Files and folders the user names for the tool's output (``caption --output``, ``--output-dir``,
``--json``), checked before any work starts.

A path that can never be written (a folder where a file is wanted, a file where a folder is wanted,
a path under a file, a folder the tool may not create files in) is refused at once, in one line,
instead of after every photo has been captioned. Whether an existing file may be replaced is the
caller's decision (only files the tool wrote itself are; see ``inference.inputs`` and
``check_json_target``); writes then go through ``storage.atomic``.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from captioning import config
from captioning.errors import CaptioningError, InputFileError
from captioning.storage.output_folder import write_failure
from captioning.storage.regular_files import file_kind, not_a_folder
from captioning.storage.safe_json import read_json_file
from captioning.storage.safe_text import escape


class OutputFileError(CaptioningError):
    """An output path that cannot be written, or holds something of the user's."""


def check_file_target(path: str | Path, option: str) -> None:
    """Refuse ``path`` unless a file can be written there (whether one is there is not checked).

    Args:
        path: the file about to be written.
        option: how the user named it (``--json``), for the message.

    Raises:
        OutputFileError: it is a folder or a special file, lies under a file, or its folder cannot
            be created or written in.
    """
    path = Path(path)
    info = _stat(path, option)
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise OutputFileError(f"{_label(option, path)} is a folder; give a file name (e.g. "
                              f"{escape(path / 'captions.json' if option == '--json' else path / 'image.png')})")
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise OutputFileError(f"{_label(option, path)} is {file_kind(info.st_mode)}; give a new file name")
    check_can_create_in(path.parent, option, path)


def check_json_target(path: str | Path, option: str, what: str, is_own: Callable[[Any], bool]) -> bool:
    """``check_file_target``, then refuse a file at ``path`` unless it is an earlier one of the tool's.

    Args:
        path: the JSON file about to be written.
        option: how the user named it (``--json``), for the message.
        what: what the tool writes there, for the message (``"a captions file"``).
        is_own: True for parsed JSON of exactly the structure the tool writes there (a file of the
            user's that merely looks alike, a dataset's captions list say, must not match).

    Returns:
        True when an earlier file of the tool's is there (the caller replaces it); False when
        nothing is (the caller then writes only where nothing is yet, so a file that appears
        meanwhile is left alone).

    Raises:
        OutputFileError: as ``check_file_target``, or something else is at ``path`` (a symlink
            included, even to a file of the tool's: replacing it would lose the link).
    """
    path = Path(path)
    check_file_target(path, option)
    if not os.path.lexists(path):
        return False
    if not (stat.S_ISREG(os.lstat(path).st_mode) and _holds_own_json(path, is_own)):
        raise OutputFileError(f"{_label(option, path)} already exists and is not {what} this tool wrote; "
                              f"move it or choose another {option or 'file'} path")
    return True


def _holds_own_json(path: Path, is_own: Callable[[Any], bool]) -> bool:
    try:
        data = read_json_file(path, config.MAX_CAPTIONS_JSON_BYTES, allow_nan=True, allow_surrogates=True)
    except InputFileError:
        return False
    return is_own(data)


def check_folder_target(path: str | Path, option: str) -> None:
    """Refuse ``path`` unless it is a folder the tool can write in, or one it can create.

    Raises:
        OutputFileError: it is a file (or a special file), lies under a file, or cannot be written in.
    """
    path = Path(path)
    info = _stat(path, option)
    if info is not None and not stat.S_ISDIR(info.st_mode):
        raise OutputFileError(f"{_label(option, path)} is {not_a_folder(info.st_mode)}; "
                              "pass a folder (it is created if missing)")
    check_can_create_in(path, option, path)


def check_can_create_in(folder: Path, option: str, target: Path) -> None:
    """Refuse unless files can be made in ``folder`` (or in the nearest part of it that exists,
    which must be a folder): tried by creating and removing a hidden temp file there, the one
    test that also answers for root, read-only mounts and /proc."""
    existing = Path(os.path.abspath(folder))
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputFileError(f"{_label(option, target)} cannot be created: {escape(existing)} is a file, "
                              "not a folder; choose another path")
    try:
        handle, name = tempfile.mkstemp(prefix=".write-test-", dir=existing)
    except OSError as error:
        raise OutputFileError(f"{_label(option, target)} cannot be written: cannot create files in "
                              f"{escape(existing)} ({write_failure(error)}); choose a folder you can write to") from None
    os.close(handle)
    os.unlink(name)


def _label(option: str, path: Path) -> str:
    """``--json out.json``, or the path alone where the user named no option (the menu)."""
    return f"{option} {escape(path)}" if option else escape(path)


def _stat(path: Path, option: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None  # NotADirectoryError: under a file, which check_can_create_in names
    except OSError as error:
        raise OutputFileError(f"{_label(option, path)} cannot be inspected ({error.strerror or error})") from None
    except ValueError as error:  # an embedded NUL byte
        raise OutputFileError(f"{_label(option, path)} is not a usable file name ({error})") from None


__all__ = ["OutputFileError", "check_can_create_in", "check_file_target", "check_folder_target",
           "check_json_target"]
