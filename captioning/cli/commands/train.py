"""``train``: extract features (cached), build the vocabulary, train the decoder, save a bundle."""

from __future__ import annotations

import argparse

from captioning.bundles import default_model
from captioning.cli.runtime import EXIT_INTERRUPTED, EXIT_OK, import_tensorflow


def run(args: argparse.Namespace) -> int:
    """Train with the parsed options and report where the bundle went.

    Args:
        args: parsed ``train`` options. ``make_default``: a finished run's bundle becomes the
            model used when no --model is given (``bundles.default_model``); without it the default stays.

    Returns:
        0 when training finished, 130 when Ctrl-C stopped it (after saving what it could).
    """
    from captioning.training.pipeline import TrainOptions, train_model

    # TensorFlow is imported once the output folder is checked and locked.
    result = train_model(TrainOptions.from_args(args), before_tensorflow=import_tensorflow)
    if result.interrupted:
        if args.make_default and result.bundle_dir is not None:
            print("note: not made the default model, as training did not finish; resume it with "
                  "--resume --make-default")
        return EXIT_INTERRUPTED
    best = f"{result.best_val_loss:.4f}" if result.best_val_loss is not None else "n/a (no validation images)"
    # A multi-worker run's workers other than the chief write no bundle.
    where = f"bundle {result.bundle_dir}" if result.bundle_dir is not None else "the chief wrote the bundle"
    print(f"done: {result.epochs_run} epochs, best validation loss {best}; {where}")
    if args.make_default and result.bundle_dir is not None:
        default_model.set_default(result.bundle_dir, chosen_by="train --make-default")
        print(f"{result.bundle_dir} is now the default model for caption, evaluate and the menu")
    return EXIT_OK
