"""Atomic file writes: a reader sees the old file or the complete new one, never half of one.

Every writer puts its bytes into a temp file beside the target (same folder, so the same disk),
flushes them to disk, then ``os.replace``s the temp file onto the target. When anything fails
(full disk, Ctrl-C, a writer's exception) the temp file is removed and the target keeps its old
content. Temp files are named ``.<target name>.<random><suffix>``: hidden, and recognisable as
leftovers should the process be killed in between.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

# mkstemp makes files private (0600); what this tool writes is ordinary user data.
FILE_MODE = 0o644


@contextlib.contextmanager
def atomic_output(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """A temp path beside ``path`` that replaces ``path`` when the block succeeds.

    For writers that want a file name (``figure.savefig``, ``np.save``, Keras ``save_weights``)
    or open the file themselves. The folder must exist.

    Args:
        path: the target file.
        suffix: the temp file's ending, for writers that choose the format from the name or
            append their own (``".png"``, ``".npy"``, ``".weights.h5"``); default ``".tmp"``.

    Yields:
        The temp file's path (the file exists, empty).

    Raises:
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
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically.

    Args:
        path: the target file; its folder must exist.
        text: the whole new content.

    Returns:
        ``path`` as a Path.

    Raises:
        OSError: the file cannot be written; ``path`` keeps its old content.
    """
    path = Path(path)
    with atomic_output(path) as temp:
        temp.write_text(text, encoding="utf-8")
    return path


def write_json_atomic(path: str | Path, data: Any, sort_keys: bool = False) -> Path:
    """Write ``data`` as indented UTF-8 JSON (non-ASCII kept as is, trailing newline) atomically.

    Args:
        path: the target file; its folder must exist.
        data: JSON-serialisable value.
        sort_keys: sort object keys (stable files for diffs).

    Returns:
        ``path`` as a Path.

    Raises:
        OSError: the file cannot be written; ``path`` keeps its old content.
        TypeError, ValueError: ``data`` is not JSON-serialisable (nothing is written).
    """
    text = json.dumps(data, indent=2, ensure_ascii=False, sort_keys=sort_keys) + "\n"
    return write_text_atomic(path, text)


def _sync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())
