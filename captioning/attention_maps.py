"""Where an attention decoder looked for each word: a grid of heat maps over the photo.

The caption is decoded as usual (same beam as the printed caption); the chosen word sequence is then
re-run one step at a time with ``step_with_attention``, teacher-forced, to collect the attention
weights that produced each word. That is exact for any search and needs nothing from the search.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from captioning import config
from captioning.errors import BundleError, CaptioningError, ImageError
from captioning.storage.atomic import atomic_output

START_ID = 2  # text.START
COLUMNS = 5
PANEL_INCHES = 2.4
DISPLAY_SIZE = 320  # longest side of the photo in a panel; enough to read, small PNG


def attention_for_tokens(step_decoder, features: np.ndarray, token_ids: Sequence[int]) -> np.ndarray:
    """Attention weights behind each word of a given caption, for one image.

    Args:
        step_decoder: an attention step decoder (``initial_state``, ``step_with_attention``).
        features: one image's features with a batch axis of 1, e.g. ``(1, 9, 9, C)``.
        token_ids: the caption's word ids (no START/END), e.g. from ``beam_search``.

    Returns:
        ``(len(token_ids), P)`` float32; row ``t`` is the attention used while predicting word ``t``.
    """
    if not hasattr(step_decoder, "step_with_attention"):
        raise BundleError("--attention-map needs a model trained with --decoder attention; "
                              "this model has no attention")
    state = step_decoder.initial_state(features)
    previous = np.array([START_ID], dtype=np.int32)
    rows = []
    for token in token_ids:
        _, state, alpha = step_decoder.step_with_attention(previous, state)
        rows.append(alpha[0])
        previous = np.array([token], dtype=np.int32)
    pixels = int(np.asarray(state[0]).shape[1])
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), pixels)


def caption_with_attention(step_decoder, vocab, features: np.ndarray, max_length: int,
                           beam_size: int = config.DEFAULT_BEAM_SIZE) -> tuple[list[str], np.ndarray]:
    """Caption one image and return its words with the attention behind each.

    Args:
        step_decoder: an attention step decoder.
        vocab: the bundle's ``Vocabulary`` (``words`` list).
        features: ``(1, g, g, C)`` features of one image.
        max_length: caption length with START and END (the bundle's).
        beam_size: the beam the printed caption used (1 = greedy).

    Returns:
        ``(words, alphas (len(words), P))``.
    """
    from captioning.decoding import beam_search, greedy_search

    if beam_size <= 1:
        token_ids = greedy_search(step_decoder, features, max_length)[0]
    else:
        token_ids = beam_search(step_decoder, features, beam_size, max_length)[0]
    words = [vocab.words[i] for i in token_ids]
    return words, attention_for_tokens(step_decoder, features, token_ids)


def write_attention_map(image_path: str | Path, words: Sequence[str], alphas: np.ndarray,
                        output_png: str | Path) -> Path:
    """Draw the photo once per word with that word's attention as a heat map over it.

    Args:
        image_path: the captioned photo.
        words: the generated words, one panel each (titled with the word).
        alphas: ``(len(words), P)`` attention weights over a square grid (P = 49 for 7x7, 81 for 9x9).
        output_png: where to write the PNG (written atomically).

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
    photo = _load_photo(Path(image_path))
    figure = _draw_panels(photo, words, alphas.reshape(-1, side, side))
    output_png = Path(output_png)
    try:
        output_png.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(output_png, suffix=".png") as temp:
            figure.savefig(temp, format="png", dpi=100)
    except OSError as error:
        raise CaptioningError(f"cannot write {output_png}: {error.strerror or error}; "
                              "choose a writable output folder") from None
    return output_png


def _load_photo(path: Path) -> np.ndarray:
    """The photo upright (EXIF), RGB, longest side at most ``DISPLAY_SIZE``: ``(H, W, 3)`` uint8."""
    from captioning.errors import InputFileError
    from captioning.storage.regular_files import open_regular_file

    try:
        with open_regular_file(path) as handle, Image.open(handle) as image:  # never blocks on a FIFO
            image = ImageOps.exif_transpose(image).convert("RGB")
            image.thumbnail((DISPLAY_SIZE, DISPLAY_SIZE), Image.Resampling.BILINEAR)
            return np.asarray(image)
    except InputFileError as error:
        raise ImageError(f"cannot read image {path}: {error.reason}") from None
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise ImageError(f"cannot read image {path}: {error}; give a JPEG/PNG photo") from error


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
    for index, (word, alpha) in enumerate(zip(words, maps)):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.imshow(photo)
        axes.imshow(_heat(alpha, height, width), cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
        axes.set_title(word, fontsize=11)
        axes.set_axis_off()
    figure.tight_layout()
    return figure
