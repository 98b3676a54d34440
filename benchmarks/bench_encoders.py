"""The EfficientNet-Lite sizes side by side: extraction cost per photo and an ImageNet sanity check.

For each encoder (default: efficientnet_lite0, lite1, lite2 with their real weights, each at its
own input size: 224, 240, 260) it measures, on the same coco-mini photos, interleaved round by
round so load from other processes hits every encoder alike:
  (a) the extraction pipeline: ``features.encode_paths(..., "grid")`` (tf.data parallel decode and
      resize through ``images.load_image``, batching, prefetch, the CNN; no cache writes),
  (b) the bare CNN over uint8 batches already decoded in memory,
as process CPU ms per photo (all threads; robust to other load) and photos/s (wall clock).

Then, as a sanity check that the weights are read right (not an accuracy benchmark), the ImageNet
top-1 of each encoder's own classifier on the labelled photos there are here:
  - scikit-image's CC0 photos: chelsea (a cat: classes 281-285) and coffee (espresso, 967);
  - coco-mini photos whose captions name an object ImageNet has a class for: a photo is labelled
    when at least 3 of its 5 captions use the word (``COCO_WORDS`` below; a weak label, as a
    photo can hold several things), and a prediction counts when it is one of the word's classes.

    python -m benchmarks.bench_encoders [--dataset DIR] [--images 200] [--rounds 3]
        [--encoders efficientnet_lite0 efficientnet_lite1 efficientnet_lite2]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from captioning.data.datasets import load_dataset
from captioning.data.images import load_image
from captioning.features import extraction as features

DEFAULT_DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "coco-mini"
DEFAULT_ENCODERS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
CAT = frozenset(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
SKIMAGE_PHOTOS = {"chelsea": CAT, "coffee": frozenset({967})}
# Object -> (regex over a caption, whole words; the ImageNet-1k classes that depict it).
COCO_WORDS = {
    "cat": (r"cats?", CAT),
    "dog": (r"dogs?|puppy|puppies", frozenset(range(151, 269))),
    "bear": (r"(?<!teddy )bears?", frozenset({294, 295, 296, 297})),
    "teddy bear": (r"teddy bears?", frozenset({850})),
    "zebra": (r"zebras?", frozenset({340})),
    "elephant": (r"elephants?", frozenset({101, 385, 386})),
    "sheep": (r"sheep", frozenset({348, 349})),
    "horse": (r"horses?", frozenset({339, 603})),
    "pizza": (r"pizzas?", frozenset({963})),
    "banana": (r"bananas?", frozenset({954})),
    "broccoli": (r"broccoli", frozenset({937})),
    "laptop": (r"laptops?", frozenset({620, 681})),
    "train": (r"trains?", frozenset({466, 547, 565, 705, 820, 829})),
    "bus": (r"bus|buses", frozenset({654, 779, 874})),
    "truck": (r"trucks?", frozenset({555, 569, 675, 717, 864, 867})),
    "car": (r"cars?", frozenset({436, 468, 511, 609, 627, 656, 717, 751, 817})),
    "motorcycle": (r"motorcycles?", frozenset({665, 670})),
    "airplane": (r"(air)?planes?|jets?|airliners?", frozenset({404, 895, 908})),
    "boat": (r"boats?", frozenset({472, 484, 510, 554, 576, 625, 628, 724, 780, 814, 833, 871, 914})),
    "clock": (r"clocks?", frozenset({409, 530, 892})),
    "toilet": (r"toilets?", frozenset({861})),
    "refrigerator": (r"refrigerators?|fridges?", frozenset({760})),
    "microwave": (r"microwaves?", frozenset({651})),
    "umbrella": (r"umbrellas?", frozenset({879})),
    "tennis": (r"tennis", frozenset({752, 852})),
}
MIN_CAPTIONS = 3


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET,
                        help="coco-mini folder (default: %(default)s)")
    parser.add_argument("--images", type=int, default=200, help="photos timed (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per encoder (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="(default: %(default)s)")
    parser.add_argument("--encoders", nargs="+", default=DEFAULT_ENCODERS, metavar="NAME",
                        help="EfficientNet-Lite variants (default: %(default)s)")
    return parser.parse_args()


def timed(run) -> tuple[float, float]:
    """(wall seconds, process CPU seconds over all threads) of ``run()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def time_encoders(encoders, paths, args) -> dict[str, dict[str, list[float]]]:
    """Per encoder and method, (wall, cpu) seconds of each round over all ``paths``."""
    import tensorflow as tf

    pixels = {}  # input size -> decoded photos, so the bare CNN times no decoding
    bare = {}
    for encoder in encoders:
        size = encoder.input_size
        if size not in pixels:
            stack = np.stack([load_image(p, size) for p in paths])  # (n, size, size, 3) uint8
            pixels[size] = [tf.constant(stack[i:i + args.batch_size])
                            for i in range(0, len(stack), args.batch_size)]
        bare[encoder.name] = features._compiled_inference(encoder.model, size)
        features.encode_paths(encoder, paths[:2], "grid", args.batch_size)  # trace once, untimed
        bare[encoder.name](pixels[size][0][:2]).numpy()
    results = {e.name: {"pipeline": [], "bare": []} for e in encoders}
    for _ in range(args.rounds):
        for encoder in encoders:
            def pipeline(encoder=encoder):
                grids, failures = features.encode_paths(encoder, paths, "grid", args.batch_size)
                assert not failures and len(grids) == len(paths), failures

            def cnn(encoder=encoder):
                for batch in pixels[encoder.input_size]:
                    bare[encoder.name](batch).numpy()

            results[encoder.name]["pipeline"].append(timed(pipeline))
            results[encoder.name]["bare"].append(timed(cnn))
    return results


