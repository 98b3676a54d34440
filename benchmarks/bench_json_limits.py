"""What reading JSON within limits costs: ``safe_json.parse_json`` against plain ``json.loads``.

Builds a COCO-format captions file of Mini-COCO's size (the coco-mini captions, repeated to about
``--annotations`` captions, ids renumbered) and times, in turns so load from other processes hits
them alike: (a) ``json.loads``, (b) ``safe_json.parse_json`` (nesting scan + hooks for numbers,
surrogates kept as the captions reader does), (c) the nesting scan alone. Prints the medians and
the ratio (b)/(a). Also times the scan on a hostile file of the same size (every caption full of
brackets and escaped quotes), which must stay linear.

    python -m benchmarks.bench_json_limits [--dataset ../shared/datasets/coco-mini] [--annotations 90000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from captioning.storage import safe_json

DEFAULT_DATASET = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "coco-mini"


def coco_text(dataset: Path, annotations: int) -> str:
    """The dataset's captions.json with its images and annotations repeated to ``annotations``."""
    data = json.loads((dataset / "captions.json").read_text(encoding="utf-8"))
    notes, images = data["annotations"], data["images"]
    copies = max(1, annotations // len(notes))
    data["images"] = [{**image, "id": image["id"] + copy * 10**7} for copy in range(copies) for image in images]
    data["annotations"] = [{**note, "id": note["id"] + copy * 10**7, "image_id": note["image_id"] + copy * 10**7}
                           for copy in range(copies) for note in notes]
    return json.dumps(data)


def hostile_text(size: int) -> str:
    """About ``size`` characters of captions full of brackets, escaped quotes and backslashes."""
    caption = 'a [man] {on} a \\"horse\\" \\\\ [[[ ]]] ' * 3
    count = size // (len(caption) + 30)
    return '{"annotations": [' + ", ".join(f'{{"image_id": {i}, "caption": "{caption}"}}'
                                            for i in range(count)) + "]}"


def median_seconds(function, text: str, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        function(text)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--annotations", type=int, default=90_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not (args.dataset / "captions.json").is_file():
        sys.exit(f"no captions.json in {args.dataset}; pass --dataset DIR (a COCO-format dataset)")
    text = coco_text(args.dataset, args.annotations)
    hostile = hostile_text(len(text))
    alternatives = {
        "json.loads": json.loads,
        "safe_json.parse_json": lambda t: safe_json.parse_json(t, allow_surrogates=True),
        "nesting scan alone": safe_json.nesting_depth,
    }
    results = {name: [] for name in alternatives}
    for _ in range(args.rounds):  # in turns, one call each per round
        for name, function in alternatives.items():
            results[name].append(median_seconds(function, text, 1))
    medians = {name: statistics.median(times) for name, times in results.items()}
    print(f"captions file: {len(text) / 1e6:.1f} MB, {text.count('caption')} captions, {args.rounds} rounds")
    for name, seconds in medians.items():
        print(f"  {name:<22} {seconds * 1000:8.1f} ms")
    print(f"  parse_json / json.loads: {medians['safe_json.parse_json'] / medians['json.loads']:.2f}x")
    scan = median_seconds(safe_json.nesting_depth, hostile, args.rounds)
    plain = median_seconds(json.loads, hostile, args.rounds)
    print(f"hostile file: {len(hostile) / 1e6:.1f} MB; nesting scan {scan * 1000:.1f} ms, "
          f"json.loads {plain * 1000:.1f} ms ({scan / plain:.2f}x)")


if __name__ == "__main__":
    main()
