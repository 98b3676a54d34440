"""Folders the tool writes whole (model bundles): what it may replace, one writer at a time, and
the clean-up after a killed save.

``train --output``, ``scst --output``, ``ensemble --output`` and the default ``saved_models/<name>``
are replaced whole by the finished bundle, so the tool writes only where nothing of the user's can be
lost: a path that does not exist, an empty folder, a model bundle (its config.json is this tool's)
holding nothing but what bundles are made of (``bundles.layout``), or an interrupted run's folder
(nothing but ``.checkpoint``). Anything else is refused before any work starts: a file a user put
into a bundle (notes, a photo) is theirs, and replacing the bundle would delete it. The shipped
bundle (``config.DEFAULT_BUNDLE_DIR``, tracked in git) is never replaced at all.

Beside the folder ``NAME`` (same parent, so the same disk) live, hidden:

    .NAME.lock          held (``flock``) by the one process writing NAME; the kernel releases it
                        when that process dies, even by SIGKILL. It names the holder (pid, start
                        time, command) for the message a second run prints; removed at the end.
    .NAME.new-XXXXXXXX  a bundle being written (``bundle.write_bundle_folder``); swapped with NAME
                        when complete, after which it holds the old bundle until deleted.
    .NAME.old-XXXXXXXX  the old bundle moved aside, on systems without an atomic exchange.

A killed save leaves the last two behind. The next writer (holding the lock, so no live save owns
them) puts a moved-aside bundle back when NAME is missing, moves a training checkpoint stranded in
one back into NAME, and deletes them. Readers of bundles put a moved-aside bundle back too, when
no writer holds the lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shlex
import shutil
import stat
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from captioning import config as settings
from captioning.bundles import layout
from captioning.errors import CaptioningError, InputFileError
from captioning.storage.regular_files import not_a_folder
from captioning.storage.safe_json import read_json_file
from captioning.storage.safe_text import escape
from captioning.training import checkpoint_layout

CHECKPOINT_DIR = settings.CHECKPOINT_FOLDER
BUNDLE_CONFIG = settings.BUNDLE_CONFIG_FILE
STAGING_INFIX = layout.STAGING_INFIX
BACKUP_INFIX = layout.BACKUP_INFIX
LOCK_SUFFIX = ".lock"
MAX_LOCK_FILE_BYTES = 64 * 1024  # the holder's pid, start time and command line
# tempfile.mkdtemp's random part, matched exactly: keeps another bundle's leftovers (say of a
# bundle named "NAME.new-x") from being taken for NAME's.
_LEFTOVER_TAIL = layout.TEMP_TAIL
# How long a writer waits for a lock held by a reader putting a bundle back (a moment).
LOCK_WAIT_SECONDS = 2.0

_held: dict[str, list] = {}  # lock file -> [descriptor, depth]: this process's locks, re-entrant


class OutputFolderError(CaptioningError):
    """An output folder that is not the tool's to replace, is busy, or cannot be written."""


def resolve(path: str | Path) -> Path:
    """``path`` with ``~`` expanded, made absolute and normalised (``.`` and ``..`` resolved)."""
    return Path(os.path.abspath(Path(path).expanduser()))


def check_output_folder(path: str | Path, default: bool = False, replace_whole: bool = True) -> None:
    """Refuse ``path`` unless it is absent, an empty folder, a bundle, or an interrupted run.

    A bundle or an interrupted run's folder must hold nothing else (``bundles.layout`` says what a
    bundle is made of); the shipped bundle is refused whatever it holds. Reads no more than the
    folder's listing and its config.json, so it answers at once.

    Args:
        path: the folder a bundle is about to be written to.
        default: whether the tool chose it (``saved_models/<name>``) rather than ``--output``;
            only changes the advice.
        replace_whole: False for a writer that only adds the tool's own files to an existing bundle
            (the export on first use): then any bundle of this tool passes, the shipped one and one
            holding other files included, as nothing in it is replaced.

    Raises:
        OutputFolderError: one line saying what is there and what to pass instead.
    """
    path = resolve(path)
    if replace_whole and is_shipped_bundle(path):
        suggestion = _unused(path.parent / "my-model")
        example = f" (e.g. {suggestion})" if suggestion.parent.is_dir() else ""
        raise OutputFolderError(f"{path} is the shipped model (tracked in git), which train, scst and ensemble "
                                f"never replace; pass --output a new folder{example}")
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except NotADirectoryError:
        raise _refusal(path, f"cannot be created ({_first_non_folder(path)} is a file)", default) from None
    except OSError as error:
        raise _refusal(path, f"cannot be inspected ({error.strerror})", default) from None
    if stat.S_ISLNK(info.st_mode):
        raise _refusal(path, f"is a symbolic link (to {os.readlink(path)})", default)
    if not stat.S_ISDIR(info.st_mode):
        raise _refusal(path, f"is {not_a_folder(info.st_mode)}", default)
    try:
        entries = sorted(os.listdir(path))
    except OSError as error:
        raise _refusal(path, f"cannot be read ({error.strerror})", default) from None
    if not entries:
        return
    bundle = is_this_tools_bundle(path)
    if bundle and not replace_whole:
        return
    if bundle or _is_real_folder(path / CHECKPOINT_DIR):  # or an interrupted run before its first bundle
        foreign = ([name for name in entries if not layout.is_part_of_bundle(name, _is_real_folder(path / name))]
                   + _foreign_inside(path, layout.EXPORT_FOLDER) if bundle
                   else [name for name in entries if name != CHECKPOINT_DIR])
        foreign += _foreign_inside(path, CHECKPOINT_DIR)
        if not foreign:
            return
        them = "it" if len(foreign) == 1 else "them"
        what = ("is a model bundle but also " + _holds(path, foreign, "not part of one") if bundle
                else f"holds an interrupted training run ({CHECKPOINT_DIR}/) and "
                     + _holds(path, foreign, "not part of it", verb=False))
        raise _refusal(path, f"{what}; replacing it would delete {them}, so move {them} out first", default,
                       also=True)
    raise _refusal(path, _holds(path, entries, "not a model bundle"), default, inside=True)


