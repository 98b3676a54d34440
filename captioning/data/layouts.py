"""Recognise a dataset folder's layout and read its captions file into (image name, caption) pairs.

Layouts accepted (checked in this order in a folder, then one folder level down):

* ``flickr-token``: the original ``Flickr8k.token.txt`` (``name.jpg#N<TAB>caption``, also in
  ``Flickr8k_text/``) + ``Flicker8k_Dataset/`` (or ``Images/``).
* ``flickr-csv``: ``captions.txt`` as CSV with header ``image,caption`` + ``Images/``.
* ``coco-json``: ``captions.json``, or the single ``*.json`` with captions (also in
  ``annotations/``), + ``Images/``; COCO format, bare ``annotations``, a list of records, or
  ``{file_name: [captions]}``.

Everything odd in a file is counted in ``DatasetProblems`` rather than raised: only a file that
cannot be read at all (invalid JSON, no CSV header, unreadable) is a ``DatasetError``.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from captioning import config
from captioning.errors import DatasetError, InputFileError
from captioning.storage.regular_files import read_regular_file
from captioning.storage.safe_json import parse_json
from captioning.storage.safe_text import escape, needs_escaping

LAYOUTS_HELP = ("Images/ + captions.json (Mini-COCO / COCO JSON), "
                "Images/ + captions.txt (Flickr CSV with header 'image,caption'), "
                "or Flickr8k.token.txt + Flicker8k_Dataset/ (original Flickr8k)")

PROBLEM_KINDS = {
    "missing_image": "captions whose image file is missing",
    "image_without_captions": "images without a usable caption",
    "empty_caption": "empty captions (no words)",
    "duplicate_caption": "duplicate captions of the same image",
    "undecodable_text": "lines with invalid UTF-8 (kept, bad bytes replaced)",
    "malformed_entry": "malformed rows or entries",
}
MAX_EXAMPLES = 3

_TOKEN_LINE = re.compile(r"^[^\t#]+#\d+\t")
_SURROGATES = re.compile("[\ud800-\udfff]")
_COCO_ID_NAMES = ("COCO_train2014_{:012d}.jpg", "{:012d}.jpg", "COCO_val2014_{:012d}.jpg")
_IMAGE_DIRS = ("Images", "images")
_TOKEN_IMAGE_DIRS = ("Flicker8k_Dataset", "Flickr8k_Dataset", "flickr30k_images", *_IMAGE_DIRS)


@dataclass
class DatasetProblems:
    """Counts of skipped or repaired items by kind (see ``PROBLEM_KINDS``), with a few examples."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, example: str) -> None:
        """Count one problem of ``kind``; keep the first few examples."""
        if kind not in PROBLEM_KINDS:
            raise ValueError(f"unknown problem kind {kind!r}")
        self.counts[kind] = self.counts.get(kind, 0) + 1
        examples = self.examples.setdefault(kind, [])
        if len(examples) < MAX_EXAMPLES:
            examples.append(example)

    def count(self, kind: str) -> int:
        """How many problems of ``kind`` were seen."""
        return self.counts.get(kind, 0)

    @property
    def total(self) -> int:
        """All problems together."""
        return sum(self.counts.values())

    def summary(self) -> str:
        """One line, e.g. ``'2 captions whose image file is missing, 1 empty captions (no words)'``."""
        if not self.counts:
            return "nothing skipped"
        return ", ".join(f"{self.counts[k]} {PROBLEM_KINDS[k]}" for k in PROBLEM_KINDS if k in self.counts)

    def describe(self) -> list[str]:
        """One line per kind with its count and examples, for reports such as ``info``."""
        return [f"{self.counts[k]} {PROBLEM_KINDS[k]} (e.g. {'; '.join(self.examples[k])})"
                for k in PROBLEM_KINDS if k in self.counts]


@dataclass
class RawCaptions:
    """What a layout reader found: (image name relative to ``image_dir``, raw caption) pairs."""

    layout: str
    folder: Path
    captions_file: Path
    image_dir: Path
    pairs: list[tuple[str, str]]


