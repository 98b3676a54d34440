"""A dataset summarised for a person: counts, caption lengths, the split, the vocabulary, what was skipped.

What ``info --dataset`` and the menu print; nothing here imports TensorFlow.
"""

from __future__ import annotations

import numpy as np

from captioning import config
from captioning.data.datasets import Dataset, split_dataset
from captioning.data.text import Vocabulary, choose_max_length, tokenize

WORD_PERCENTILES = (50, 90, 95, 99)
_DEFAULT_SPLIT = config.SplitConfig()
_DEFAULT_VOCAB = config.VocabConfig()


def describe_dataset(dataset: Dataset, split_config: config.SplitConfig = _DEFAULT_SPLIT,
                     vocab_config: config.VocabConfig = _DEFAULT_VOCAB) -> str:
    """A multi-line summary of a loaded dataset, as ``info`` and the menu print it.

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


__all__ = ["describe_dataset"]