def _foreign_inside(path: Path, folder: str) -> list[str]:
    """``folder/NAME`` for each entry of the bundle's ``exported/`` or ``.checkpoint/`` (and its epoch
    folders) that the tool does not write there; nothing when ``folder`` is absent or not a real folder
    (then it is judged as an entry of the bundle). An unreadable folder counts as foreign: what it holds
    is unknown."""
    if not _is_real_folder(path / folder):
        return []
    if folder == CHECKPOINT_DIR:
        return _foreign_entries(path, folder, checkpoint_layout.is_part_of_checkpoint, inner=lambda name: (
            lambda entry, is_folder: checkpoint_layout.is_part_of_epoch_folder(entry, is_folder,
                                                                               staging=name.startswith("."))))
    return _foreign_entries(path, folder, layout.is_part_of_export)


def _foreign_entries(path: Path, folder: str, is_ours: Callable[[str, bool], bool],
                     inner: Callable[[str], Callable[[str, bool], bool]] | None = None) -> list[str]:
    """The entries of ``path/folder`` that ``is_ours`` rejects, as ``folder/NAME``; ``inner(NAME)`` judges
    what a sub-folder the tool writes holds."""
    try:
        names = sorted(os.listdir(path / folder))
    except OSError:
        return [folder]
    foreign = []
    for name in names:
        is_folder = _is_real_folder(path / folder / name)
        if not is_ours(name, is_folder):
            foreign.append(f"{folder}/{name}")
        elif is_folder and inner is not None:
            foreign += _foreign_entries(path, f"{folder}/{name}", inner(name))
    return foreign


def is_shipped_bundle(path: str | Path) -> bool:
    """Whether ``path`` is the shipped bundle (``config.DEFAULT_BUNDLE_DIR``), by any name (a link above it too)."""
    shipped = Path(settings.DEFAULT_BUNDLE_DIR)
    if os.path.realpath(Path(path).expanduser()) == os.path.realpath(shipped):
        return True
    try:
        return os.path.samefile(Path(path).expanduser(), shipped)  # the same folder mounted elsewhere
    except OSError:
        return False


def _holds(path: Path, names: list[str], what: str, verb: bool = True) -> str:
    """``holds 2 files or folders that are WHAT (a, b/)``: the first three named, folders with a slash, links
    said to be links (``verb=False`` leaves out ``holds``)."""
    shown = [escape(name) + _kind_mark(path / name) for name in names[:3]]
    more = ", ..." if len(names) > 3 else ""
    count = "1 file or folder" if len(names) == 1 else f"{len(names)} files or folders"
    holds = "holds " if verb else ""
    return f"{holds}{count} that {'is' if len(names) == 1 else 'are'} {what} ({', '.join(shown)}{more})"


def _kind_mark(path: Path) -> str:
    """``/`` after a folder's name, `` (a link)`` after a symbolic link's (replacing removes the link alone)."""
    if path.is_symlink():
        return " (a link)"
    return "/" if path.is_dir() else ""


