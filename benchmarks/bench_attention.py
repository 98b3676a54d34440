"""Attention vs merge decoder, side by side in one run: training time per epoch and caption latency.

    python -m benchmarks.bench_attention [--dataset ../shared/datasets/flickr8k]
        [--encoder efficientnet_lite0] [--steps 40] [--batch-size 64] [--beam-size 5]

Uses the dataset's real vocabulary, caption length and caption count, and the cached pooled/grid
features under data/features/ when they are there (``python image_captioning.py extract
--dataset ... --encoder ... [--grid]``); otherwise random features of the right shape (timings do
not depend on the feature values), and it says so. The epoch time is extrapolated from ``--steps``
timed training steps after a warm-up (tracing excluded). Latency is the decoder alone on one image
at a time (the CNN costs the same for both kinds), with untrained weights, so every caption runs to
the maximum length: an upper bound on a trained model's latency.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from captioning import config
from captioning.errors import CaptioningError

FEATURE_DIMS = {"efficientnet_lite0": 1280, "resnet50": 2048}
DEFAULT_DATASET = config.PROJECT_ROOT.parent / "shared" / "datasets" / "flickr8k"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--encoder", choices=config.ENCODER_NAMES, default="efficientnet_lite0")
    parser.add_argument("--steps", type=int, default=40, help="timed training steps per decoder")
    parser.add_argument("--batch-size", type=int, default=config.TrainConfig.batch_size)
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--images", type=int, default=10, help="images captioned for latency")
    parser.add_argument("--units", type=int, default=None, help="override DecoderConfig.units")
    parser.add_argument("--feature-dim", type=int, default=None,
                        help="override DecoderConfig.attention_feature_dim")
    return parser.parse_args()


def load_captions(dataset_path: Path):
    """Real training captions -> (dataset, train images, vocab, max_length, tokens, rows)."""
    from captioning.data.datasets import load_dataset, split_dataset
    from captioning.data.text import Vocabulary, choose_max_length, tokenize

    dataset = load_dataset(dataset_path)
    train = split_dataset(dataset.images, config.SplitConfig()).train
    captions = [caption for image in train for caption in image.captions]
    rows = np.array([i for i, image in enumerate(train) for _ in image.captions], dtype=np.int64)
    vocab_config = config.VocabConfig()
    vocab = Vocabulary.build(captions, vocab_config.min_count, vocab_config.max_size)
    max_length = choose_max_length([len(tokenize(c)) for c in captions], vocab_config.length_percentile)
    return dataset, train, vocab, max_length, vocab.encode_batch(captions, max_length), rows


def cached_or_random(dataset, train, encoder_name: str, kind: str, shape: tuple[int, ...]):
    """(features float16 (N, *shape), where they came from)."""
    if dataset is not None:
        try:
            from captioning.encoders import build_encoder
            from captioning.features.cache import load_features

            encoder = build_encoder(encoder_name)
            features = load_features(dataset, encoder.name, encoder.weights_id, kind,
                                     [image.path for image in train])
            return np.asarray(features), f"cached {kind} features"
        except CaptioningError as error:
            reason = str(error).split(";")[0]
            print(f"  note: no cached {kind} features ({reason}); using random ones")
    rng = np.random.default_rng(0)
    count = len(train) if train is not None else 6000
    return rng.random((count, *shape), dtype=np.float32).astype(np.float16), f"random {kind} features"


def time_training(kind: str, features, rows, tokens, vocab_size: int, max_length: int,
                  decoder_config, args) -> tuple[float, object]:
    """Seconds per training step (after warm-up) and the trained-for-a-bit model."""
    from captioning import models
    from captioning.training import fit

    model = models.build_decoder(vocab_size, max_length, features.shape[1:], decoder_config)
    fit.compile_model(model, config.TrainConfig.learning_rate)
    # Batches as train makes them (merge: similar lengths, padding cut). float32, the dtype
    # time_captioning then captions in, for both decoders.
    data = fit.make_dataset(features, rows, tokens, args.batch_size, shuffle_seed=0, trim=fit.accepts_any_length(model))
    warmup = 3
    model.fit(data.take(warmup), epochs=1, verbose=0)  # traces the graph
    started = time.perf_counter()
    model.fit(data.skip(warmup).take(args.steps), epochs=1, verbose=0)
    return (time.perf_counter() - started) / args.steps, model


def time_captioning(model, decoder_config, features, max_length: int, args) -> float:
    """Median seconds to beam-search one image's caption (decoder only)."""
    from captioning import models
    from captioning.inference import search as decoding

    step_decoder = models.make_step_decoder(model, decoder_config)
    decoding.beam_search(step_decoder, features[:1], args.beam_size, max_length)  # warm-up
    times = []
    for i in range(1, args.images + 1):
        started = time.perf_counter()
        decoding.beam_search(step_decoder, features[i:i + 1], args.beam_size, max_length)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def main() -> int:
    args = parse_args()
    dataset = train = None
    if args.dataset.is_dir():
        dataset, train, vocab, max_length, tokens, rows = load_captions(args.dataset)
        vocab_size, source = len(vocab), f"{args.dataset.name} captions"
    else:
        print(f"note: {args.dataset} not found: random captions of Flickr8k's size")
        rng = np.random.default_rng(0)
        vocab_size, max_length = 2900, 22
        rows = np.repeat(np.arange(6000), 5)
        tokens = rng.integers(4, vocab_size, (len(rows), max_length)).astype(np.int32)
        tokens[:, 0], tokens[:, -1] = 2, 3
        source = "random captions"
    steps_per_epoch = int(np.ceil(len(rows) / args.batch_size))
    dim = FEATURE_DIMS[args.encoder]
    print(f"{source}: {len(rows)} training captions, vocab {vocab_size}, max_length {max_length}, "
          f"batch {args.batch_size} -> {steps_per_epoch} steps/epoch; beam {args.beam_size}")

    base = config.DecoderConfig()
    if args.units:
        base = replace(base, units=args.units)
    if args.feature_dim:
        base = replace(base, attention_feature_dim=args.feature_dim)
    results = {}
    for kind, feature_kind, shape in (("merge", "pooled", (dim,)), ("attention", "grid", (7, 7, dim))):
        features, origin = cached_or_random(dataset, train, args.encoder, feature_kind, shape)
        decoder_config = replace(base, kind=kind)
        step_seconds, model = time_training(kind, features, rows, tokens, vocab_size, max_length,
                                            decoder_config, args)
        latency = time_captioning(model, decoder_config, features, max_length, args)
        results[kind] = (step_seconds, latency)
        print(f"{kind:9s} ({origin}, {model.count_params():,} params): "
              f"{step_seconds * 1000:.0f} ms/step -> {step_seconds * steps_per_epoch / 60:.1f} min/epoch; "
              f"caption latency {latency * 1000:.0f} ms/image (decoder, beam {args.beam_size})")
    (merge_step, merge_latency), (att_step, att_latency) = results["merge"], results["attention"]
    print(f"attention / merge: training {att_step / merge_step:.1f}x, "
          f"caption latency {att_latency / merge_latency:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
