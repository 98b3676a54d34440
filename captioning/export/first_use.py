"""Make a bundle's export the first time it is used without one, then keep it.

The export goes into the bundle (``<bundle>/exported``): written in a temp folder beside it
(``.exported.new-*``), then renamed into place (an older, stale export is swapped out in one step and
deleted), all under the bundle's lock (``output_folder.claim``), so the bundle's own files are never
touched and a kill leaves at worst a hidden temp folder, removed next time. When the bundle folder
cannot be written (a read-only install, a folder of someone else's), the export goes to the cache
(``bundles.exported.cache_export_folder``) and ``log`` says so.

TensorFlow is imported only when an export has to be made (``before_tensorflow`` runs first).
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from captioning.bundles import layout
from captioning.bundles.exported import (
    ExportLookup,
    bundle_export_folder,
    cache_export_folder,
    find_export,
    source_digest,
)
from captioning.bundles.schema import BundleConfig
from captioning.errors import ExportError
from captioning.storage import atomic
from captioning.storage.output_folder import OutputFolderError, claim, write_failure

STAGING_INFIX, OLD_INFIX = layout.STAGING_INFIX, layout.BACKUP_INFIX
# Errors that mean "this folder is not ours to write": the export then goes to the cache.
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def ensure_export(bundle_path: str | Path, bundle_config: BundleConfig, log: Callable[[str], None] | None = None,
                  before_tensorflow: Callable[[], object] | None = None) -> Path:
    """The bundle's usable export folder, made now when there is none (or only a stale one).

    Args:
        bundle_path: the bundle folder.
        bundle_config: its config.json.
        log: receives what is happening (making the export takes TensorFlow and about a minute).
        before_tensorflow: called once before TensorFlow is imported (the CLI's quiet import).

    Returns:
        The export folder: in the bundle, or in the cache.

    Raises:
        ExportError: the export cannot be made or written (one line).
        BundleError, EncoderError: the bundle itself cannot be loaded.
    """
    bundle_path = Path(bundle_path)
    try:
        lookup = find_export(bundle_path, bundle_config)
    except OSError as error:
        raise ExportError(f"{bundle_path}: cannot read its weights ({write_failure(error)})") from None
    if lookup.folder is not None:
        return lookup.folder
    return make_export(bundle_path, bundle_config, lookup, log, before_tensorflow)


def make_export(bundle_path: Path, bundle_config: BundleConfig, lookup: ExportLookup,
                log: Callable[[str], None] | None = None,
                before_tensorflow: Callable[[], object] | None = None) -> Path:
    """Make the export (see ``ensure_export``), in the bundle or else in the cache."""
    say = log or (lambda line: None)
    own = bundle_export_folder(bundle_path)
    why = "" if lookup.reason == "no export" else f" (the one there is not usable: {lookup.reason})"
    say(f"Exporting {bundle_path} for fast captioning without TensorFlow{why}; once, about a minute...")
    if before_tensorflow is not None:
        before_tensorflow()
    from captioning.bundles import store
    from captioning.encoders import build_bundle_encoder

    loaded = store.load_bundle(bundle_path)
    encoders = [build_bundle_encoder(spec, bundle_path) for spec in loaded.config.encoders]

    def write(target: Path) -> Path:
        from captioning.export.writer import write_export

        return write_in_place(target, lambda staging: write_export(staging, loaded.config, loaded.members, encoders,
                                                                   lookup.digest, log))

    try:
        with claim(bundle_path, replace_whole=False):  # adds exported/, replaces nothing of the bundle
            _tidy(own)
            return write(own)
    except OutputFolderError:
        pass  # the folder (or its parent, where the lock lives) is not ours to write
    except OSError as error:
        if error.errno not in NOT_WRITABLE:
            raise ExportError(f"cannot write the exported form of {bundle_path} ({write_failure(error)}); "
                              "free some space or pass --model a bundle you can write") from None
    cached = cache_export_folder(lookup.digest)
    say(f"note: {bundle_path} cannot be written; keeping its exported form in {cached}")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        return write(cached)
    except OSError as error:
        raise ExportError(f"cannot write the exported form of {bundle_path} in {cached.parent} "
                          f"({write_failure(error)}); set CAPTIONING_DATA_DIR to a writable folder") from None


def write_in_place(target: Path, fill: Callable[[Path], object]) -> Path:
    """Fill a temp folder beside ``target``, then put it at ``target`` (replacing what was there).

    At every instant ``target`` is absent, the old folder or the complete new one; a failure (or
    Ctrl-C) removes the temp folder and leaves ``target`` as it was.

    Raises:
        OSError: the folder cannot be written; whatever ``fill`` raises.
    """
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}{STAGING_INFIX}", dir=target.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; the export is part of an ordinary folder
        fill(staging)
        _put_in_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _put_in_place(staging: Path, target: Path) -> None:
    if not os.path.lexists(target):
        try:
            os.rename(staging, target)
            return
        except OSError as error:  # another process put one there meanwhile: replace it below
            if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
    if atomic.exchange(staging, target):
        shutil.rmtree(staging, ignore_errors=True)  # now the old export
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}{OLD_INFIX}", dir=target.parent))
    old.rmdir()
    os.rename(target, old)
    os.rename(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def _tidy(target: Path) -> None:
    """Remove what killed exports left beside ``target`` (call only while holding the bundle's lock)."""
    for prefix in (f".{target.name}{STAGING_INFIX}", f".{target.name}{OLD_INFIX}"):
        for leftover in target.parent.glob(f"{prefix}*"):
            shutil.rmtree(leftover, ignore_errors=True)


__all__ = ["ensure_export", "make_export", "source_digest", "write_in_place"]