@dataclass
class _Found:
    layout: str
    captions_file: Path
    image_dir: Path


def list_images(image_dir: Path) -> set[str]:
    """Image files under ``image_dir`` (recursively) as POSIX paths relative to it."""
    found = set()
    for current, dirs, files in os.walk(image_dir):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        base = Path(current).relative_to(image_dir)
        for name in files:
            if not name.startswith(".") and name.lower().endswith(config.IMAGE_EXTENSIONS):
                found.add((base / name).as_posix())
    return found


def find_layout(root: Path) -> _Found:
    """Recognise the layout in ``root`` or in exactly one of its sub-folders.

    Raises:
        DatasetError: When no layout, or several sub-folders with one, are found.
    """
    found = _detect(root)
    if found:
        return found
    subfolders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    candidates, unclear = [], []
    for subfolder in subfolders:
        try:
            found_there = _detect(subfolder)
        except DatasetError as error:  # e.g. several caption files: not the dataset asked for, unless it is the only one
            unclear.append(error)
            continue
        if found_there:
            candidates.append(found_there)
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        names = ", ".join(f"{f.captions_file.parent.name} ({f.layout})" for f in candidates)
        raise DatasetError(f"{root}: several datasets found ({names}); pass one of these folders")
    if unclear:
        raise unclear[0]
    raise DatasetError(f"{root}: no dataset layout recognised; expected {LAYOUTS_HELP}")


def _detect(folder: Path) -> _Found | None:
    token = _token_file(folder)
    if token:
        return _Found("flickr-token", token, _first_dir(folder, _TOKEN_IMAGE_DIRS))
    if (folder / "captions.txt").is_file():
        return _Found("flickr-csv", folder / "captions.txt", _first_dir(folder, _IMAGE_DIRS))
    json_file = _json_file(folder)
    if json_file:
        # Official COCO: annotations/captions_train2014.json beside train2014/.
        split = re.match(r"captions_(\w+\d{4})\.json$", json_file.name)
        dirs = (*_IMAGE_DIRS, split.group(1)) if split else _IMAGE_DIRS
        return _Found("coco-json", json_file, _first_dir(folder, dirs))
    return None


def _first_dir(folder: Path, names: tuple[str, ...]) -> Path:
    return next((folder / n for n in names if (folder / n).is_dir()), folder)


def _token_file(folder: Path) -> Path | None:
    for place in (folder, folder / "Flickr8k_text"):
        if not place.is_dir():
            continue
        for preferred in ("Flickr8k.token.txt", "Flickr30k.token.txt", "results_20130124.token"):
            if (place / preferred).is_file():
                return place / preferred
        # The lemmatised variant has altered captions; never pick it by accident.
        others = sorted(p for p in place.glob("*.token.txt") if "lemma" not in p.name)
        if others:
            return others[0]
    return None


def _json_file(folder: Path) -> Path | None:
    if (folder / "captions.json").is_file():
        return folder / "captions.json"
    files = [p for place in (folder, folder / "annotations") if place.is_dir()
             for p in sorted(place.glob("*.json"))]
    with_captions = [p for p in files if "caption" in p.name.lower()]
    files = with_captions or files
    if len(files) > 1:
        names = ", ".join(str(p.relative_to(folder)) for p in files)
        raise DatasetError(f"{folder}: several caption JSON files ({names}); rename the one to use "
                           "captions.json")
    return files[0] if files else None


