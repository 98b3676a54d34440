"""What the user hands ``caption`` and the menu: files and folders in, images and PNG names out.

``expand_paths`` turns paths into the images to caption (a folder searched recursively), keeping a
bad path as one failed entry; ``gather_inputs`` does the same for ``caption`` and the menu, leaving
out the tool's own earlier output. ``plan_outputs`` says where each captioned image's annotated PNG
goes, the same way for the ``caption`` command and the menu, without ever writing over a file the
tool did not draw itself (an input photo least of all).
"""

from __future__ import annotations

import itertools
import os
import stat
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from captioning import config
from captioning.data.images import find_images
from captioning.errors import CaptioningError
from captioning.storage.output_files import (
    OutputFileError,
    check_can_create_in,
    check_file_target,
    check_folder_target,
)
from captioning.storage.safe_text import escape


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


@dataclass(frozen=True)
class Inputs:
    """What ``gather_inputs`` found: the entries to caption, and notes on what it left out."""

    entries: list[tuple[Path, str | None]]
    notes: list[str] = field(default_factory=list)


def gather_inputs(paths: Sequence[str | Path], output_dir: str | Path | None) -> Inputs:
    """``expand_paths`` for ``caption`` and the menu: the tool's own output is not captioned again.

    Inside a folder being searched, the output folder (when it lies inside that folder) is left
    out whole, and so is every PNG the tool drew (``render.tool_png``: an earlier
    ``captioned_image.png``, a PNG written into the searched folder itself). A file named on its
    own is always captioned.

    Args:
        paths: files and/or folders, as the user gave them.
        output_dir: the folder the annotated PNGs go to, or None.

    Returns:
        The entries, and one note per kind of thing left out (none when nothing was).
    """
    from captioning.render.tool_png import is_tool_png

    out_real = os.path.realpath(output_dir) if output_dir is not None else None
    in_output_folder: list[Path] = []
    drawn: list[Path] = []
    entries: list[tuple[Path, str | None]] = []
    for raw in paths:
        found = expand_paths([raw])
        if not Path(raw).is_dir():
            entries.extend(found)
            continue
        root = os.path.realpath(raw)
        kept = []
        for image, error in found:
            real = os.path.join(root, os.path.relpath(image, raw)) if error is None else ""
            if error is None and out_real is not None and out_real != root and real.startswith(out_real + os.sep):
                in_output_folder.append(image)
            elif error is None and image.suffix.lower() == ".png" and is_tool_png(image):
                drawn.append(image)
            else:
                kept.append((image, error))
        if not kept and found:  # everything there was the tool's own output
            extensions = ", ".join(config.IMAGE_EXTENSIONS)
            kept = [(Path(raw), f"{raw}: no images in this folder but the tool's own output (looked "
                                f"recursively for {extensions})")]
        entries.extend(kept)
    notes = []
    if in_output_folder:
        notes.append(f"note: left out {_count(in_output_folder, 'image')} in {output_dir}/, the output folder "
                     "(name it on its own to caption them)")
    if drawn:
        notes.append(f"note: left out {_count(drawn, 'image')} this tool drew ({_some(drawn)}); name one on its "
                     "own to caption it")
    return Inputs(entries, notes)


@dataclass(frozen=True)
class OutputPlan:
    """Where each captioned image's PNGs go, by entry index, chosen before any captioning.

    Attributes:
        pngs: the annotated PNG of each usable entry.
        attention_maps: its attention map, when asked for (beside its PNG, ``<name>_attention.png``).
        replaces: the targets that hold this tool's own earlier output, replaced in place; every
            other target must still be free when written (``write_captioned_image(replace=False)``).
        notes: lines saying which names were taken by files that are not the tool's.
    """

    pngs: dict[int, Path] = field(default_factory=dict)
    attention_maps: dict[int, Path] = field(default_factory=dict)
    replaces: frozenset[Path] = frozenset()
    notes: list[str] = field(default_factory=list)


def plan_outputs(entries: Sequence[tuple[Path, str | None]], single: bool, output: str | Path | None = None,
                 output_dir: str | Path = config.DEFAULT_CAPTION_FOLDER, attention_maps: bool = False,
                 default_output: str | Path = config.DEFAULT_CAPTION_PNG) -> OutputPlan:
    """Choose every output name before captioning, writing over nothing of the user's.

    A target may be written when nothing is there, or when it is a PNG this tool drew
    (``render.tool_png``) and not one of the images being captioned. Otherwise a default name gives
    way to the next free ``<stem>-2.png``, ``<stem>-3.png``... (said in ``notes``), and a name the user
    gave with ``--output`` is refused.

    Args:
        entries: ``expand_paths``/``gather_inputs`` entries; those with an error get no PNG.
        single: one image file was named: its PNG is ``output`` (or ``default_output``).
        output: the single image's PNG as the user named it, or None.
        output_dir: otherwise, the folder of one PNG per image, named after the image.
        attention_maps: also plan ``<name>_attention.png`` beside each PNG.
        default_output: the single image's PNG when ``output`` is None.

    Returns:
        The plan.

    Raises:
        OutputFileError: the folder or file cannot be written (a file where a folder is wanted, a
            path under a file, no permission), or ``--output`` names a file of the user's.
    """
    usable = [index for index, (_, error) in enumerate(entries) if error is None]
    if not usable:
        return OutputPlan()
    checker = _Checker([entries[index][0] for index in usable])
    if single:
        target = Path(output if output is not None else default_output)
        if output is not None:
            check_file_target(target, "--output")
        else:
            check_can_create_in(target.parent, "", target)
        return checker.single(usable[0], target, explicit=output is not None, attention=attention_maps)
    check_folder_target(output_dir, "--output-dir")
    return checker.folder(usable, [entries[index][0] for index in usable], Path(output_dir), attention_maps)


