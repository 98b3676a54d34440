"""Draw a caption beneath its photo and save the result as a PNG, with Matplotlib's Agg renderer.

The figure is built on an explicit ``FigureCanvasAgg`` rather than through ``pyplot``: no display,
no global backend switch, no figure kept alive in pyplot's registry between images. Text uses
Matplotlib's bundled DejaVu Sans, which covers Latin, Greek and Cyrillic, so non-ASCII captions
render without any system font.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from captioning.errors import CaptioningError
from captioning.render.photo import load_photo
from captioning.render.tool_png import CAPTIONED, png_metadata
from captioning.storage.atomic import atomic_output

# The photo is shown at its own pixel size, scaled into this range so thumbnails stay legible and
# camera-sized photos do not make 50 MB PNGs.
MIN_WIDTH_PX, MAX_SIDE_PX = 480, 1024
DPI = 100
FONT_SIZE_PT = 14
LINE_HEIGHT = 1.5  # in units of the font size
PADDING_PX = 16
# DejaVu Sans averages a little over half an em per character; used to pick the wrap width.
CHAR_WIDTH_EM = 0.55


def wrap_caption(caption: str, width_px: int, font_size_pt: float = FONT_SIZE_PT) -> list[str]:
    """Split a caption into lines that fit ``width_px`` at the given font size.

    Args:
        caption: the text (any Unicode).
        width_px: usable width in pixels.
        font_size_pt: font size in points (at ``DPI``).

    Returns:
        At least one line (an empty caption gives one empty line).
    """
    char_px = font_size_pt * DPI / 72 * CHAR_WIDTH_EM
    columns = max(10, int(width_px / char_px))
    return textwrap.wrap(caption, width=columns, break_long_words=True) or [""]


def display_image(image_path: str | Path) -> np.ndarray:
    """The photo as the annotated PNG shows it: upright, RGB, its width between ``MIN_WIDTH_PX`` and
    its longest side ``MAX_SIDE_PX``, ``(height, width, 3)`` uint8.

    Raises:
        ImageError: the file cannot be read as an image.
    """
    return load_photo(image_path, MAX_SIDE_PX, MIN_WIDTH_PX)


def build_caption_figure(photo: np.ndarray, caption: str):
    """A figure with the photo at its pixel size and the wrapped caption in a band beneath it.

    Args:
        photo: ``(height, width, 3)`` uint8, as from ``display_image``.
        caption: the text to draw.

    Returns:
        A ``matplotlib.figure.Figure`` attached to an Agg canvas; its caption is the one text
        artist of the figure.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    height, width = photo.shape[:2]
    lines = wrap_caption(caption, width - 2 * PADDING_PX)
    line_px = FONT_SIZE_PT * DPI / 72 * LINE_HEIGHT
    band = int(np.ceil(len(lines) * line_px + 2 * PADDING_PX))  # caption area height in pixels
    total = height + band
    figure = Figure(figsize=(width / DPI, total / DPI), dpi=DPI, facecolor="white")
    FigureCanvasAgg(figure)
    # The photo fills the top of the figure exactly, one figure pixel per photo pixel.
    axes = figure.add_axes((0.0, band / total, 1.0, height / total))
    axes.imshow(photo, interpolation="nearest", aspect="auto")
    axes.set_axis_off()
    figure.text(0.5, (band / 2) / total, "\n".join(lines), ha="center", va="center",
                fontsize=FONT_SIZE_PT, family="DejaVu Sans", color="black", linespacing=LINE_HEIGHT)
    return figure


def write_captioned_image(image_path: str | Path, caption: str, output_png: str | Path,
                          replace: bool = True) -> Path:
    """Write ``output_png``: the photo with its caption beneath it (atomic: temp file + rename).

    The PNG carries the tool's mark (``render.tool_png``), so later runs know it as theirs.

    Args:
        image_path: the captioned image file.
        caption: its caption.
        output_png: where to write; parent folders are created.
        replace: False writes only if nothing is at ``output_png`` (a file that appeared there
            since the name was chosen is left alone, and this raises).

    Returns:
        The written path.

    Raises:
        ImageError: the image cannot be read.
        CaptioningError: the PNG cannot be written (folder not writable, disk full).
    """
    output_png = Path(output_png)
    figure = build_caption_figure(display_image(image_path), caption)
    try:
        output_png.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(output_png, suffix=".png", replace=replace) as temp:
            figure.savefig(temp, format="png", dpi=DPI, facecolor="white", metadata=png_metadata(CAPTIONED))
    except FileExistsError:
        raise CaptioningError(f"cannot write {output_png}: a file appeared there while captioning; "
                              "it was left alone, caption again to use another name") from None
    except OSError as error:
        raise CaptioningError(f"cannot write {output_png}: {error.strerror or error}; "
                              "choose a writable --output/--output-dir") from None
    return output_png
