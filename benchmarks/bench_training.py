"""Training speed and peak memory: this project's trainer vs the tutorials' per-prefix generator.

Both sides train the same merge decoder (same sizes, vocabulary and cached EfficientNet-Lite0
features of Flickr8k's training images) for one pass over every training caption:

* ours: teacher forcing over whole captions (``captioning.training.fit``): one example per
  caption, integer targets, loss masked on padding, batches of similar lengths trimmed of
  padding, tf.data gathering feature rows per batch (default batch size; timed without the
  validation pass, which the tutorial side does not have either).
* tutorial: every caption expanded into all its prefixes, one-hot targets over the vocabulary,
  ``LSTM(return_sequences=False)`` on the padded prefix, ``model.fit`` on a Python generator
  yielding the prefixes of 3 photos' captions per step (as the common Kaggle notebooks do).
  It runs a fixed number of steps and is extrapolated to a full epoch (printed as such).

Each side runs in its own subprocess so its peak RSS (``ru_maxrss``) is its own. Both wall-clock
and CPU seconds (user + system, all threads) are printed: on a machine shared with other work the
wall-clock ratio swings with the load while the sides run one after the other, the CPU-time ratio
much less.

``--decoder attention`` times our attention decoder (grid features) instead; the tutorial side is
always the per-prefix merge model, so that ratio compares architectures as well as trainers.
``--precision`` is our side's compute dtype (``train --precision``; default: the tool's default).

    python -m benchmarks.bench_training [--dataset ../shared/datasets/flickr8k] [--naive-steps 60]

Needs the feature cache: ``python image_captioning.py extract --dataset ../shared/datasets/flickr8k
--encoder efficientnet_lite0`` (``--grid`` as well for the attention decoder).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_DATASET = PROJECT_ROOT.parent / "shared" / "datasets" / "flickr8k"
ENCODER, WEIGHTS_ID = "efficientnet_lite0", "imagenet"
PHOTOS_PER_STEP = 3  # the tutorials' num_photos_per_batch


def cpu_seconds() -> float:
    """User + system CPU seconds this process has used, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def prepare(dataset_path: str, kind: str = "pooled"):
    """Split, vocabulary, max length and cached features, exactly as ``train`` builds them."""
    from captioning import config
    from captioning.data.datasets import load_dataset, split_dataset
    from captioning.data.text import Vocabulary, choose_max_length, tokenize
    from captioning.features.cache import load_features
    from captioning.training.fit import TrainingData
    from captioning.training.pipeline import _caption_rows

    dataset = load_dataset(dataset_path)
    split = split_dataset(dataset.images, config.SplitConfig())
    captions = [c for image in split.train for c in image.captions]
    vocab = Vocabulary.build(captions, config.VocabConfig.min_count)
    max_length = choose_max_length([len(tokenize(c)) for c in captions], config.VocabConfig.length_percentile)
    images = split.train + split.val
    features = load_features(dataset, ENCODER, WEIGHTS_ID, kind, [i.path for i in images])
    train_rows, train_tokens = _caption_rows(split.train, vocab, max_length, 0)
    val_rows, val_tokens = _caption_rows(split.val, vocab, max_length, len(split.train))
    return TrainingData(features, train_rows, train_tokens, val_rows, val_tokens), vocab, max_length


def run_ours(dataset_path: str, epochs: int, decoder: str, precision: str) -> dict:
    """Train ``epochs`` epochs with the project's trainer; wall and CPU seconds of each epoch."""
    import tempfile

    import keras

    from captioning import config
    from captioning.models import build_decoder
    from captioning.training import fit
    from captioning.training.precision import compute_precision, resolve_precision

    decoder_config = config.DecoderConfig(kind=decoder)
    data, vocab, max_length = prepare(dataset_path, decoder_config.feature_kind)
    # Training time only, as on the tutorial side: no validation pass.
    data = dataclasses.replace(data, val_rows=data.val_rows[:0], val_tokens=data.val_tokens[:0])
    keras.utils.set_random_seed(1)
    resolved = resolve_precision(precision)
    with compute_precision(resolved):  # as ``train`` builds it
        model = build_decoder(len(vocab), max_length, data.features.shape[1:], decoder_config)
        fit.compile_model(model, 1e-3)
    train_config = config.TrainConfig(epochs=epochs, early_stopping_patience=epochs + 1)
    cpu_marks = [cpu_seconds()]

    def mark_epoch(line: str) -> None:  # fit logs "epoch N/M: ..." just after each epoch's checkpoint
        if line.startswith("epoch "):
            cpu_marks.append(cpu_seconds())

    with tempfile.TemporaryDirectory() as folder:
        result = fit.fit(model, data, train_config, Path(folder), {}, log=mark_epoch)
    cpu = [round(b - a, 2) for a, b in zip(cpu_marks, cpu_marks[1:], strict=False)]
    return {"epoch_seconds": result.history["seconds"], "epoch_cpu_seconds": cpu, "captions": len(data.train_rows),
            "loss": result.history["loss"], "vocab": len(vocab), "max_length": max_length,
            "precision": resolved, "decoder": decoder}


def build_naive_model(vocab_size: int, max_length: int, feature_dim: int):
    """The tutorials' per-prefix merge model: prefix -> LSTM -> add image -> softmax."""
    import keras
    from keras import layers

    features = keras.Input(shape=(feature_dim,))
    image = layers.Dense(256, activation="relu")(layers.Dropout(0.5)(features))
    prefix = keras.Input(shape=(max_length - 1,))
    words = layers.Embedding(vocab_size, 256, mask_zero=True)(prefix)
    sequence = layers.LSTM(256)(layers.Dropout(0.5)(words))
    hidden = layers.Dense(256, activation="relu")(layers.add([image, sequence]))
    output = layers.Dense(vocab_size, activation="softmax")(hidden)
    model = keras.Model([features, prefix], output)
    model.compile(loss="categorical_crossentropy", optimizer="adam")
    return model


