"""The reviewed ImageNet class -> caption word table (``imagenet_words.json``), read without WordNet.

Each of the 1,000 ILSVRC-2012 classes (in the classifier's order: wnids sorted ascending) has a
WordNet id, a label and a tag: the word people write in a caption for that thing ("dog" for all
118 dog breeds, "cup" for a coffee mug), or none. Each tag lists its word *forms* (what a caption
may say for it, and what the constrained search accepts: "dog", "dogs", "puppy", ...) and further
*mentions* that already name it well enough ("animal" for a dog). The table is generated from
WordNet by ``captioning.tags.wordnet_table`` and reviewed by hand; it does not depend on any
model's vocabulary (``tags.tagger`` keeps only the forms a bundle's vocabulary has).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from captioning.errors import CaptioningError

TABLE_FORMAT = 1
TABLE_PATH = Path(__file__).with_name("imagenet_words.json")
NUM_CLASSES = 1000


@dataclass(frozen=True)
class ImageNetClass:
    """One classifier output: its index, WordNet id (``n`` + 8-digit noun offset), label and tag."""

    index: int
    wnid: str
    label: str
    tag: str | None


@dataclass(frozen=True)
class TagWords:
    """The words of one tag.

    Attributes:
        tag: the tag's name, itself one of its forms.
        forms: caption words that name the thing; the constraint is satisfied by any of them.
        mentions: further words that count as naming it (never forced).
    """

    tag: str
    forms: tuple[str, ...]
    mentions: tuple[str, ...]

    @property
    def named_by(self) -> frozenset[str]:
        """Every word whose presence in a caption means the caption already names the thing."""
        return frozenset(self.forms) | frozenset(self.mentions)


@dataclass(frozen=True)
class ImageNetWords:
    """The whole table: ``classes[i]`` is classifier output ``i``; ``tags`` by name."""

    classes: tuple[ImageNetClass, ...]
    tags: dict[str, TagWords]

    @classmethod
    def load(cls, path: str | Path = TABLE_PATH) -> ImageNetWords:
        """Read and check the table.

        Raises:
            CaptioningError: the file is missing or malformed (a damaged install).
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            table = cls(
                classes=tuple(ImageNetClass(int(c["index"]), str(c["wnid"]), str(c["label"]),
                                            None if c["tag"] is None else str(c["tag"]))
                              for c in data["classes"]),
                tags={str(name): TagWords(str(name), tuple(map(str, words["forms"])),
                                          tuple(map(str, words["mentions"])))
                      for name, words in data["tags"].items()})
            if data.get("format") != TABLE_FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {TABLE_FORMAT}")
            table._check()
        except FileNotFoundError:
            raise CaptioningError(f"{path}: the ImageNet word table is missing; reinstall the tool") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError,
                AttributeError, ValueError) as error:
            raise CaptioningError(f"{path}: damaged ImageNet word table ({error}); reinstall the tool") from None
        return table

    def _check(self) -> None:
        if [c.index for c in self.classes] != list(range(NUM_CLASSES)):
            raise ValueError(f"expected classes 0..{NUM_CLASSES - 1} in order")
        wnids = [c.wnid for c in self.classes]
        if wnids != sorted(set(wnids)):  # the classifier's order is the wnids sorted ascending
            raise ValueError("the wnids are not unique and sorted")
        for entry in self.classes:
            if entry.tag is not None and entry.tag not in self.tags:
                raise ValueError(f"class {entry.index} has the undefined tag {entry.tag!r}")
        for words in self.tags.values():
            if words.tag not in words.forms or any(" " in form for form in words.forms):
                raise ValueError(f"tag {words.tag!r}: its forms must include it and be single words")

    def class_tags(self) -> list[str | None]:
        """The tag of each class, by class index."""
        return [entry.tag for entry in self.classes]