def read_captions(found: _Found, existing: set[str], problems: DatasetProblems) -> RawCaptions:
    """Parse the captions file of a recognised layout.

    Args:
        found: The layout and its files, from ``find_layout``.
        existing: Image files in ``found.image_dir`` (``list_images``), to resolve COCO ids.
        problems: Where skipped and repaired items are counted.

    Returns:
        The (image name, raw caption) pairs in file order.
    """
    text = _read_text(found.captions_file, problems)
    layout = found.layout
    if layout == "flickr-token":
        pairs = _parse_token(text, found.captions_file, problems)
    elif layout == "flickr-csv":
        first_line = text.split("\n", 1)[0]
        if _TOKEN_LINE.match(first_line):  # some downloads ship the token format as captions.txt
            layout, pairs = "flickr-token", _parse_token(text, found.captions_file, problems)
        else:
            pairs = _parse_csv(text, found.captions_file, problems)
    else:
        pairs = _parse_json(text, found.captions_file, existing, problems)
    return RawCaptions(layout, found.captions_file.parent, found.captions_file, found.image_dir, pairs)


def _read_text(path: Path, problems: DatasetProblems) -> str:
    """Decode a captions file as UTF-8, replacing (and counting) undecodable lines.

    Only a regular file within ``config.MAX_DATASET_FILE_BYTES`` is read (a FIFO never blocks).
    """
    try:
        data = read_regular_file(path, config.MAX_DATASET_FILE_BYTES)
    except InputFileError as error:
        raise DatasetError(f"{path}: cannot read the captions file ({error.reason})") from None
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        return data.decode("utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError:
        pass
    lines = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(raw.decode("utf-8", errors="replace"))
            problems.add("undecodable_text", f"{path.name} line {number}")
    return "\n".join(line.rstrip("\r") for line in lines)


def _parse_token(text: str, path: Path, problems: DatasetProblems) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        key, tab, caption = line.partition("\t")
        name = key.rsplit("#", 1)[0].strip()
        if not tab or not name:
            problems.add("malformed_entry", f"{path.name} line {number}: expected 'name.jpg#N<TAB>caption'")
            continue
        pairs.append((name, caption))
    return pairs


def _parse_csv(text: str, path: Path, problems: DatasetProblems) -> list[tuple[str, str]]:
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header] != ["image", "caption"]:
            shown = text.split("\n", 1)[0][:60]
            raise DatasetError(f"{path}: expected a CSV header 'image,caption', found {shown!r}; "
                               f"fix the file or use one of: {LAYOUTS_HELP}")
        pairs: list[tuple[str, str]] = []
        for row in reader:
            if not row:
                continue
            if len(row) < 2 or not row[0].strip():
                problems.add("malformed_entry", f"{path.name} line {reader.line_num}: expected 'image,caption'")
                continue
            # An unquoted comma inside a caption splits it; the rest of the row is still the caption.
            pairs.append((row[0].strip(), ",".join(row[1:])))
        return pairs
    except csv.Error as error:
        raise DatasetError(f"{path}: not a readable CSV file (line {reader.line_num}: {error})") from None


def _parse_json(text: str, path: Path, existing: set[str], problems: DatasetProblems) -> list[tuple[str, str]]:
    try:
        # Lone surrogates ("\udce9" escapes) are kept here and counted per entry below.
        data = parse_json(text, allow_surrogates=True)
    except ValueError as error:
        raise DatasetError(f"{path}: {error}; fix or replace the captions file") from None
    if isinstance(data, dict) and "annotations" in data:
        pairs = _parse_coco(data, path, existing, problems)
    elif isinstance(data, list):
        pairs = _parse_records(data, path, existing, problems)
    elif isinstance(data, dict) and "images" not in data:
        pairs = _parse_mapping(data, path, problems)
    else:
        raise DatasetError(f"{path}: no captions found; expected COCO 'annotations', a list of "
                           "{image, caption} records, or {file_name: [captions]}")
    return _without_surrogates(pairs, path, problems)


