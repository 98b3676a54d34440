"""Free-space checks before big writes, and byte counts as people read them.

Bundles, checkpoints and feature caches are written only after checking that the disk has room for
them, so a full disk is one line before anything is written instead of a half-written file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from captioning.errors import CaptioningError

# Room kept free beyond the bytes about to be written (file system blocks, the small files).
SPACE_MARGIN_BYTES = 1 << 20


def ensure_free_space(folder: str | Path, needed_bytes: int, what: str, then: str = "",
                      error: type[CaptioningError] = CaptioningError) -> None:
    """Refuse to start writing ``needed_bytes`` where the disk has less free (plus a margin).

    Args:
        folder: where the bytes go (its nearest existing parent is checked).
        needed_bytes: the size of what is about to be written.
        what: what it is, for the message ("the checkpoint").
        then: what to do after freeing space, appended to the message ("; then ...").
        error: the error class raised (the caller's own: ``OutputFolderError``, ...).

    Raises:
        error: one line with both sizes.
    """
    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    needed = needed_bytes + SPACE_MARGIN_BYTES
    if needed > free:
        raise error(f"not enough disk space for {what} in {folder}: needs about {format_bytes(needed)}, "
                    f"{format_bytes(free)} free; free some space{then}")


def format_bytes(count: int) -> str:
    """A byte count for messages: ``512 B``, ``4.0 MB``, ``1.1 GB`` (powers of 1000)."""
    if count < 1000:
        return f"{count} B"
    size = float(count)
    for unit in ("KB", "MB", "GB", "TB"):
        size /= 1000
        if size < 1000:
            return f"{size:.1f} {unit}"
    return f"{size:.1f} TB"


__all__ = ["SPACE_MARGIN_BYTES", "ensure_free_space", "format_bytes"]
