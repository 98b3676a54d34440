"""``info``: summarise a dataset (counts, caption lengths, split, vocabulary, skipped items) and/or
a model bundle. Quick by design: nothing here imports TensorFlow.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from captioning import config
from captioning.cli.runtime import EXIT_OK, EXIT_USAGE
from captioning.data.datasets import Dataset, load_dataset, split_dataset
from captioning.data.text import Vocabulary, choose_max_length, tokenize
from captioning.errors import CaptioningError

WORD_PERCENTILES = (50, 90, 95, 99)


def run(args: argparse.Namespace) -> int:
    """Print the dataset summary and/or the bundle description.

    Args:
        args: Parsed ``info`` options: ``dataset`` (``mini-coco`` or a folder) and ``model`` (a
            bundle folder, ``""`` for the default model, None when not asked).

    Returns:
        0 when everything asked for was described, 2 when neither option was given. Unusable
        datasets raise ``DatasetError`` (exit 1 through ``cli.main.run_command``).
    """
    if not args.dataset and args.model is None:
        print("usage: image_captioning.py info --dataset mini-coco|PATH  and/or  --model [DIR]",
              file=sys.stderr)
        return EXIT_USAGE
    model = None
    if args.model is not None:  # the model line first, as every command that uses a model prints it
        from captioning.bundles import default_model as model_choice

        choice = model_choice.choose_model(args.model)
        model = choice.path
        print(model_choice.model_line(model))
        if choice.note:
            print(f"note: {choice.note}")
    if args.dataset:
        print(describe_dataset(load_dataset(args.dataset)))
    if model is not None:
        if args.dataset:
            print()
        print(_describe_model(model))
    return EXIT_OK


def describe_dataset(dataset: Dataset, split_config: config.SplitConfig = config.SplitConfig(),
                     vocab_config: config.VocabConfig = config.VocabConfig()) -> str:
    """A multi-line summary of a loaded dataset, as ``info`` prints it (the menu reuses it).

    Args:
        dataset: A loaded dataset.
        split_config: Split whose sizes are reported.
        vocab_config: Vocabulary settings applied to the training split.

    Returns:
        The summary text, without a trailing newline.
    """
    per_image = [len(image.captions) for image in dataset.images]
    words = [len(tokenize(c)) for image in dataset.images for c in image.captions]
    split = split_dataset(dataset.images, split_config)
    image_dir = dataset.images[0].path.parent
    rows = [
        ("layout", f"{dataset.layout} ({_inside(dataset, dataset.captions_file)} + "
                   f"{_inside(dataset, image_dir)}/)"),
        ("cache key", dataset.key),
        ("images", f"{len(dataset.images):,}"),
        ("captions", f"{dataset.num_captions:,} usable of {dataset.captions_read:,} read"),
        ("captions/image", f"min {min(per_image)}, mean {np.mean(per_image):.2f}, max {max(per_image)}"),
        ("caption words", ", ".join(f"p{p} {_percentile(words, p)}" for p in WORD_PERCENTILES)
                          + f", max {max(words)}"),
        (f"split (seed {split_config.seed})",
         f"train {len(split.train):,}, val {len(split.val):,}, test {len(split.test):,} images "
         f"(val {split_config.val_fraction:.0%}, test {split_config.test_fraction:.0%})"),
        *_vocabulary_rows(split.train, vocab_config),
    ]
    lines = [f"dataset: {dataset.source or dataset.root}"]
    lines += [f"  note: {note}" for note in dataset.notes]
    lines += [f"  {label + ':':<20}{value}" for label, value in rows]
    problems = dataset.problems.describe()
    lines.append(f"  {'skipped:':<20}{'nothing' if not problems else ''}".rstrip())
    lines += [f"    {line}" for line in problems]
    return "\n".join(lines)


def _vocabulary_rows(train, vocab_config: config.VocabConfig) -> list[tuple[str, str]]:
    captions = [c for image in train for c in image.captions]
    if not captions:
        return [("vocabulary", "n/a: the train split is empty (too few images)")]
    vocab = Vocabulary.build(captions, vocab_config.min_count, vocab_config.max_size)
    counts = [len(tokenize(c)) for c in captions]
    max_length = choose_max_length(counts, vocab_config.length_percentile)
    whole = np.mean([n + 2 <= max_length for n in counts])
    limit = "" if vocab_config.max_size is None else f", at most {vocab_config.max_size}"
    return [
        ("vocabulary", f"{len(vocab):,} tokens incl. 4 reserved (train words seen >= "
                       f"{vocab_config.min_count} times{limit})"),
        ("max caption length", f"{max_length} tokens with START/END (p{vocab_config.length_percentile:g} "
                               f"of train captions; {whole:.1%} fit untruncated)"),
    ]


def _percentile(values: list[int], percentile: float) -> int:
    return int(np.percentile(values, percentile, method="higher"))


def _inside(dataset: Dataset, path) -> str:
    """A path shown relative to the dataset root when it lies inside it."""
    try:
        return dataset.relative(path) or "."
    except ValueError:
        return str(path)


def _describe_model(path: str | Path) -> str:
    """Describe a model bundle with ``captioning.bundles.store.describe_bundle`` (imported lazily).

    Args:
        path: A model bundle folder.

    Returns:
        The bundle's description.

    Raises:
        CaptioningError: When this build has no bundle support yet.
    """
    try:
        from captioning.bundles.store import describe_bundle
    except ImportError as error:  # the module, or describe_bundle in it, is missing
        if error.name != "captioning.bundles.store":
            raise
        raise CaptioningError(f"cannot describe {path}: model bundle support (captioning/bundles/store.py) "
                              "is not part of this build; use info --dataset for datasets") from None
    return describe_bundle(path)