def coco_labels(dataset) -> list[tuple[Path, frozenset[int], list[str]]]:
    """(photo, accepted ImageNet classes, words) for photos most of whose captions name an object."""
    labelled = []
    for image in dataset.images:
        captions = [caption.lower() for caption in image.captions]
        words, classes = [], set()
        for word, (pattern, accepted) in COCO_WORDS.items():
            if sum(bool(re.search(rf"\b(?:{pattern})\b", c)) for c in captions) >= MIN_CAPTIONS:
                words.append(word)
                classes |= accepted
        if classes:
            labelled.append((image.path, frozenset(classes), words))
    return labelled


def skimage_photos(folder: Path) -> list[tuple[Path, frozenset[int], list[str]]]:
    from PIL import Image
    from skimage import data

    labelled = []
    for name, accepted in SKIMAGE_PHOTOS.items():
        path = folder / f"{name}.png"
        Image.fromarray(getattr(data, name)()).save(path)
        labelled.append((path, accepted, [name]))
    return labelled


def top_k_hits(classifier, size: int, labelled, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(top-1 hit, top-5 hit) booleans per labelled photo, at the classifier's own input size."""
    pixels = np.stack([load_image(path, size) for path, _, _ in labelled]).astype(np.float32)
    logits = np.concatenate([np.asarray(classifier.predict_on_batch(pixels[i:i + batch_size]))
                             for i in range(0, len(pixels), batch_size)])  # (n, 1000)
    ranked = np.argsort(-logits, axis=1)[:, :5]
    top1 = np.array([int(r[0]) in accepted for r, (_, accepted, _) in zip(ranked, labelled, strict=True)])
    top5 = np.array([bool(set(r.tolist()) & accepted) for r, (_, accepted, _) in zip(ranked, labelled, strict=True)])
    return top1, top5


def main() -> int:
    import tempfile

    args = parse_args()
    import tensorflow as tf

    from captioning.encoders import build_encoder, efficientnet_lite, lite_weights

    dataset = load_dataset(args.dataset)
    paths = [image.path for image in dataset.images[: args.images]]
    for path in paths:  # every round then reads from the page cache
        path.read_bytes()
    print(f"{len(paths)} photos from {args.dataset}, batch {args.batch_size}, {os.cpu_count()} CPUs, "
          f"TF {tf.__version__}, {args.rounds} rounds interleaved; load average at start "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    encoders = [build_encoder(name, "imagenet") for name in args.encoders]
    results = time_encoders(encoders, paths, args)
    print("\nextraction, grid features (median of rounds; CPU = process CPU time over all threads)")
    print(f"{'encoder':<20} {'input':>5} {'grid':>5} | {'pipeline CPU ms/photo':>21} {'photos/s':>8} | "
          f"{'bare CNN CPU ms/photo':>21} {'photos/s':>8}")
    for encoder in encoders:
        row = [f"{encoder.name:<20} {encoder.input_size:>5} {encoder.grid_size:>2}x{encoder.grid_size:<2}"]
        for method in ("pipeline", "bare"):
            wall = float(np.median([w for w, _ in results[encoder.name][method]]))
            cpu = float(np.median([c for _, c in results[encoder.name][method]]))
            row.append(f"{cpu / len(paths) * 1000:>21.1f} {len(paths) / wall:>8.1f}")
        print(" | ".join(row), flush=True)
    print(f"load average at end {os.getloadavg()[0]:.1f}")

    with tempfile.TemporaryDirectory() as folder:
        cc0 = skimage_photos(Path(folder))
        coco = coco_labels(dataset)
        counts = {}
        for _, _, words in coco:
            for word in words:
                counts[word] = counts.get(word, 0) + 1
        print(f"\nImageNet top-1 / top-5 on labelled photos: 2 CC0 photos (chelsea -> cat 281-285, "
              f"coffee -> espresso 967) and {len(coco)} coco-mini photos labelled from their captions "
              f"({', '.join(f'{w} {n}' for w, n in sorted(counts.items(), key=lambda x: -x[1]))})")
        for name in args.encoders:
            classifier = efficientnet_lite.build_classifier(name)
            size = lite_weights.VARIANTS[name].input_size
            cc0_top1, _ = top_k_hits(classifier, size, cc0, args.batch_size)
            top1, top5 = top_k_hits(classifier, size, coco, args.batch_size)
            print(f"{name:<20} CC0 top-1 {int(cc0_top1.sum())}/2 | coco-mini weak labels: top-1 "
                  f"{int(top1.sum())}/{len(coco)} ({top1.mean():.0%}), top-5 {int(top5.sum())}/{len(coco)} "
                  f"({top5.mean():.0%})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
