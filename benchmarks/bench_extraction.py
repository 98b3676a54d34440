"""Feature-extraction throughput, measured side by side in one run on the same real photos.

For each encoder it times
  (a) the pipeline: ``features.extract_features`` (tf.data parallel decode + resize through
      ``images.load_image``, batching, prefetch overlapped with the CNN, shards written to a
      temporary cache),
  (b) the naive tutorial loop: per image ``keras.utils.load_img`` + ``img_to_array`` +
      ``model.predict(x[None])`` (on a subset, reported per image: it is slow),
  (c) the bare CNN: the same compiled call over uint8 batches already in memory (no decoding),
and prints images/s of each with the ratios pipeline/naive and pipeline/bare, plus peak RSS.
The three take turns slice by slice (pipeline, bare, then a few naive) for several rounds, so
load from other processes on a shared machine hits them alike instead of skewing one. Each
pipeline run writes a fresh temporary cache, so no round reuses another's rows. Peak RSS stays
flat: the bare CNN holds one slice of pixels at a time.

ResNet50 runs with random weights (``none``): its ImageNet weights cannot be downloaded in this
workplace, and the weights do not change the arithmetic. efficientnet_lite0 uses its real weights.

    python -m benchmarks.bench_extraction [--dataset DIR] [--images 442] [--naive-images 32] [--rounds 3]
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

import numpy as np

from captioning import config
from captioning.data.datasets import load_dataset
from captioning.data.images import load_image
from captioning.features import extraction as features

DEFAULT_DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "coco-mini"
DEFAULT_ENCODERS = ("efficientnet_lite0:imagenet", "resnet50:none")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET,
                        help="dataset folder (default: %(default)s)")
    parser.add_argument("--images", type=int, default=442, help="photos timed (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="times every method runs over the photos (default: %(default)s)")
    parser.add_argument("--naive-images", type=int, default=32,
                        help="photos for the slow naive loop (default: %(default)s)")
    # A real extraction is one pipeline over thousands of photos; small slices would mostly time
    # the pipeline filling up and draining.
    parser.add_argument("--slice", type=int, default=442,
                        help="photos per interleaved slice (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="(default: %(default)s)")
    parser.add_argument("--encoders", nargs="+", default=DEFAULT_ENCODERS, metavar="NAME:WEIGHTS",
                        help="(default: %(default)s)")
    parser.add_argument("--intra-op", type=int, default=0, help="TF intra-op threads (0: TF's choice)")
    parser.add_argument("--inter-op", type=int, default=0, help="TF inter-op threads (0: TF's choice)")
    return parser.parse_args()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def timed(run) -> tuple[float, float]:
    """(wall seconds, process CPU seconds over all threads) of ``run()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def time_pipeline(dataset, encoder, paths, batch_size) -> tuple[float, float]:
    """(a) extract_features over ``paths`` into a fresh temporary cache."""
    def run():
        with tempfile.TemporaryDirectory() as cache:
            config.FEATURE_CACHE_DIR = Path(cache)
            report = features.extract_features(dataset, encoder, "pooled", paths, batch_size, progress=False)
        assert report.computed == len(paths), report.failed

    return timed(run)


def time_naive(encoder, paths) -> float:
    """(b) seconds for the tutorial loop, one image at a time through model.predict."""
    import keras

    start = time.perf_counter()
    for path in paths:
        image = keras.utils.load_img(path, target_size=(encoder.input_size,) * 2, interpolation="bilinear")
        x = keras.utils.img_to_array(image)  # (224, 224, 3) float32 0..255; preprocessing is in the model
        encoder.pooled_model.predict(x[None], verbose=0)
    return time.perf_counter() - start


def time_bare(dataset, encoder, paths, batch_size) -> tuple[float, float]:
    """(c) the same compiled CNN call over uint8 batches already in memory (decoding untimed)."""
    import tensorflow as tf

    pixels = np.stack([load_image(p, encoder.input_size) for p in paths])  # (n, 224, 224, 3) uint8
    batches = [tf.constant(pixels[i:i + batch_size]) for i in range(0, len(pixels), batch_size)]
    return timed(lambda: [encoder.encode(batch, "pooled") for batch in batches])


def bench_encoder(spec: str, dataset, paths, args) -> None:
    """Time (a), (b) and (c) for one ``NAME:WEIGHTS`` encoder, interleaved by slices; print one line.

    Each slice of ``--slice`` photos goes through the pipeline, then the bare CNN, then its share
    of the naive loop, so a burst of load from other processes lands on all three alike.
    """
    from captioning.encoders import build_encoder

    name, weights = spec.split(":")
    encoder = build_encoder(name, weights)
    features.encode_paths(encoder, paths[:2], "pooled", args.batch_size)  # trace once, untimed
    encoder.pooled_model.predict(np.zeros((1, encoder.input_size, encoder.input_size, 3)), verbose=0)
    slices = [paths[i:i + args.slice] for i in range(0, len(paths), args.slice)] * args.rounds
    naive_share = max(1, args.naive_images // len(slices))
    seconds = {"pipeline": 0.0, "naive": 0.0, "bare": 0.0}
    cpu = {"pipeline": 0.0, "bare": 0.0}  # process CPU seconds, all threads: robust to other load
    naive_count = 0
    for part in slices:
        for method, timer in (("pipeline", time_pipeline), ("bare", time_bare)):
            wall, cpu_seconds = timer(dataset, encoder, part, args.batch_size)
            seconds[method] += wall
            cpu[method] += cpu_seconds
        seconds["naive"] += time_naive(encoder, part[:naive_share])
        naive_count += len(part[:naive_share])
    timed_images = len(paths) * args.rounds
    pipeline, bare = timed_images / seconds["pipeline"], timed_images / seconds["bare"]
    naive = naive_count / seconds["naive"]
    print(f"{name} (weights {weights}): pipeline {pipeline:.1f} img/s, naive {naive:.1f} img/s "
          f"({naive_count} photos), bare CNN {bare:.1f} img/s | pipeline/naive {pipeline / naive:.2f}x, "
          f"pipeline/bare {pipeline / bare:.0%} | CPU ms/image: pipeline "
          f"{cpu['pipeline'] / timed_images * 1000:.1f}, bare {cpu['bare'] / timed_images * 1000:.1f} "
          f"| load average now {os.getloadavg()[0]:.1f}", flush=True)


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
    print(f"naive loop on about {args.naive_images} of them (a share of each slice), reported per image")
    print(f"interleaved in slices of {args.slice}, {args.rounds} rounds; "
          f"load average at start {os.getloadavg()[0]:.1f}")
    for spec in args.encoders:
        bench_encoder(spec, dataset, paths, args)
    print(f"peak RSS: {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
