"""``evaluate``: caption a bundle's held-out images and score them (BLEU, METEOR, ROUGE-L, CIDEr-D).

Prints the table, writes ``metrics.json`` and ``evaluation_samples.png`` into the bundle folder
(and ``--json FILE`` when asked) and says where they are.
"""

from __future__ import annotations

import argparse

from captioning import evaluation, report

EXIT_OK = 0


def run(args: argparse.Namespace) -> int:
    """Evaluate the bundle and report.

    Args:
        args: Parsed ``evaluate`` options: ``model``, ``dataset``, ``split``, ``beam_size``,
            ``limit``, ``json``.

    Returns:
        0. Missing bundles, datasets or splits raise a ``CaptioningError`` (exit 1 through
        ``cli.run_command``).
    """
    result = evaluation.evaluate_bundle(
        model=args.model, dataset_source=args.dataset, split=args.split,
        beam_size=args.beam_size, limit=args.limit)
    print(report.format_table(result))
    written = report.write_reports(result, json_path=args.json)
    print()
    print(f"metrics written to {written['metrics']}")
    if "json" in written:
        print(f"metrics also written to {written['json']}")
    print(f"sample captions drawn in {written['samples']}")
    return EXIT_OK
