"""``extract``: run the encoder over a dataset's images (or one worker's share) into the feature cache."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from captioning.cli.runtime import import_tensorflow
from captioning.data.datasets import load_dataset
from captioning.encoders.keras_weights import check_available
from captioning.features.sharding import parse_shard

if TYPE_CHECKING:
    from captioning.features.extraction import ExtractionReport


def run(args: argparse.Namespace) -> int:
    """Extract (or reuse) features for the dataset, or one worker's share of it, and print what was done.

    Args:
        args: parsed ``extract`` options (dataset, encoder, encoder_weights, limit, batch_size, grid,
            shard: ``"I/N"`` or None).

    Returns:
        0 when at least one image has features, 1 when no image could be read.
    """
    shard = parse_shard(args.shard) if args.shard is not None else None  # before any slow step
    kind = "grid" if args.grid else "pooled"
    print(f"extracting: {args.encoder} {kind} features (weights: {args.encoder_weights}) of dataset "
          f"{args.dataset}", flush=True)
    # Cheap checks first: a mistyped path, an offline Mini-COCO or unreachable weights answer at once.
    dataset = load_dataset(args.dataset)
    for note in dataset.notes:
        print(f"note: {note}")
    check_available(args.encoder, args.encoder_weights)
    images = dataset.images[: args.limit] if args.limit else dataset.images
    share = f"; share {shard.index}/{shard.count}: every {shard.count}th photo in path order" if shard else ""
    print(f"dataset {dataset.root}: {len(images)} images{share}", flush=True)
    import_tensorflow()  # only now, after the cheap checks
    from captioning.encoders import build_encoder
    from captioning.features.extraction import extract_features

    encoder = build_encoder(args.encoder, args.encoder_weights)
    report = extract_features(dataset, encoder, kind=kind, image_paths=[image.path for image in images],
                              batch_size=args.batch_size, progress=True, shard=shard)
    print_report(report)
    if report.unmerged:
        print(f"note: this share is kept in the cache's parts/{shard.name if shard else ''} folder: another "
              "process was writing the cache; the next `extract` or `train` of this dataset merges it")
    return 0 if report.computed + report.reused > 0 else 1


def print_report(report: ExtractionReport) -> None:
    """Counts, throughput and each unreadable image with its reason."""
    speed = f", {report.images_per_second:.1f} images/s" if report.computed else ""
    print(f"computed {report.computed}, reused {report.reused}, failed {len(report.failed)}{speed}")
    for path, reason in report.failed:
        print(f"  skipped {path}: {reason}")