def _is_real_folder(path: Path) -> bool:
    """A folder, not a link to one (``os.lstat``: replacing a bundle unlinks a link, never follows it)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def is_this_tools_bundle(path: str | Path) -> bool:
    """Whether ``path/config.json`` is a regular file holding this tool's bundle settings.

    A folder with any other config.json (a project, another tool's model) is not one. A bundle
    with a damaged setting still is (retraining into it is how it gets repaired).
    """
    try:
        data = read_json_file(Path(path) / BUNDLE_CONFIG, settings.MAX_BUNDLE_JSON_BYTES, allow_nan=True)
    except InputFileError:
        return False
    return (isinstance(data, dict) and type(data.get("format_version")) is int
            and "vocab_size" in data and "decoder" in data)


def _refusal(path: Path, what: str, default: bool, inside: bool = False, also: bool = False) -> OutputFolderError:
    """The one-line refusal. ``also``: ``what`` already says what to move; offer only the other way out."""
    suggestion = _unused(path / "model") if inside else _unused(path.parent / f"{path.name or 'output'}-model")
    example = f" (e.g. {suggestion})" if suggestion.parent.is_dir() else ""
    if also:
        advice = f"or {'train with --output naming' if default else 'pass --output'} a new folder{example}"
    elif default:
        advice = f"move what is there elsewhere, or train with --output naming a new folder{example}"
    else:
        advice = f"the tool replaces its output folder whole, so pass --output a new folder{example}"
    return OutputFolderError(f"{path} {what}{' ' if also else '; '}{advice}")


def _unused(candidate: Path) -> Path:
    for number in range(1, 100):
        path = candidate if number == 1 else candidate.with_name(f"{candidate.name}-{number}")
        if not os.path.lexists(path):
            return path
    return candidate


def _first_non_folder(path: Path) -> Path:
    for parent in reversed(path.parents):
        if os.path.lexists(parent) and not parent.is_dir():
            return parent
    return path.parent


# ---------------------------------------------------------------------------------- the lock

@contextlib.contextmanager
def claim(target: str | Path, log: Callable[[str], None] | None = None, default: bool = False,
          replace_whole: bool = True) -> Iterator[Path]:
    """Check ``target``, take its lock, tidy what killed saves left beside it; hold until the end.

    Re-entrant within one process: a save inside a training run that holds the claim passes
    straight through (after checking the folder again).

    Args:
        target: the bundle folder about to be written.
        log: receives a line for each leftover put back or removed.
        default, replace_whole: as for ``check_output_folder``.

    Yields:
        ``target``, resolved.

    Raises:
        OutputFolderError: the folder is not the tool's to replace, another process is writing
            it (the message names that process), or its parent cannot be written.
    """
    target = resolve(target)
    check_output_folder(target, default, replace_whole)
    lock_path = lock_file(target)
    if str(lock_path) in _held:
        _held[str(lock_path)][1] += 1
        try:
            yield target
        finally:
            _held[str(lock_path)][1] -= 1
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor = _acquire(lock_path, LOCK_WAIT_SECONDS)
    except OSError as error:
        raise OutputFolderError(f"cannot write in {target.parent} ({write_failure(error)}); pass --output a "
                                "folder you can write to") from None
    if descriptor is None:
        raise OutputFolderError(f"{target} is being written by another run ({_holder(lock_path)}); wait for it "
                                "to finish or stop it, or pass another --output")
    _held[str(lock_path)] = [descriptor, 1]
    try:
        for line in tidy_leftovers(target):
            if log is not None:
                log(line)
        check_output_folder(target, default, replace_whole)  # what was put back, or what appeared while unlocked
        yield target
    finally:
        del _held[str(lock_path)]
        _release(lock_path, descriptor)


def lock_file(target: Path) -> Path:
    """``.NAME.lock`` beside the folder ``NAME``."""
    return target.parent / f".{target.name}{LOCK_SUFFIX}"


def _acquire(lock_path: Path, wait: float) -> int | None:
    """A descriptor holding ``lock_path``'s lock (the holder written in), or None if still busy after ``wait`` s."""
    deadline = time.monotonic() + wait
    while True:
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)
            continue
        except BaseException:
            os.close(descriptor)
            raise
        # The last holder removes the file when done: if it did so between our open and our lock,
        # we hold a lock on a file nobody else can find, so take the one now at the path.
        try:
            current = os.stat(lock_path)
            opened = os.fstat(descriptor)
            if (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino):
                with contextlib.suppress(OSError):  # a nicety for the busy message; the lock is what counts
                    _write_holder(descriptor)
                return descriptor
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(descriptor)
            raise
        os.close(descriptor)


def _write_holder(descriptor: int) -> None:
    holder = {"pid": os.getpid(), "started": datetime.now().isoformat(sep=" ", timespec="seconds"),
              "command": shlex.join(sys.argv) or "python"}
    data = json.dumps(holder).encode("utf-8", "backslashreplace")
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, data, 0)


