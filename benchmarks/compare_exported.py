"""How many captions the exported form (LiteRT) and the TensorFlow path disagree on, photo by photo.

Captions every photo under the given folders (default: examples/ and the shared coco-mini photos)
with both runtimes of one bundle, greedy and beam 3, and counts the captions whose word ids differ
(each difference is listed). Not a timing: it says whether the exported path may stand in for
TensorFlow.

    python -m benchmarks.compare_exported [--model DIR] [FOLDER ...]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
PROJECT_ROOT = Path(__file__).resolve().parent.parent

from captioning import config
from captioning.data.images import find_images
from captioning.inference.captioner import Captioner

DEFAULT_FOLDERS = [PROJECT_ROOT / "examples", PROJECT_ROOT.parent / "shared" / "datasets" / "coco-mini" / "Images"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=config.DEFAULT_BUNDLE_DIR, help="bundle (default: shipped)")
    parser.add_argument("folders", type=Path, nargs="*", default=DEFAULT_FOLDERS, help="photo folders")
    args = parser.parse_args()
    photos = [photo for folder in args.folders if folder.is_dir() for photo in find_images(folder)]
    exported = Captioner.load(args.model, runtime="litert", log=print)
    reference = Captioner.load(args.model, runtime="tensorflow")
    print(f"model: {args.model}; {len(photos)} photos from {', '.join(str(f) for f in args.folders)}")
    for beam in (1, 3):
        got = exported.caption_many(photos, beam_size=beam)
        expected = reference.caption_many(photos, beam_size=beam)
        differ = [(a, b) for a, b in zip(got, expected, strict=True) if a.tokens != b.tokens or a.error != b.error]
        print(f"beam {beam}: {len(differ)} of {len(photos)} captions differ")
        for a, b in differ:
            print(f"  {a.path}: exported {a.caption!r} / TensorFlow {b.caption!r}")


if __name__ == "__main__":
    main()
