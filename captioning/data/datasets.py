"""Datasets: where captioned images come from, and the deterministic train/val/test split.

``load_dataset("mini-coco")`` downloads Mini-COCO with kagglehub (reusing its cache);
``load_dataset(PATH)`` reads a local folder in any layout of ``layouts``. Problems in the
data are counted in ``dataset.problems`` and never fatal, unless no captioned image remains.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from captioning import config
from captioning.data.layouts import (
    LAYOUTS_HELP,
    PROBLEM_KINDS,
    DatasetProblems,
    RawCaptions,
    find_layout,
    list_images,
    read_captions,
)
from captioning.data.mini_coco import download_mini_coco
from captioning.data.text import normalize_caption
from captioning.errors import DatasetError

__all__ = [
    "LAYOUTS_HELP", "PROBLEM_KINDS", "CaptionedImage", "Dataset", "DatasetProblems", "DatasetSplit",
    "download_mini_coco", "load_dataset", "split_dataset",
]


@dataclass(frozen=True)
class CaptionedImage:
    """One image and its raw captions.

    Attributes:
        path: Absolute path of the image file.
        captions: Raw captions (not normalised), at least one, no empty or duplicate ones.
        relative_path: POSIX path relative to the dataset root, set by ``load_dataset``; the split
            hashes it so the assignment is the same on any machine. Empty for hand-made images,
            which then split by file name.
    """

    path: Path
    captions: list[str]
    relative_path: str = ""

    @property
    def split_key(self) -> str:
        """The machine-independent name the split hashes."""
        return self.relative_path or self.path.name


@dataclass
class Dataset:
    """A loaded dataset: captioned images sorted by relative path, and what was skipped."""

    root: Path
    layout: str
    images: list[CaptionedImage]
    problems: DatasetProblems = field(default_factory=DatasetProblems)
    name: str = ""
    source: str = ""
    captions_file: Path | None = None
    captions_read: int = 0  # caption entries in the file, before skipping (see ``problems``)
    notes: list[str] = field(default_factory=list)  # what the user should know about the source

    @property
    def key(self) -> str:
        """Stable short id for cache folders: slugified name + 8 hex of sha1(resolved root)."""
        # surrogateescape: a folder name that is not UTF-8 hashes as its bytes (valid names as before).
        digest = hashlib.sha1(str(Path(self.root).resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:8]
        return f"{_slug(self.name or Path(self.root).resolve().name)}-{digest}"

    @property
    def num_captions(self) -> int:
        """Captions over all images."""
        return sum(len(image.captions) for image in self.images)

    def relative(self, path: str | Path) -> str:
        """POSIX path of ``path`` relative to the dataset root (the form caches and splits store).

        Raises:
            ValueError: When ``path`` is not inside the dataset root.
        """
        return Path(path).relative_to(self.root).as_posix()


@dataclass(frozen=True)
class DatasetSplit:
    """Images of each split (disjoint; by image, never by caption)."""

    train: list[CaptionedImage]
    val: list[CaptionedImage]
    test: list[CaptionedImage]


def load_dataset(source: str | Path) -> Dataset:
    """Load captioned images from Mini-COCO (kagglehub) or a local folder.

    Args:
        source: ``"mini-coco"`` (``config.MINI_COCO_SOURCE``) or a dataset folder; the layout is
            recognised in the folder or one level down. (A local folder named ``mini-coco`` is
            reached as ``./mini-coco``.)

    Returns:
        The dataset, images sorted by path relative to its root.

    Raises:
        DatasetError: When the download fails, the folder or its captions file cannot be read, or
            no image with a caption remains.
    """
    notes: list[str] = []
    if str(source) == config.MINI_COCO_SOURCE:
        download = download_mini_coco()
        root, name, source_text = download.path, "mini-coco", config.MINI_COCO_SOURCE
        notes = [download.note] if download.note else []
    else:
        root = Path(source).expanduser()
        if not root.is_dir():
            what = "is a file, not a folder" if root.exists() else "does not exist"
            raise DatasetError(f"dataset folder {root} {what}; pass 'mini-coco' or a folder with "
                               f"{LAYOUTS_HELP}")
        root = root.resolve()
        name, source_text = root.name, str(root)
    found = find_layout(Path(root).resolve())
    problems = DatasetProblems()
    existing = list_images(found.image_dir)
    raw = read_captions(found, existing, problems)
    root = _dataset_root(raw)
    images = _collect(raw, root, existing, problems)
    if not images:
        raise DatasetError(f"{raw.captions_file}: no image with a usable caption "
                           f"({problems.summary()}); check the captions file and the image folder "
                           f"{raw.image_dir}")
    return Dataset(root=root, layout=raw.layout, images=images, problems=problems, name=name,
                   source=source_text, captions_file=raw.captions_file,
                   captions_read=len(raw.pairs), notes=notes)


def _collect(raw: RawCaptions, root: Path, existing: set[str],
             problems: DatasetProblems) -> list[CaptionedImage]:
    """Group pairs by image, dropping (and counting) missing images, empty and duplicate captions."""
    by_image: dict[str, list[str]] = {}
    seen: dict[str, set[str]] = {}
    for name, caption in raw.pairs:
        image = _existing_name(name, raw.image_dir.name, existing)
        if image is None:
            problems.add("missing_image", name)
            continue
        caption = caption.strip()
        words = normalize_caption(caption)
        if not words:
            problems.add("empty_caption", f"{name}: {caption!r}")
            continue
        if words in seen.setdefault(image, set()):
            problems.add("duplicate_caption", f"{name}: {caption!r}")
            continue
        seen[image].add(words)
        by_image.setdefault(image, []).append(caption)
    for name in sorted(existing - by_image.keys()):
        problems.add("image_without_captions", name)
    images = [CaptionedImage(path=raw.image_dir / name, captions=captions,
                             relative_path=(raw.image_dir / name).relative_to(root).as_posix())
              for name, captions in by_image.items()]
    return sorted(images, key=lambda image: image.relative_path)


def _dataset_root(raw: RawCaptions) -> Path:
    """The folder relative paths start from: the one holding both the captions and the images."""
    folder = raw.folder
    # Captions in a sub-folder (annotations/, Flickr8k_text/) beside the image folder: go up.
    while folder != folder.parent and raw.image_dir != folder and folder not in raw.image_dir.parents:
        folder = folder.parent
    return folder


def _existing_name(name: str, image_dir_name: str, existing: set[str]) -> str | None:
    """The image's path relative to the image folder when its file exists, else None."""
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts:
        return None  # never read outside the dataset
    text = posix.as_posix()
    if text in existing:
        return text
    # Some files name images as "Images/x.jpg", relative to the dataset root instead.
    if len(posix.parts) > 1 and posix.parts[0] == image_dir_name:
        inner = PurePosixPath(*posix.parts[1:]).as_posix()
        return inner if inner in existing else None
    return None


