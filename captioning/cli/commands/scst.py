"""``scst``: fine-tune a trained bundle for CIDEr-D (self-critical sequence training), into a new bundle."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from captioning import config
from captioning.bundles import default_model
from captioning.bundles.default_model import choose_model, model_line
from captioning.cli.runtime import EXIT_INTERRUPTED, EXIT_OK, import_tensorflow


def run(args: argparse.Namespace) -> int:
    """Fine-tune with the parsed options and report where the bundle went.

    Args:
        args: parsed ``scst`` options (see ``cli.main``).

    Returns:
        0 when the run finished, 130 when Ctrl-C stopped it (after saving what it could).
    """
    from captioning.training.finetune import FineTuneOptions, finetune_bundle

    choice = choose_model(args.model)
    print(model_line(choice.path), flush=True)  # reads config.json: a broken bundle fails here
    settings = config.SelfCriticalConfig(
        epochs=args.epochs, learning_rate=args.learning_rate, samples_per_image=args.samples,
        images_per_batch=args.batch_images, monitor_images=args.monitor_images,
        monitor_beam_size=args.monitor_beam_size, patience=args.patience, seed=args.seed)
    options = FineTuneOptions(
        source=Path(choice.path), member=args.member, dataset=args.dataset,
        output=Path(args.output) if args.output else None, settings=settings, limit=args.limit,
        resume=args.resume, progress=sys.stderr.isatty())
    result = finetune_bundle(options, log=lambda line: print(line, flush=True), before_tensorflow=import_tensorflow)
    if result.interrupted:
        return EXIT_INTERRUPTED
    if result.best_epoch == 0:
        print(f"done: no epoch beat the starting model (validation CIDEr-D {result.start_val_cider:.2f}); "
              f"{result.bundle_dir} holds the starting weights")
    else:
        print(f"done: validation CIDEr-D {result.start_val_cider:.2f} -> {result.best_val_cider:.2f} "
              f"(epoch {result.best_epoch} of {result.epochs_run}); bundle {result.bundle_dir}")
    if args.make_default and result.bundle_dir is not None:
        default_model.set_default(result.bundle_dir, chosen_by="scst --make-default")
        print(f"{result.bundle_dir} is now the default model for caption, evaluate and the menu")
    return EXIT_OK
