"""A grid of sample photos, each with the model's caption and a human one beneath it (evaluation).

Fixed geometry in inches, so text never collides with the next row; drawn on Matplotlib's Agg
canvas (no display needed) and written atomically.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from captioning.errors import CaptioningError, ImageError
from captioning.render.photo import load_photo
from captioning.storage import atomic
from captioning.storage.safe_text import escape

GRID_COLUMNS = 4
THUMB_PX = 256
TEXT_COLUMNS = 34  # characters per caption line under a 2.9-inch photo at 9 pt
TEXT_LINES = 3  # per caption, so the model's and the reference's fit the space under the photo


class Sample(Protocol):
    """One photo to draw: its file, the model's caption, the human ones (``evaluate.ImageOutcome``)."""

    @property
    def path(self) -> Path: ...

    @property
    def caption(self) -> str | None: ...

    @property
    def references(self) -> list[str]: ...


def _thumbnail(path: Path) -> np.ndarray:
    """The photo, upright and RGB, fitted into a THUMB_PX square (aspect kept); grey if unreadable."""
    try:
        return load_photo(path, THUMB_PX)
    except ImageError:
        return np.full((THUMB_PX, THUMB_PX, 3), 200, dtype=np.uint8)


def _wrapped(text: str) -> list[str]:
    """At most TEXT_LINES lines of TEXT_COLUMNS characters (an ellipsis marks a cut)."""
    lines = textwrap.wrap(text, TEXT_COLUMNS) or [""]
    if len(lines) > TEXT_LINES:
        lines = lines[:TEXT_LINES]
        lines[-1] = lines[-1][:TEXT_COLUMNS - 1] + "\u2026"
    return lines


def _draw_captions(axes, outcome: Sample, photo_in: float) -> None:
    """The generated caption (bold, blue) and the first reference (black) under a photo."""
    line_step = 9 * 1.25 / 72 / photo_in  # one 9-pt line in axes units
    generated = _wrapped(f"model: {outcome.caption}")
    axes.text(0.0, -0.03, "\n".join(generated), transform=axes.transAxes, fontsize=9, va="top",
              ha="left", color="#1f3f8f", fontweight="bold")
    if outcome.references:
        reference = "\n".join(_wrapped(f"ref: {outcome.references[0]}"))
        axes.text(0.0, -0.03 - line_step * len(generated), reference, transform=axes.transAxes,
                  fontsize=9, va="top", ha="left")


def write_sample_grid(samples: Sequence[Sample], png_path: str | Path, title: str = "") -> Path:
    """Draw sample images with their generated caption and one reference each, as a PNG.

    Args:
        samples: the images to show (e.g. from ``evaluation.report.choose_samples``).
        png_path: the output file (written atomically).
        title: a line above the grid.

    Returns:
        The path written.

    Raises:
        CaptioningError: no samples, or the file cannot be written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not samples:
        raise CaptioningError(f"{png_path}: no captioned images to draw")
    columns = min(GRID_COLUMNS, len(samples))
    rows = -(-len(samples) // columns)
    # Fixed geometry in inches, so text never collides with the next row: name, square photo, text.
    name_h, photo, text_h, cell_w, top = 0.25, 2.9, 1.25, 3.2, 0.5
    cell_h = name_h + photo + text_h
    width, height = cell_w * columns, top + cell_h * rows
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    for index, outcome in enumerate(samples):
        row, column = divmod(index, columns)
        bottom = height - top - row * cell_h - name_h - photo
        axes = figure.add_axes(((column * cell_w + (cell_w - photo) / 2) / width, bottom / height,
                                photo / width, photo / height))
        axes.imshow(_thumbnail(outcome.path))
        axes.set_axis_off()
        axes.set_title(escape(outcome.path.name), fontsize=8, color="0.4")  # names need not be UTF-8
        _draw_captions(axes, outcome, photo)
    if title:
        figure.text(0.5, 1 - 0.2 / height, title, fontsize=11, ha="center", va="top")
    png_path = Path(png_path)
    try:
        with atomic.atomic_output(png_path, suffix=".png") as temp:
            figure.savefig(temp, format="png")
    except OSError as error:
        raise CaptioningError(f"cannot write {png_path}: {error.strerror or error}; check the folder "
                              "exists and is writable") from None
    return png_path


__all__ = ["write_sample_grid"]
