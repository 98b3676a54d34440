"""Feature-extraction throughput, measured side by side in one run on the same real photos.

For each encoder it times
  (a) the pipeline: ``features.extract_features`` (tf.data parallel decode + resize through
      ``images.load_image``, batching, prefetch overlapped with the CNN, shards written to a
      temporary cache),
  (b) the naive tutorial loop: per image ``keras.utils.load_img`` + ``img_to_array`` +
      ``model.predict(x[None])`` (on a subset, reported per image: it is slow),
  (c) the bare CNN: the same compiled call over uint8 batches already in memory (no decoding),
and prints images/s of each with the ratios pipeline/naive and pipeline/bare, plus peak RSS.
The three are timed in turn for ``--rounds`` rounds and each keeps its best round, so load from
other processes on a shared machine hits them alike instead of skewing one.

ResNet50 runs with random weights (``none``): its ImageNet weights cannot be downloaded in this
workplace, and the weights do not change the arithmetic. efficientnet_lite0 uses its real weights.

    python benchmarks/bench_extraction.py [--dataset DIR] [--images 256] [--naive-images 32]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from captioning import config, features  # noqa: E402
from captioning.datasets import load_dataset  # noqa: E402
from captioning.images import load_image  # noqa: E402

DEFAULT_DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "coco-mini"
DEFAULT_ENCODERS = ("efficientnet_lite0:imagenet", "resnet50:none")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET,
                        help="dataset folder (default: %(default)s)")
    parser.add_argument("--images", type=int, default=256, help="photos timed (default: %(default)s)")
    parser.add_argument("--naive-images", type=int, default=32,
                        help="photos for the slow naive loop (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="interleaved rounds; each method keeps its best (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="(default: %(default)s)")
    parser.add_argument("--encoders", nargs="+", default=DEFAULT_ENCODERS, metavar="NAME:WEIGHTS",
                        help="(default: %(default)s)")
    parser.add_argument("--intra-op", type=int, default=0, help="TF intra-op threads (0: TF's choice)")
    parser.add_argument("--inter-op", type=int, default=0, help="TF inter-op threads (0: TF's choice)")
    return parser.parse_args()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def time_pipeline(dataset, encoder, paths, batch_size) -> float:
    """(a) images/s of extract_features into a fresh temporary cache (compiled graph pre-traced)."""
    features.encode_paths(encoder, paths[:2], "pooled", batch_size)  # trace once, as a long run would
    with tempfile.TemporaryDirectory() as cache:
        config.FEATURE_CACHE_DIR = Path(cache)
        start = time.perf_counter()
        report = features.extract_features(dataset, encoder, "pooled", paths, batch_size, progress=False)
        elapsed = time.perf_counter() - start
    assert report.computed == len(paths), report.failed
    return len(paths) / elapsed


def time_naive(encoder, paths) -> float:
    """(b) the tutorial loop, one image at a time through model.predict."""
    import keras

    def one(path):
        image = keras.utils.load_img(path, target_size=(encoder.input_size,) * 2, interpolation="bilinear")
        x = keras.utils.img_to_array(image)  # (224, 224, 3) float32 0..255; preprocessing is in the model
        return encoder.pooled_model.predict(x[None], verbose=0)

    one(paths[0])  # warm-up
    start = time.perf_counter()
    for path in paths:
        one(path)
    return len(paths) / (time.perf_counter() - start)


def in_memory_batches(encoder, paths, batch_size) -> list:
    """All photos decoded up front, as uint8 tensors ``(batch, 224, 224, 3)``."""
    import tensorflow as tf

    pixels = np.stack([load_image(p, encoder.input_size) for p in paths])  # (N, 224, 224, 3) uint8
    batches = [tf.constant(pixels[i:i + batch_size]) for i in range(0, len(pixels), batch_size)]
    return batches


def time_bare(encoder, batches, count) -> float:
    """(c) the same compiled CNN call over uint8 batches already in memory."""
    infer = features._compiled_inference(encoder.pooled_model, encoder.input_size)
    infer(batches[0]).numpy()  # warm-up
    start = time.perf_counter()
    for batch in batches:
        infer(batch).numpy()
    return count / (time.perf_counter() - start)


def bench_encoder(spec: str, dataset, paths, args) -> None:
    """Time (a), (b) and (c) for one ``NAME:WEIGHTS`` encoder and print one line."""
    from captioning.encoders import build_encoder

    name, weights = spec.split(":")
    encoder = build_encoder(name, weights)
    best = {"pipeline": 0.0, "naive": 0.0, "bare": 0.0}
    rss_pipeline = None
    for _ in range(args.rounds):
        best["pipeline"] = max(best["pipeline"], time_pipeline(dataset, encoder, paths, args.batch_size))
        rss_pipeline = rss_pipeline or peak_rss_mb()  # before any whole-dataset pixel array exists
        best["naive"] = max(best["naive"], time_naive(encoder, paths[: args.naive_images]))
        batches = in_memory_batches(encoder, paths, args.batch_size)
        best["bare"] = max(best["bare"], time_bare(encoder, batches, len(paths)))
        del batches
    pipeline, naive, bare = best["pipeline"], best["naive"], best["bare"]
    print(f"{name} (weights {weights}): pipeline {pipeline:.1f} img/s, naive {naive:.1f} img/s, "
          f"bare CNN {bare:.1f} img/s | pipeline/naive {pipeline / naive:.2f}x, "
          f"pipeline/bare {pipeline / bare:.0%} | peak RSS after pipeline {rss_pipeline:.0f} MB",
          flush=True)


def main() -> int:
    args = parse_args()
    import tensorflow as tf

    if args.intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op)
    if args.inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)
    dataset = load_dataset(args.dataset)
    paths = [image.path for image in dataset.images[: args.images]]
    for path in paths:  # every method then reads from the page cache
        path.read_bytes()
    print(f"{len(paths)} photos from {args.dataset}, batch {args.batch_size}, "
          f"{os.cpu_count()} CPUs, TF {tf.__version__}, devices: "
          f"{[d.device_type for d in tf.config.list_logical_devices()]}")
    print(f"naive loop on the first {min(args.naive_images, len(paths))} photos, reported per image")
    print(f"best of {args.rounds} interleaved rounds each")
    for spec in args.encoders:
        bench_encoder(spec, dataset, paths, args)
    print(f"peak RSS at the end (bare CNN holds all pixels in memory): {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
