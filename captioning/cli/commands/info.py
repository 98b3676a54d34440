"""``info``: summarise a dataset (counts, caption lengths, split, vocabulary, skipped items) and/or
a model bundle. Quick by design: nothing here imports TensorFlow.
"""

from __future__ import annotations

import argparse
import sys

from captioning.bundles.default_model import choose_model, model_line
from captioning.bundles.store import describe_bundle
from captioning.cli.runtime import EXIT_OK, EXIT_USAGE
from captioning.data.datasets import load_dataset
from captioning.data.summary import describe_dataset
from captioning.tags.support import tag_support


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
        choice = choose_model(args.model)
        model = choice.path
        print(model_line(model))
        if choice.note:
            print(f"note: {choice.note}")
    if args.dataset:
        print(describe_dataset(load_dataset(args.dataset)))
    if model is not None:
        if args.dataset:
            print()
        print(describe_bundle(model))
        print(tag_support(model).describe())
    return EXIT_OK