def split_dataset(images: Sequence[CaptionedImage], split: config.SplitConfig) -> DatasetSplit:
    """Assign each image (never each caption) to train, val or test.

    Each image's place depends only on ``sha1(f"{seed}:{relative path}")`` mapped to [0, 1):
    below ``test_fraction`` is test, below ``test_fraction + val_fraction`` is val, the rest
    train. So the split is the same on any machine and an image keeps its split when other images
    are added. Small datasets may get an empty val or test split.

    Args:
        images: Captioned images, usually ``dataset.images``.
        split: Seed and fractions.

    Returns:
        The three lists, each in the order of ``images``.

    Raises:
        ValueError: When the fractions are negative or leave nothing for training.
    """
    if split.val_fraction < 0 or split.test_fraction < 0 or split.val_fraction + split.test_fraction >= 1:
        raise ValueError(f"split fractions must be >= 0 and sum below 1, got val={split.val_fraction} "
                         f"test={split.test_fraction}")
    parts: dict[str, list[CaptionedImage]] = {"train": [], "val": [], "test": []}
    for image in images:
        position = _unit_hash(f"{split.seed}:{image.split_key}")
        if position < split.test_fraction:
            parts["test"].append(image)
        elif position < split.test_fraction + split.val_fraction:
            parts["val"].append(image)
        else:
            parts["train"].append(image)
    return DatasetSplit(**parts)


def _unit_hash(text: str) -> float:
    """A number in [0, 1) from sha1 (stable across runs and machines, unlike ``hash()``)."""
    data = text.encode("utf-8", "surrogateescape")  # a name that is not UTF-8 hashes as its bytes
    return int.from_bytes(hashlib.sha1(data).digest()[:8], "big") / 2.0**64


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40].strip("-")
    return slug or "dataset"
