"""``evaluate``: caption a bundle's held-out images and score them (BLEU, METEOR, ROUGE-L, CIDEr-D).

Prints the model it uses first, then the table, and says where the files went: every evaluation in
its own folder under ``data/evaluations/`` (``report.plan_reports``), the bundle's own
``metrics.json`` and ``evaluation_samples.png`` only for a full evaluation of its test split at the
default beam (for the shipped model only with ``--update-bundle``), and ``--json FILE`` when asked.
The menu's evaluate step calls ``evaluate_model`` too.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from captioning import config
from captioning.bundles.default_model import choose_model, model_line, shown
from captioning.bundles.store import read_bundle_config
from captioning.cli.runtime import EXIT_OK, import_tensorflow
from captioning.evaluation import report
from captioning.evaluation.evaluate import evaluate_images, prepare


def run(args: argparse.Namespace) -> int:
    """Evaluate the bundle and report.

    Args:
        args: Parsed ``evaluate`` options: ``model``, ``dataset``, ``split``, ``beam_size``,
            ``no_tags``, ``limit``, ``json``, ``update_bundle``.

    Returns:
        0. Missing bundles, datasets or splits, and ``--update-bundle`` for an evaluation that is
        not the bundle's record, raise a ``CaptioningError`` (exit 1 through ``cli.main.run_command``)
        before anything is captioned.
    """
    evaluate_model(args.model, args.dataset, args.split, args.beam_size, args.limit, args.json, args.update_bundle,
                   tags=not args.no_tags)
    return EXIT_OK


def evaluate_model(model: str | Path | None, dataset: str | None = None, split: str = config.EVALUATION_SPLITS[0],
                   beam_size: int = config.DEFAULT_BEAM_SIZE, limit: int | None = None,
                   json_path: str | None = None, update_bundle: bool = False, tags: bool = True,
                   say: Callable[[str], None] = lambda line: print(line, flush=True)) -> None:
    """Evaluate a bundle on its held-out images, print the table and say where the results went.

    Args:
        model: the bundle folder, or None for the default model.
        dataset: ``mini-coco`` or a dataset folder; None: the one the bundle was trained on.
        split: ``test`` or ``val``.
        beam_size: beam width; 1 is greedy.
        limit: only the first N held-out images.
        json_path: one more copy of the metrics, or None; refused up front when it cannot be
            written or holds a file that is not an earlier evaluation's (``report.check_json_path``).
        update_bundle: also replace the shipped bundle's own record (``--update-bundle``).
        tags: guide captions with the encoder's ImageNet classifier when it has one (``--no-tags``:
            False; then the results keep a folder of their own, never the bundle's record).
        say: receives each line.

    Raises:
        CaptioningError: as ``evaluation.prepare``, ``report.plan_reports`` and the captioning;
            every check is made before TensorFlow loads.
    """
    choice = choose_model(model)
    say(model_line(choice.path))  # reads config.json: fails if broken
    if choice.note:
        say(f"note: {choice.note}")
    model_path, evaluation_set = prepare(choice.path, dataset, split, limit)
    # Turning tags off changes the captions only for a model that has them.
    tags_off = not tags and read_bundle_config(model_path).encoder.has_classifier
    plan = report.plan_reports(model_path, evaluation_set, beam_size, update_bundle, tags_off)
    json_replace = report.check_json_path(json_path) if json_path else False
    say(f"evaluating {evaluation_set.describe()}, beam size {beam_size}")

    import_tensorflow()  # only now: every check above is answered without it
    from captioning.inference.captioner import Captioner

    # The bar only where someone watches it: in a log file its redraws are noise.
    result = evaluate_images(Captioner.load(model_path, tags=tags), evaluation_set, beam_size, model_path,
                             progress=sys.stderr.isatty())
    say(report.format_table(result))
    written = report.write_reports(result, plan, json_path=json_path, json_replace=json_replace)
    say("")
    say(f"results saved in {shown(plan.folder)}/ (each evaluation setting keeps its own folder):")
    say(f"  metrics written to {shown(written['metrics'])}")
    say(f"  sample captions drawn in {shown(written['samples'])}")
    if "json" in written:
        say(f"  metrics also written to {shown(written['json'])}")
    if plan.update_bundle:
        say(f"the bundle's own record was updated: {shown(written['bundle_metrics'])}, "
            f"{shown(written['bundle_samples'])}")
    else:
        say(f"the bundle's own record {shown(model_path / report.METRICS_FILE)} was left as it was: "
            f"{plan.bundle_kept_because}")
