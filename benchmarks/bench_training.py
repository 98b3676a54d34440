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

Each side runs in its own subprocess so its peak RSS (``ru_maxrss``) is its own.

    python -m benchmarks.bench_training [--dataset ../shared/datasets/flickr8k] [--naive-steps 60]

Needs the feature cache: ``python image_captioning.py extract --dataset ../shared/datasets/flickr8k
--encoder efficientnet_lite0``.
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


def prepare(dataset_path: str):
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
    features = load_features(dataset, ENCODER, WEIGHTS_ID, "pooled", [i.path for i in images])
    train_rows, train_tokens = _caption_rows(split.train, vocab, max_length, 0)
    val_rows, val_tokens = _caption_rows(split.val, vocab, max_length, len(split.train))
    return TrainingData(features, train_rows, train_tokens, val_rows, val_tokens), vocab, max_length


def run_ours(dataset_path: str, epochs: int) -> dict:
    """Train ``epochs`` epochs with the project's trainer; seconds of each epoch."""
    import tempfile

    import keras

    from captioning import config
    from captioning.models import build_decoder
    from captioning.training import fit

    data, vocab, max_length = prepare(dataset_path)
    # Training time only, as on the tutorial side: no validation pass.
    data = dataclasses.replace(data, val_rows=data.val_rows[:0], val_tokens=data.val_tokens[:0])
    keras.utils.set_random_seed(1)
    model = build_decoder(len(vocab), max_length, data.features.shape[1:],
                          config.DecoderConfig(kind="merge"))  # the tutorial loop it is compared with is merge
    fit.compile_model(model, 1e-3)
    train_config = config.TrainConfig(epochs=epochs, early_stopping_patience=epochs + 1)
    with tempfile.TemporaryDirectory() as folder:
        result = fit.fit(model, data, train_config, Path(folder), {}, log=lambda line: None)
    return {"epoch_seconds": result.history["seconds"], "captions": len(data.train_rows),
            "loss": result.history["loss"], "vocab": len(vocab), "max_length": max_length}


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
    started = time.perf_counter()
    model.fit(naive_generator(data, len(vocab), max_length), steps_per_epoch=steps, epochs=1, verbose=0)
    per_step = (time.perf_counter() - started) / steps
    samples = int(((data.train_tokens != 0).sum(axis=1) - 1).sum())
    return {"epoch_seconds": [per_step * steps_per_epoch], "steps_timed": steps,
            "steps_per_epoch": steps_per_epoch, "prefix_samples": samples}


def child(args) -> None:
    if args.side == "ours":
        result = run_ours(args.dataset, args.epochs)
    else:
        result = run_naive(args.dataset, args.naive_steps, args.warmup)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def run_side(side: str, args) -> dict:
    command = [sys.executable, "-m", "benchmarks.bench_training", "--side", side, "--dataset", args.dataset, "--epochs", str(args.epochs),
               "--naive-steps", str(args.naive_steps), "--warmup", str(args.warmup)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.exit(f"{side} side failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default=str(DEFAULT_DATASET))
    parser.add_argument("--epochs", type=int, default=2, help="our epochs (the last one is compared)")
    parser.add_argument("--naive-steps", type=int, default=60, help="timed tutorial steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed tutorial steps first")
    parser.add_argument("--side", choices=("ours", "naive"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        child(args)
        return
    from captioning.errors import CaptioningError

    try:
        prepare(args.dataset)  # fail early, with the extract hint, when the cache is missing
    except CaptioningError as error:
        sys.exit(f"error: {error}")
    ours, naive = run_side("ours", args), run_side("naive", args)
    ours_epoch, naive_epoch = ours["epoch_seconds"][-1], naive["epoch_seconds"][0]
    print(f"{Path(args.dataset).name} training captions: {ours['captions']} ({naive['prefix_samples']} prefix samples for "
          f"the tutorial), vocabulary {ours['vocab']}, max length {ours['max_length']}")
    print(f"ours:     {ours_epoch:8.1f} s/epoch (epoch {len(ours['epoch_seconds'])}; first epoch "
          f"{ours['epoch_seconds'][0]:.1f} s incl. tracing), peak RSS {ours['peak_rss_mb']:.0f} MB")
    print(f"tutorial: {naive_epoch:8.1f} s/epoch (extrapolated from {naive['steps_timed']} of "
          f"{naive['steps_per_epoch']} steps), peak RSS {naive['peak_rss_mb']:.0f} MB")
    print(f"speed-up: {naive_epoch / ours_epoch:.1f}x per epoch (target >= 10x); "
          f"peak memory ours/tutorial: {ours['peak_rss_mb'] / naive['peak_rss_mb']:.2f} "
          f"(ours {ours['peak_rss_mb'] / 1024:.2f} GB, target <= 3 GB)")


if __name__ == "__main__":
    main()
