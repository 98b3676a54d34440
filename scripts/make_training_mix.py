"""Gather a training mix: one dataset whole, part of a second one (repeated), the rest held out.

This is how the shipped model's training data was made (saved_models/default/MODEL_CARD.md):
Flickr8k whole plus the half of coco-mini whose file name's SHA-1 is even, each of those COCO photos
that falls in the training split listed ``--repeat`` times, so that 171 everyday photos weigh
against 5,690 Flickr8k ones; the odd half is written as its own dataset, never trained or tuned on,
for reporting. The result is an ordinary local dataset (``Images/`` of links + ``captions.json``, a
list of ``{"image", "caption"}``) for ``train --dataset``.

Photo names are kept, so each Flickr8k photo keeps the split it has in Flickr8k alone (the split
hashes the relative path ``Images/<name>``) and a model trained on the mix is tested on the same
Flickr8k photos. A repeat is a link under a new name (``<stem>_x<k><ext>``) chosen so that it also
lands in the training split: no copy of a training photo is ever a validation or test photo.

usage: python scripts/make_training_mix.py --base ../shared/datasets/flickr8k \
           --extra ../shared/datasets/coco-mini --output data/f8k-coco-mix \
           --held-out data/coco-heldout [--repeat 5]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from captioning import config  # noqa: E402  (the project root is put on the path first)
from captioning.data.datasets import CaptionedImage, load_dataset, split_dataset  # noqa: E402

IMAGES = "Images"
SPLIT = config.SplitConfig()  # the tool's default split, which `train` uses unless told otherwise


def in_tuning_half(name: str) -> bool:
    """The extra dataset's photos trained on: those whose file name's SHA-1 is even."""
    return hashlib.sha1(name.encode("utf-8")).digest()[-1] % 2 == 0


def lands_in_training(name: str, split: config.SplitConfig) -> bool:
    """Whether a photo called ``name`` in the mix's ``Images/`` is in its training split."""
    probe = CaptionedImage(path=Path(name), captions=["x"], relative_path=f"{IMAGES}/{name}")
    return bool(split_dataset([probe], split).train)


def repeat_names(name: str, copies: int, split: config.SplitConfig) -> list[str]:
    """``copies`` new names for a training photo, each landing in the training split too."""
    stem, dot, ext = name.rpartition(".")
    names: list[str] = []
    k = 0
    while len(names) < copies:
        k += 1
        candidate = f"{stem}_x{k}{dot}{ext}" if dot else f"{name}_x{k}"
        if lands_in_training(candidate, split):
            names.append(candidate)
    return names


def write_dataset(folder: Path, entries: dict[str, tuple[Path, list[str]]]) -> None:
    """``folder/Images/<name>`` links to each photo and ``folder/captions.json`` with its captions."""
    (folder / IMAGES).mkdir(parents=True, exist_ok=False)
    records = []
    for name, (photo, captions) in sorted(entries.items()):
        (folder / IMAGES / name).symlink_to(photo.resolve())
        records += [{"image": name, "caption": caption} for caption in captions]
    (folder / "captions.json").write_text(json.dumps(records), encoding="utf-8")


def make_mix(base: Path, extra: Path, output: Path, held_out: Path, repeat: int,
             split: config.SplitConfig = SPLIT) -> dict[str, int]:
    """Write the mix at ``output`` and the extra dataset's held-out half at ``held_out``; counts."""
    if output.exists() or held_out.exists():
        raise SystemExit(f"error: {output if output.exists() else held_out} exists; choose new folders")
    mix: dict[str, tuple[Path, list[str]]] = {}
    for image in load_dataset(base).images:
        mix[image.path.name] = (image.path, image.captions)
    kept: dict[str, tuple[Path, list[str]]] = {}
    repeats = 0
    for image in load_dataset(extra).images:
        name = image.path.name
        if name in mix:
            raise SystemExit(f"error: {name} is in both datasets; rename one")
        if not in_tuning_half(name):
            kept[name] = (image.path, image.captions)
            continue
        mix[name] = (image.path, image.captions)
        if lands_in_training(name, split):
            for copy in repeat_names(name, repeat - 1, split):
                mix[copy] = (image.path, image.captions)
                repeats += 1
    write_dataset(output, mix)
    write_dataset(held_out, kept)
    return {"mix_photos": len(mix), "repeats": repeats, "held_out_photos": len(kept)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="dataset used whole (Flickr8k)")
    parser.add_argument("--extra", type=Path, required=True, help="dataset split in halves (coco-mini)")
    parser.add_argument("--output", type=Path, required=True, help="new folder for the mix")
    parser.add_argument("--held-out", type=Path, required=True, help="new folder for the extra's held-out half")
    parser.add_argument("--repeat", type=int, default=5, help="times each extra training photo is listed")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be 1 or more")
    counts = make_mix(args.base, args.extra, args.output, args.held_out, args.repeat)
    print(f"{args.output}: {counts['mix_photos']} photos ({counts['repeats']} repeats); "
          f"{args.held_out}: {counts['held_out_photos']} held-out photos")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
