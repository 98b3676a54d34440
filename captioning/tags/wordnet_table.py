"""Regenerate ``imagenet_words.json``, the reviewed ImageNet class -> caption word table, from WordNet.

Run at development time only (``python -m captioning.tags.wordnet_table --write``); captioning
reads the committed JSON and never needs WordNet. ``tests/test_tags.py`` regenerates the table
when WordNet is installed and checks it equals the committed one, so the table cannot drift from
the rules below.

How a class gets its word: ImageNet's wnid ``nXXXXXXXX`` is WordNet 3.0's noun synset at byte
offset XXXXXXXX of ``data.noun``. From that synset the hypernym graph is walked nearest first
(breadth first, pointers in file order); the first synset with a lemma in ``word_rules.ANCHORS``
gives the tag ("golden retriever" -> retriever -> sporting dog -> hunting dog -> dog).
``word_rules.OVERRIDES`` fix, by class index, what that walk gets wrong (a railway "car" is a
train, the "tusker" an elephant); a class whose walk meets no anchor has no tag. The anchors are
the words people write in captions, at the level people name things: "dog", not "terrier" or
"canine"; "cup" for a coffee mug.

WordNet is read straight from its documented database format (wndb(5WN)): Debian's
``wordnet-base`` installs the files in ``/usr/share/wordnet`` without the ``lexnames`` file
NLTK's reader insists on, and the few fields needed here are simple to parse.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from captioning.tags.table import TABLE_FORMAT, TABLE_PATH, ImageNetWords
from captioning.tags.word_rules import ANCHORS, OVERRIDES, TAGS

WORDNET_DIRS = ("/usr/share/wordnet", "/usr/local/WordNet-3.0/dict", "/opt/homebrew/share/wordnet")
HYPERNYM_POINTERS = ("@", "@i")  # hypernym, instance hypernym


class WordNetNouns:
    """WordNet 3.0's noun synsets read from ``data.noun`` by byte offset (wndb(5WN))."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / "data.noun"
        self._data = self.path.read_bytes()

    def synset(self, offset: int) -> tuple[list[str], list[int]]:
        """(lemmas with spaces for underscores, hypernym offsets) of the synset at ``offset``."""
        end = self._data.index(b"\n", offset)
        fields = self._data[offset:end].decode("utf-8").split(" | ")[0].split()
        if int(fields[0]) != offset:
            raise ValueError(f"{self.path}: no synset at offset {offset}; not WordNet 3.0?")
        count = int(fields[3], 16)
        lemmas = [fields[4 + 2 * i].replace("_", " ") for i in range(count)]
        position = 4 + 2 * count
        pointers = int(fields[position])
        hypernyms = []
        for start in range(position + 1, position + 1 + 4 * pointers, 4):
            symbol, target, pos = fields[start:start + 3]
            if symbol in HYPERNYM_POINTERS and pos == "n":
                hypernyms.append(int(target))
        return lemmas, hypernyms


def find_wordnet(folder: str | None = None) -> Path | None:
    """The WordNet database folder: ``folder`` if given, else $WNSEARCHDIR or a usual install place."""
    candidates = (folder,) if folder else (os.environ.get("WNSEARCHDIR"), *WORDNET_DIRS)
    for candidate in candidates:
        if candidate and (Path(candidate) / "data.noun").is_file():
            return Path(candidate)
    return None


def class_tag(wordnet: WordNetNouns, offset: int) -> str | None:
    """The tag of the nearest anchored synset at or above ``offset`` (breadth first), or None."""
    frontier, seen = [offset], set()
    while frontier:
        following = []
        for node in frontier:
            if node in seen:
                continue
            seen.add(node)
            lemmas, hypernyms = wordnet.synset(node)
            for lemma in lemmas:
                if lemma.lower() in ANCHORS:
                    return ANCHORS[lemma.lower()]
            following.extend(hypernyms)
        frontier = following
    return None


def build_table(wordnet: WordNetNouns, wnids: Sequence[str]) -> dict:
    """The table's JSON content for the 1,000 classes ``wnids`` (in class-index order)."""
    classes: list[dict[str, object]] = []
    for index, wnid in enumerate(wnids):
        offset = int(wnid[1:])
        label = wordnet.synset(offset)[0][0]
        tag = OVERRIDES[index] if index in OVERRIDES else class_tag(wordnet, offset)
        classes.append({"index": index, "wnid": wnid, "label": label, "tag": tag})
    used = {str(entry["tag"]) for entry in classes if entry["tag"] is not None}
    tags = {tag: {"forms": list(TAGS[tag][0]), "mentions": list(TAGS[tag][1])}
            for tag in sorted(used)}
    return {"format": TABLE_FORMAT,
            "source": "WordNet 3.0 hypernyms with reviewed anchors and overrides: "
                      "python -m captioning.tags.wordnet_table --write",
            "tags": tags, "classes": classes}


def render(table: dict) -> str:
    """The JSON text as committed: one class per line, so a review diff reads line by line."""
    lines = ["{", f'  "format": {json.dumps(table["format"])},', f'  "source": {json.dumps(table["source"])},',
             '  "tags": {']
    tags = list(table["tags"].items())
    for position, (tag, words) in enumerate(tags):
        comma = "," if position < len(tags) - 1 else ""
        lines.append(f"    {json.dumps(tag)}: {json.dumps(words)}{comma}")
    lines += ["  },", '  "classes": [']
    for position, entry in enumerate(table["classes"]):
        comma = "," if position < len(table["classes"]) - 1 else ""
        lines.append(f"    {json.dumps(entry)}{comma}")
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wordnet", metavar="DIR", help="WordNet 3.0 database folder (holds data.noun)")
    parser.add_argument("--write", action="store_true", help=f"rewrite {TABLE_PATH.name}")
    args = parser.parse_args(argv)
    folder = find_wordnet(args.wordnet)
    if folder is None:
        print("error: WordNet 3.0 not found; install it (Debian: apt-get install wordnet-base) "
              "or pass --wordnet DIR", file=sys.stderr)
        return 1
    wnids = [entry.wnid for entry in ImageNetWords.load().classes]  # the class order is fixed
    text = render(build_table(WordNetNouns(folder), wnids))
    if args.write:
        TABLE_PATH.write_text(text, encoding="utf-8")
        print(f"wrote {TABLE_PATH}")
        return 0
    same = TABLE_PATH.read_text(encoding="utf-8") == text
    print(f"{TABLE_PATH.name} is {'up to date' if same else 'OUT OF DATE: run with --write'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
