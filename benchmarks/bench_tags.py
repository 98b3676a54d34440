"""What tags cost: decoding with and without them, side by side in one run.

On the first ``--images`` coco-mini photos (everyday photos, where tags fire most), with the shipped
model (or ``--model``): the features are computed once, then, taking turns for ``--rounds``
rounds so other load hits them alike, it times
  (a) the ordinary beam search (``Captioner`` without a tagger: ``--no-tags``),
  (b) tag-guided captioning (``inference.guided``: the same search, the classifier's tags, and a
      constrained search over the photos whose caption missed a confident tag),
and prints ms per photo, the ratio, and how many photos got the constrained search.

    python -m benchmarks.bench_tags [--model DIR] [--images 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
PROJECT_ROOT = Path(__file__).resolve().parent.parent

import numpy as np

from captioning import config
from captioning.data.images import find_images, load_image
from captioning.inference.captioner import Captioner

COCO_IMAGES = PROJECT_ROOT.parent / "shared" / "datasets" / "coco-mini" / "Images"
BATCH = 32


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=config.DEFAULT_BUNDLE_DIR)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    folder = COCO_IMAGES if COCO_IMAGES.is_dir() else PROJECT_ROOT / "examples"
    paths = find_images(folder)[:args.images]
    captioner = Captioner.load(args.model)
    if captioner.tagger is None:
        print(f"{args.model}: its encoder has no ImageNet classifier; nothing to compare")
        return 1
    tagger = captioner.tagger
    features = [captioner.encode(np.stack([load_image(p, captioner.encoder.input_size)
                                           for p in paths[start:start + BATCH]]))
                for start in range(0, len(paths), BATCH)]
    timings: dict[str, list[float]] = {"no tags": [], "tags": []}
    for batch in features:  # warm up: every batch size traced once, outside the timings
        captioner.decode_features_tagged(batch)
    added = 0
    for _ in range(args.rounds):
        for name in timings:
            captioner.tagger = tagger if name == "tags" else None
            started = time.perf_counter()
            decoded = [captioner.decode_features_tagged(batch) for batch in features]
            timings[name].append((time.perf_counter() - started) * 1000 / len(paths))
            if name == "tags":
                added = sum(1 for batch in decoded for _, tags in batch if any(t.added for t in tags or ()))
    plain, tagged = (min(timings[name]) for name in ("no tags", "tags"))
    print(f"{len(paths)} photos from {folder}, beam {config.DEFAULT_BEAM_SIZE}, best of {args.rounds} rounds")
    print(f"  no tags: {plain:7.1f} ms/photo   (rounds: {', '.join(f'{t:.1f}' for t in timings['no tags'])})")
    print(f"  tags:    {tagged:7.1f} ms/photo   (rounds: {', '.join(f'{t:.1f}' for t in timings['tags'])})")
    print(f"  tags / no tags: {tagged / plain:.2f}x; {added} of {len(paths)} captions got a tag added")
    return 0


if __name__ == "__main__":
    sys.exit(main())
