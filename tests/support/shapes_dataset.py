"""A synthetic captioned dataset whose captions follow from what is drawn: coloured shapes.

Each image shows one shape of one colour on a plain background, at a random place and size;
its captions name exactly those three things ("a red circle on a white background"). A model that
has learnt anything names unseen images right; one that has not cannot guess above chance
(4 colours x 3 shapes x 3 backgrounds = 36 captions).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (240, 220, 30)}
SHAPES = ("circle", "square", "triangle")
BACKGROUNDS = {"white": (250, 250, 250), "black": (10, 10, 10), "grey": (128, 128, 128)}
IMAGE_SIZE = 96


def caption_for(colour: str, shape: str, background: str) -> list[str]:
    """The two reference captions of an image (both say the same three facts)."""
    return [f"a {colour} {shape} on a {background} background",
            f"a {colour} {shape} in front of a {background} background"]


def draw_shape(colour: str, shape: str, background: str, rng: np.random.Generator) -> Image.Image:
    """One image: the shape somewhere inside, 35-60% of the image wide."""
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUNDS[background])
    size = int(rng.uniform(0.35, 0.6) * IMAGE_SIZE)
    left, top = (int(v) for v in rng.integers(2, IMAGE_SIZE - size - 2, size=2))
    box = (left, top, left + size, top + size)
    draw = ImageDraw.Draw(image)
    if shape == "circle":
        draw.ellipse(box, fill=COLOURS[colour])
    elif shape == "square":
        draw.rectangle(box, fill=COLOURS[colour])
    else:
        height = size * math.sqrt(3) / 2
        draw.polygon([(left, top + height), (left + size, top + height), (left + size / 2, top)],
                     fill=COLOURS[colour])
    return image


def write_shapes_dataset(folder: str | Path, n_images: int, seed: int) -> Path:
    """Write a Flickr-style dataset: ``Images/*.png`` and ``captions.txt`` (CSV ``image,caption``).

    Every combination of colour, shape and background appears about equally often.

    Args:
        folder: Where to write (created).
        n_images: How many images.
        seed: Random seed for the combinations, positions and sizes.

    Returns:
        The dataset folder (``folder``), ready for ``datasets.load_dataset``.
    """
    folder = Path(folder)
    (folder / "Images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    combos = [(c, s, b) for c in COLOURS for s in SHAPES for b in BACKGROUNDS]
    picks = [combos[i % len(combos)] for i in rng.permutation(n_images)]
    with open(folder / "captions.txt", "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["image", "caption"])
        for index, (colour, shape, background) in enumerate(picks):
            name = f"shape_{seed}_{index:04d}.png"
            draw_shape(colour, shape, background, rng).save(folder / "Images" / name)
            for caption in caption_for(colour, shape, background):
                writer.writerow([name, caption])
    return folder