def _holder(lock_path: Path) -> str:
    """``pid N, started T: COMMAND`` from the lock file, or a vaguer phrase when unreadable."""
    try:
        holder = read_json_file(lock_path, MAX_LOCK_FILE_BYTES)
        return f"pid {int(holder['pid'])}, started {holder['started']}: {holder['command']}"
    except (InputFileError, ValueError, KeyError, TypeError):
        return f"its lock file {lock_path} does not say which"


def _release(lock_path: Path, descriptor: int) -> None:
    try:
        os.unlink(lock_path)  # while still locked, so no one else is using this file yet
    except OSError:
        pass
    os.close(descriptor)


# ---------------------------------------------------------------------------------- leftovers

def leftovers(target: Path) -> list[Path]:
    """The ``.NAME.new-*`` and ``.NAME.old-*`` folders killed saves left beside ``target``."""
    pattern = re.compile(re.escape(f".{target.name}") + "(" + re.escape(STAGING_INFIX) + "|"
                         + re.escape(BACKUP_INFIX) + ")" + _LEFTOVER_TAIL)
    try:
        names = os.listdir(target.parent)
    except OSError:
        return []
    return sorted(target.parent / name for name in names if pattern.fullmatch(name))


def tidy_leftovers(target: str | Path) -> list[str]:
    """Undo or delete what killed saves left beside ``target``. Only call it holding the lock.

    Returns:
        One line per thing done, for the log.
    """
    target = resolve(target)
    notes = []
    if _put_back_moved_bundle(target):
        notes.append(f"put back the model bundle {target} that a killed save had moved aside")
    found = leftovers(target)
    for leftover in found:
        stranded = leftover / CHECKPOINT_DIR
        if stranded.is_dir() and not os.path.lexists(target / CHECKPOINT_DIR):
            target.mkdir(exist_ok=True)
            os.rename(stranded, target / CHECKPOINT_DIR)
            notes.append(f"moved the training checkpoint a killed save had left in {leftover} back into {target}")
        shutil.rmtree(leftover, ignore_errors=True)
    removed = [leftover for leftover in found if not os.path.lexists(leftover)]
    if removed:
        notes.append(f"removed {len(removed)} unfinished save folder(s) a killed run left beside {target}")
    return notes


def _put_back_moved_bundle(target: Path) -> bool:
    """When ``target`` is missing, rename the newest ``.NAME.old-*`` back to it."""
    if os.path.lexists(target):
        return False
    moved = [path for path in leftovers(target)
             if path.name.startswith(f".{target.name}{BACKUP_INFIX}") and path.is_dir()]
    if not moved:
        return False
    os.rename(max(moved, key=lambda path: path.stat().st_mtime), target)
    return True


def recover_moved_bundle(target: str | Path) -> None:
    """For readers: put back a bundle a killed save moved aside, unless a writer is at work.

    Costs one ``lstat`` when ``target`` exists (always, but on systems without an atomic exchange
    after a kill at the wrong moment, or after a kill in a version of this tool that had none).
    """
    target = resolve(target)
    if os.path.lexists(target) or not any(p.name.startswith(f".{target.name}{BACKUP_INFIX}")
                                          for p in leftovers(target)):
        return
    lock_path = lock_file(target)
    if str(lock_path) in _held:  # this process is the writer
        _put_back_moved_bundle(target)
        return
    try:
        descriptor = _acquire(lock_path, wait=0)
    except OSError:
        return  # a folder we cannot write in: leave it as it is
    if descriptor is None:
        return  # a live writer is between its renames; it finishes the swap itself
    try:
        _put_back_moved_bundle(target)
    except OSError:
        pass
    finally:
        _release(lock_path, descriptor)


def recover_moved_bundles(folder: str | Path) -> None:
    """``recover_moved_bundle`` for every bundle of ``folder`` that a killed save moved aside."""
    folder = Path(folder)
    try:
        names = os.listdir(folder)
    except OSError:
        return
    pattern = re.compile(r"\.(.+)" + re.escape(BACKUP_INFIX) + _LEFTOVER_TAIL)
    for name in names:
        match = pattern.fullmatch(name)
        if match and not os.path.lexists(folder / match.group(1)):
            recover_moved_bundle(folder / match.group(1))


def write_failure(error: OSError) -> str:
    """Why a write failed, in a few words (``the disk is full`` for ENOSPC and quotas)."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full"
    return error.strerror or str(error)


__all__ = [
    "OutputFolderError", "check_output_folder", "claim", "is_shipped_bundle", "is_this_tools_bundle",
    "leftovers", "lock_file", "recover_moved_bundle", "recover_moved_bundles", "resolve", "tidy_leftovers",
    "write_failure",
]