def _without_surrogates(pairs: list[tuple[str, str]], path: Path,
                        problems: DatasetProblems) -> list[tuple[str, str]]:
    """Drop pairs whose file name holds a lone surrogate; repair captions that hold one.

    JSON can spell a lone surrogate (``"\udce9.jpg"``) but it is not text: as a file name it could
    only mean bytes no UTF-8 name has, and it crashes every print or UTF-8 write. Such a name is a
    malformed entry; in a caption it is replaced by U+FFFD, as an undecodable byte is.
    """
    kept = []
    for name, caption in pairs:
        if needs_escaping(name):
            problems.add("malformed_entry", f"{path.name} '{escape(name)[:60]}': a file name that is not "
                                            "text (an unpaired surrogate escape)")
            continue
        if needs_escaping(caption):
            caption = _SURROGATES.sub("\ufffd", caption)
            problems.add("undecodable_text", f"{path.name} caption of {name}")
        kept.append((name, caption))
    return kept


def _parse_coco(data: dict, path: Path, existing: set[str], problems: DatasetProblems) -> list[tuple[str, str]]:
    annotations, images = data["annotations"], data.get("images")
    if not isinstance(annotations, list) or not isinstance(images, (list, type(None))):
        raise DatasetError(f"{path}: 'annotations' and 'images' must be lists in a COCO captions file")
    names: dict[object, str] | None = None
    if images is not None:
        names = {}
        for index, image in enumerate(images):
            if isinstance(image, dict) and isinstance(image.get("file_name"), str) and _is_id(image.get("id")):
                names[image["id"]] = image["file_name"]
            else:
                problems.add("malformed_entry", f"{path.name} images[{index}]: needs a number or text 'id' "
                                                "and a text 'file_name'")
    pairs: list[tuple[str, str]] = []
    for index, note in enumerate(annotations):
        where = f"{path.name} annotations[{index}]"
        if not isinstance(note, dict) or not isinstance(note.get("caption"), str):
            problems.add("malformed_entry", f"{where}: needs 'image_id' and a text 'caption'")
            continue
        image_id = note.get("image_id")
        if not _is_id(image_id):  # a list or an object cannot name an image (nor be looked up)
            problems.add("malformed_entry", f"{where}: image_id must be a number or text, got {_short(image_id)}")
            continue
        name = names.get(image_id) if names is not None else _name_for_id(image_id, existing)
        if name is None:
            problems.add("malformed_entry", f"{where}: unknown image_id {_short(image_id)}")
            continue
        pairs.append((name, note["caption"]))
    return pairs


def _is_id(value: object) -> bool:
    """An image id a COCO file may use: a whole number or a text (hashable, unlike a list)."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _short(value: object) -> str:
    """A JSON value for a problem example: its repr, escaped and cut to a few words."""
    text = escape(repr(value))
    return text if len(text) <= 40 else text[:37] + "..."


def _name_for_id(image_id: object, existing: set[str]) -> str | None:
    """File name of a bare COCO image id: the first naming scheme whose file exists."""
    if isinstance(image_id, str) and image_id.isascii() and image_id.isdigit() and len(image_id) <= 20:
        image_id = int(image_id)
    if not isinstance(image_id, int) or isinstance(image_id, bool):
        return None
    names = [pattern.format(image_id) for pattern in _COCO_ID_NAMES]
    return next((n for n in names if n in existing), names[0])


def _parse_records(data: list, path: Path, existing: set[str], problems: DatasetProblems) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for index, record in enumerate(data):
        where = f"{path.name} [{index}]"
        record = record if isinstance(record, dict) else {}
        name = record.get("image", record.get("file_name"))
        if not isinstance(name, str):
            name = _name_for_id(record.get("image_id"), existing)
        captions = record.get("captions", [record.get("caption")])
        if name is None or not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            problems.add("malformed_entry", f"{where}: needs image|file_name|image_id and a text caption")
            continue
        pairs.extend((name, caption) for caption in captions)
    return pairs


def _parse_mapping(data: dict, path: Path, problems: DatasetProblems) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for name, captions in data.items():
        captions = [captions] if isinstance(captions, str) else captions
        if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            problems.add("malformed_entry", f"{path.name} {_short(name)}: expected a list of caption strings")
            continue
        pairs.extend((name, caption) for caption in captions)
    return pairs