def naive_generator(data, vocab_size: int, max_length: int):
    """Yield every prefix of every caption of a few photos, with one-hot next-word targets."""
    import numpy as np

    order = np.unique(data.train_rows)
    while True:
        for start in range(0, len(order), PHOTOS_PER_STEP):
            photos, prefixes, targets = [], [], []
            for row in order[start:start + PHOTOS_PER_STEP]:
                for tokens in data.train_tokens[data.train_rows == row]:
                    length = int((tokens != 0).sum())
                    for t in range(1, length):
                        prefix = np.zeros(max_length - 1, dtype=np.int32)
                        prefix[-t:] = tokens[:t]  # pre-padded, as pad_sequences does
                        target = np.zeros(vocab_size, dtype=np.float32)
                        target[tokens[t]] = 1.0
                        photos.append(data.features[row].astype(np.float32))
                        prefixes.append(prefix)
                        targets.append(target)
            yield (np.array(photos), np.array(prefixes)), np.array(targets)


def run_naive(dataset_path: str, steps: int, warmup: int) -> dict:
    """Time ``steps`` generator steps after ``warmup`` and extrapolate to one epoch."""
    import numpy as np

    data, vocab, max_length = prepare(dataset_path)
    model = build_naive_model(len(vocab), max_length, data.features.shape[1])
    steps_per_epoch = math.ceil(len(np.unique(data.train_rows)) / PHOTOS_PER_STEP)
    model.fit(naive_generator(data, len(vocab), max_length), steps_per_epoch=warmup, epochs=1, verbose=0)
    started, cpu_started = time.perf_counter(), cpu_seconds()
    model.fit(naive_generator(data, len(vocab), max_length), steps_per_epoch=steps, epochs=1, verbose=0)
    per_step = (time.perf_counter() - started) / steps
    cpu_per_step = (cpu_seconds() - cpu_started) / steps
    samples = int(((data.train_tokens != 0).sum(axis=1) - 1).sum())
    return {"epoch_seconds": [per_step * steps_per_epoch], "epoch_cpu_seconds": [cpu_per_step * steps_per_epoch],
            "steps_timed": steps,
            "steps_per_epoch": steps_per_epoch, "prefix_samples": samples}


def child(args) -> None:
    if args.side == "ours":
        result = run_ours(args.dataset, args.epochs, args.decoder, args.precision)
    else:
        result = run_naive(args.dataset, args.naive_steps, args.warmup)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def run_side(side: str, args) -> dict:
    command = [sys.executable, "-m", "benchmarks.bench_training", "--side", side, "--dataset", args.dataset, "--epochs", str(args.epochs),
               "--naive-steps", str(args.naive_steps), "--warmup", str(args.warmup), "--decoder", args.decoder,
               "--precision", args.precision]
    done = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.exit(f"{side} side failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    from captioning import config

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default=str(DEFAULT_DATASET), help="default: %(default)s")
    parser.add_argument("--epochs", type=int, default=2, help="our epochs (the last one is compared; default: %(default)s)")
    parser.add_argument("--naive-steps", type=int, default=60, help="timed tutorial steps (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed tutorial steps first (default: %(default)s)")
    parser.add_argument("--decoder", choices=config.DECODER_KINDS, default=config.DecoderConfig.kind,
                        help="our decoder (default: %(default)s)")
    parser.add_argument("--precision", choices=config.TRAINING_PRECISIONS, default=config.DEFAULT_PRECISION,
                        help="our compute dtype, as train --precision (default: %(default)s)")
    parser.add_argument("--side", choices=("ours", "naive"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        child(args)
        return
    from captioning.errors import CaptioningError

    try:  # fail early, with the extract hint, when the cache is missing
        prepare(args.dataset, config.DecoderConfig(kind=args.decoder).feature_kind)
    except CaptioningError as error:
        sys.exit(f"error: {error}")
    ours, naive = run_side("ours", args), run_side("naive", args)
    ours_epoch, naive_epoch = ours["epoch_seconds"][-1], naive["epoch_seconds"][0]
    ours_cpu, naive_cpu = ours["epoch_cpu_seconds"][-1], naive["epoch_cpu_seconds"][0]
    print(f"{Path(args.dataset).name} training captions: {ours['captions']} ({naive['prefix_samples']} prefix samples for "
          f"the tutorial), vocabulary {ours['vocab']}, max length {ours['max_length']}")
    print(f"ours ({ours['decoder']}, {ours['precision']}): {ours_epoch:8.1f} s/epoch, {ours_cpu:8.1f} CPU s/epoch "
          f"(epoch {len(ours['epoch_seconds'])}; first epoch {ours['epoch_seconds'][0]:.1f} s incl. tracing), "
          f"peak RSS {ours['peak_rss_mb']:.0f} MB")
    print(f"tutorial (merge, float32): {naive_epoch:8.1f} s/epoch, {naive_cpu:8.1f} CPU s/epoch (extrapolated from "
          f"{naive['steps_timed']} of {naive['steps_per_epoch']} steps), peak RSS {naive['peak_rss_mb']:.0f} MB")
    print(f"speed-up: {naive_epoch / ours_epoch:.1f}x per epoch wall-clock, {naive_cpu / ours_cpu:.1f}x in CPU time "
          f"(target >= 10x); peak memory ours/tutorial: {ours['peak_rss_mb'] / naive['peak_rss_mb']:.2f} "
          f"(ours {ours['peak_rss_mb'] / 1024:.2f} GB, target <= 3 GB)")


if __name__ == "__main__":
    main()