class _Checker:
    """Decides which names are free, remembering the tool's own files (replaced) and the user's
    (left alone, and named in a note)."""

    def __init__(self, inputs: Sequence[Path]):
        self.inputs = {_identity(path) for path in inputs} - {None}
        self.replaces: set[Path] = set()
        self.passed_over: set[Path] = set()  # files of the user's whose names gave way

    def free(self, path: Path) -> bool:
        """Nothing at ``path``, or a PNG this tool drew that is not being captioned now."""
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        if stat.S_ISREG(info.st_mode) and (info.st_dev, info.st_ino) not in self.inputs:
            from captioning.render.tool_png import is_tool_png

            if is_tool_png(path):
                self.replaces.add(path)
                return True
        self.passed_over.add(path)
        return False

    def first_free(self, names: Callable[[int], list[Path]], taken: Collection[str] = ()) -> list[Path]:
        """``names(n)`` for the first n whose names are all free and none taken by this run."""
        for number in itertools.count(1):
            candidates = names(number)
            if {path.name.lower() for path in candidates}.isdisjoint(taken) and all(map(self.free, candidates)):
                return candidates
        raise AssertionError("unreachable")  # itertools.count never ends

    def single(self, index: int, target: Path, explicit: bool, attention: bool) -> OutputPlan:
        def names(number: int) -> list[Path]:
            base = target if number == 1 else target.with_name(f"{target.stem}-{number}{target.suffix}")
            return [base, _attention_name(base)] if attention else [base]

        if explicit:
            for path in names(1):
                if not self.free(path):
                    raise OutputFileError(f"--output {escape(path)} {self._why(path)}; move it or pass "
                                          "--output a new name")
        return self._plan({index: self.first_free(names)}, target.parent)

    def folder(self, indexes: Sequence[int], paths: Sequence[Path], folder: Path, attention: bool) -> OutputPlan:
        """``<stem>.png`` per image in ``folder``; a name taken by an earlier image of this run
        (case-insensitively, for macOS and Windows disks) or by a file of the user's gives way to
        ``<stem>-2.png``, ``<stem>-3.png``..."""
        taken: set[str] = set()
        chosen = {}
        for index, path in zip(indexes, paths, strict=True):
            stem = path.stem or "image"

            def names(number: int, stem: str = stem) -> list[Path]:
                base = folder / (f"{stem}.png" if number == 1 else f"{stem}-{number}.png")
                return [base, _attention_name(base)] if attention else [base]

            chosen[index] = self.first_free(names, taken)
            taken.update(target.name.lower() for target in chosen[index])
        return self._plan(chosen, folder)

    def _why(self, path: Path) -> str:
        if _identity(path) in self.inputs:
            return "is one of the images being captioned"
        return "already exists and is not an image this tool drew"

    def _plan(self, chosen: dict[int, list[Path]], folder: Path) -> OutputPlan:
        passed = sorted(self.passed_over)
        notes = []
        if passed:
            one = len(passed) == 1
            notes.append(f"note: {_count(passed, 'file')} in {escape(folder)}/ {'is' if one else 'are'} not this "
                         f"tool's ({_some(passed)}): left alone, and the new PNGs take free names (<name>-2.png, ...)")
        written = {path for paths in chosen.values() for path in paths}
        return OutputPlan(pngs={index: paths[0] for index, paths in chosen.items()},
                          attention_maps={index: paths[1] for index, paths in chosen.items() if len(paths) > 1},
                          replaces=frozenset(self.replaces & written), notes=notes)


def _attention_name(png: Path) -> Path:
    return png.with_name(f"{png.stem}_attention.png")


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


def _count(items: Sequence, noun: str) -> str:
    return f"{len(items)} {noun}{'s' if len(items) != 1 else ''}"


def _some(paths: Sequence[Path], shown: int = 3) -> str:
    names = ", ".join(escape(path.name) for path in paths[:shown])
    return names + (", ..." if len(paths) > shown else "")


__all__ = ["Inputs", "OutputPlan", "expand_paths", "gather_inputs", "names_one_image", "plan_outputs"]
