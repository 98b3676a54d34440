"""Where an attention decoder looked for each word: a grid of heat maps over the photo.

The weights come from ``inference.attention_weights``; this module only draws them, one panel per
word, with Matplotlib's Agg canvas (no display, no pyplot state).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from captioning.errors import CaptioningError
from captioning.render.photo import load_photo
from captioning.render.tool_png import ATTENTION_MAP, png_metadata
from captioning.storage.atomic import atomic_output

COLUMNS = 5
PANEL_INCHES = 2.4
DISPLAY_SIZE = 320  # longest side of the photo in a panel; enough to read, small PNG


def write_attention_map(image_path: str | Path, words: Sequence[str], alphas: np.ndarray,
                        output_png: str | Path, replace: bool = True) -> Path:
    """Draw the photo once per word with that word's attention as a heat map over it.

    Args:
        image_path: the captioned photo.
        words: the generated words, one panel each (titled with the word).
        alphas: ``(len(words), P)`` attention weights over a square grid (P = 49 for 7x7, 81 for 9x9).
        output_png: where to write the PNG (written atomically, with the tool's mark).
        replace: False writes only if nothing is at ``output_png`` yet.

    Returns:
        The written path.

    Raises:
        ImageError: the photo cannot be read.
        CaptioningError: the PNG cannot be written (folder not writable, disk full).
    """
    alphas = np.asarray(alphas, dtype=np.float32)
    if alphas.ndim != 2 or alphas.shape[0] != len(words):
        raise ValueError(f"alphas must be (n_words={len(words)}, P), got shape {alphas.shape}")
    side = math.isqrt(alphas.shape[1])
    if side * side != alphas.shape[1]:
        raise ValueError(f"attention grid of {alphas.shape[1]} cells is not square")
    photo = load_photo(image_path, DISPLAY_SIZE)
    figure = _draw_panels(photo, words, alphas.reshape(-1, side, side))
    output_png = Path(output_png)
    try:
        output_png.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(output_png, suffix=".png", replace=replace) as temp:
            figure.savefig(temp, format="png", dpi=100, metadata=png_metadata(ATTENTION_MAP))
    except FileExistsError:
        raise CaptioningError(f"cannot write {output_png}: a file appeared there while captioning; "
                              "it was left alone") from None
    except OSError as error:
        raise CaptioningError(f"cannot write {output_png}: {error.strerror or error}; "
                              "choose a writable output folder") from None
    return output_png


def _heat(alpha: np.ndarray, height: int, width: int) -> np.ndarray:
    """Upsample a ``(side, side)`` map smoothly (bicubic) to the photo, scaled to 0..1 per word.

    Scaling by each word's own maximum shows where that word looked, which a shared scale hides
    when attention is spread out.
    """
    peak = float(alpha.max())
    scaled = alpha / peak if peak > 0 else alpha
    heat = Image.fromarray(scaled.astype(np.float32), mode="F").resize(
        (width, height), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(heat), 0.0, 1.0)


def _draw_panels(photo: np.ndarray, words: Sequence[str], maps: np.ndarray):
    """A Matplotlib figure (no pyplot global state) with one titled panel per word."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    count = max(len(words), 1)
    columns = min(COLUMNS, count)
    rows = math.ceil(count / columns)
    height, width = photo.shape[:2]
    aspect = height / width
    figure = Figure(figsize=(PANEL_INCHES * columns, PANEL_INCHES * aspect * rows + 0.4 * rows))
    FigureCanvasAgg(figure)
    for index, (word, alpha) in enumerate(zip(words, maps, strict=True)):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.imshow(photo)
        axes.imshow(_heat(alpha, height, width), cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
        axes.set_title(word, fontsize=11)
        axes.set_axis_off()
    figure.tight_layout()
    return figure
