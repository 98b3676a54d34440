"""Small dataset folders written on the fly: real image files and caption files with known problems."""

from __future__ import annotations

from pathlib import Path

from PIL import Image


def make_images(folder: Path, names: list[str]) -> None:
    """Write tiny real JPEG/PNG files (the loader only lists them, but they must be images)."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (index * 40 % 256, 90, 200)).save(folder / name)


def make_flickr_csv(root: Path) -> Path:
    """A small Flickr CSV dataset with one of every problem."""
    make_images(root / "Images", ["a.jpg", "b.jpg", "c.jpg", "lonely.jpg"])
    (root / "Images" / "notes.txt").write_text("not an image")
    (root / "captions.txt").write_text(
        "image,caption\n"
        'a.jpg,"A dog, brown and ""happy"", runs ."\n'
        "a.jpg,A dog runs\n"
        "b.jpg,Two cats sleep .\n"
        "b.jpg,two cats sleep\n"           # duplicate after normalisation
        "b.jpg, . \n"                     # empty: no words
        "c.jpg,A red car\n"
        "missing.jpg,Nobody sees this\n"  # image file absent
        "justonefield\n"                  # malformed row
        "\n",
        encoding="utf-8",
    )
    return root
