"""What the user hands ``caption`` and the menu: files and folders in, images and PNG names out.

``expand_paths`` turns paths into the images to caption (a folder searched recursively), keeping a
bad path as one failed entry; ``png_targets`` says where each captioned image's annotated PNG goes,
the same way for the ``caption`` command and the menu.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from captioning import config
from captioning.data.images import find_images
from captioning.errors import CaptioningError


class _Result(Protocol):
    """A captioning result (``CaptionResult``): the image, and whether it was captioned."""

    @property
    def path(self) -> Path: ...

    @property
    def ok(self) -> bool: ...


def expand_paths(paths: Sequence[str | Path]) -> list[tuple[Path, str | None]]:
    """Turn the user's files and folders into ``(image path, error or None)`` in input order.

    Args:
        paths: files and/or folders.

    Returns:
        A folder contributes its images (recursively, sorted); a missing path or a folder without
        images contributes one entry with the error. Files are kept whatever their extension, so
        a wrong one is reported by the loader rather than silently skipped.
    """
    entries: list[tuple[Path, str | None]] = []
    for raw in paths:
        path = Path(raw)
        try:
            found = find_images(path)
        except CaptioningError as error:
            entries.append((path, str(error)))
            continue
        if not found:
            extensions = ", ".join(config.IMAGE_EXTENSIONS)
            entries.append((path, f"{path}: no images in this folder (looked recursively for {extensions})"))
        entries.extend((image, None) for image in found)
    return entries


def names_one_image(paths: Sequence[str | Path], entries: Sequence[tuple[Path, str | None]]) -> bool:
    """Whether the user named one image file (not a folder that happens to hold one image)."""
    return len(paths) == 1 and len(entries) == 1 and not Path(paths[0]).is_dir()


def png_targets(results: Sequence[_Result], single: bool, output: str | Path | None = None,
                output_dir: str | Path = config.DEFAULT_CAPTION_FOLDER) -> dict[int, Path]:
    """Where each captioned image's annotated PNG goes, by result index (failed results get none).

    Args:
        results: the captioning results, in input order.
        single: one image file was named: its PNG is ``output``.
        output: the single image's PNG (default ``config.DEFAULT_CAPTION_PNG``).
        output_dir: otherwise, the folder of one PNG per image, named after the image.

    Returns:
        ``{result index: PNG path}``.
    """
    if single:
        return {0: Path(output or config.DEFAULT_CAPTION_PNG)} if results and results[0].ok else {}
    names = unique_png_names([result.path for result in results])
    return {index: Path(output_dir) / names[index] for index, result in enumerate(results) if result.ok}


def unique_png_names(paths: Sequence[Path]) -> list[str]:
    """``<stem>.png`` per image; images sharing a stem get ``<stem>-2.png``, ``<stem>-3.png``...

    Args:
        paths: image paths in input order.

    Returns:
        One file name per path, all distinct (case-insensitively, for macOS and Windows disks).
    """
    taken: set[str] = set()
    names = []
    for path in paths:
        stem, number = path.stem or "image", 1
        name = f"{stem}.png"
        while name.lower() in taken:
            number += 1
            name = f"{stem}-{number}.png"
        taken.add(name.lower())
        names.append(name)
    return names


__all__ = ["expand_paths", "names_one_image", "png_targets", "unique_png_names"]
