"""Uploaded photos and the PNGs rendered from them, kept in a private temporary folder for a while.

The folder is made by ``tempfile.mkdtemp`` (mode 0700, a random name, outside the project and
outside anything the server serves). Each upload gets a random id (``secrets.token_urlsafe``) and
its files are named after that id only: a client's file name is shown back to it but never becomes
part of a path. A result is found by its id in this store's table, so a URL can only reach files
the store itself wrote. Results expire after ``ttl_s``; the oldest are dropped earlier when the
folder would grow past ``max_bytes``. ``close`` deletes the folder.
"""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
import threading
import time
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from captioning.errors import CaptioningError

MAX_NAME_CHARS = 200
_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


@dataclass
class StoredUpload:
    """One uploaded photo and what the server made of it.

    Attributes:
        id: random URL-safe id, the only handle on it.
        name: the client's file name, cleaned for display (never used as a path).
        path: the upload's bytes on disk, inside the store's private folder.
        created: ``time.monotonic()`` when stored.
        caption, tokens, score: set once captioned.
    """

    id: str
    name: str
    path: Path
    created: float
    size: int
    caption: str | None = None
    tokens: tuple[int, ...] = ()
    score: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def output(self, kind: str) -> Path:
        """Where this upload's rendered ``kind`` PNG (``captioned`` / ``attention``) lives."""
        return self.path.with_name(f"{self.id}.{kind}.png")


def display_name(raw: str | None, index: int) -> str:
    """A client's file name made safe to show: last path part, no control characters, bounded.

    Args:
        raw: the multipart file name (may be missing, hold a path, or anything at all).
        index: the file's position in the request, for a name when there is none.

    Returns:
        A non-empty single-line name.
    """
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    return name[:MAX_NAME_CHARS] or f"upload-{index + 1}"


class ResultStore:
    """Uploads and rendered PNGs by random id, in a private temporary folder, expiring.

    Args:
        ttl_s: seconds a result stays available.
        max_bytes: most bytes kept on disk; the oldest results go first beyond it.
    """

    def __init__(self, ttl_s: float, max_bytes: int):
        self.ttl_s = float(ttl_s)
        self.max_bytes = int(max_bytes)
        self.folder = Path(tempfile.mkdtemp(prefix="captioning-serve-"))
        self._entries: OrderedDict[str, StoredUpload] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._closed = False

    def add(self, data: bytes, name: str) -> StoredUpload:
        """Store an upload's bytes under a new random id.

        Raises:
            CaptioningError: the store is closed or the bytes cannot be written (disk full).
        """
        upload_id = secrets.token_urlsafe(18)
        path = self.folder / f"{upload_id}.upload"
        entry = StoredUpload(upload_id, name, path, time.monotonic(), len(data))
        with self._lock:
            if self._closed:
                raise CaptioningError("the server is shutting down; try again when it is back")
            self._make_room(len(data))
            self._entries[upload_id] = entry
            self._bytes += len(data)
        try:
            with open(path, "xb") as handle:  # x: never overwrite anything
                handle.write(data)
        except OSError as error:
            self.discard(upload_id)
            raise CaptioningError(f"{name}: the server cannot store the upload "
                                  f"({error.strerror or error}); try again later") from None
        return entry

    def get(self, upload_id: str) -> StoredUpload | None:
        """The stored upload with this id, or None when unknown, malformed or expired."""
        if not _ID_PATTERN.match(upload_id or ""):
            return None
        with self._lock:
            self._expire()
            return self._entries.get(upload_id)

    def grew(self, entry: StoredUpload, size: int) -> None:
        """Count ``size`` more bytes (a rendered PNG) against the budget."""
        with self._lock:
            if entry.id in self._entries:
                entry.size += size
                self._bytes += size

    def discard(self, upload_id: str) -> None:
        """Forget a result and delete its files."""
        with self._lock:
            entry = self._entries.pop(upload_id, None)
            if entry is not None:
                self._bytes -= entry.size
        if entry is not None:
            _delete_files(entry)

    @property
    def stored_bytes(self) -> int:
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def close(self) -> None:
        """Delete every stored file and the folder; later ``add`` calls fail."""
        with self._lock:
            self._closed = True
            self._entries.clear()
            self._bytes = 0
        shutil.rmtree(self.folder, ignore_errors=True)

    # Both below run with self._lock held.

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.ttl_s
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if oldest.created >= cutoff:
                break
            self._drop(oldest)

    def _make_room(self, incoming: int) -> None:
        self._expire()
        while self._entries and self._bytes + incoming > self.max_bytes:
            self._drop(next(iter(self._entries.values())))

    def _drop(self, entry: StoredUpload) -> None:
        del self._entries[entry.id]
        self._bytes -= entry.size
        _delete_files(entry)


def _delete_files(entry: StoredUpload) -> None:
    for path in (entry.path, entry.output("captioned"), entry.output("attention")):
        path.unlink(missing_ok=True)
