"""``evaluate``: caption a bundle's held-out images and score them (BLEU, METEOR, ROUGE-L, CIDEr-D).

Prints the model it uses first, then the table, and says where the files went: every evaluation in
its own folder under ``data/evaluations/`` (``report.plan_reports``), the bundle's own
``metrics.json`` and ``evaluation_samples.png`` only for a full evaluation of its test split at the
default beam (for the shipped model only with ``--update-bundle``), and ``--json FILE`` when asked.
"""

from __future__ import annotations

import argparse

from captioning.bundles import default_model as model_choice
from captioning.cli.runtime import EXIT_OK
from captioning.evaluation import evaluate as evaluation
from captioning.evaluation import report


def run(args: argparse.Namespace) -> int:
    """Evaluate the bundle and report.

    Args:
        args: Parsed ``evaluate`` options: ``model``, ``dataset``, ``split``, ``beam_size``,
            ``limit``, ``json``, ``update_bundle``.

    Returns:
        0. Missing bundles, datasets or splits, and ``--update-bundle`` for an evaluation that is
        not the bundle's record, raise a ``CaptioningError`` (exit 1 through ``cli.main.run_command``)
        before anything is captioned.
    """
    choice = model_choice.choose_model(args.model)
    print(model_choice.model_line(choice.path), flush=True)  # reads config.json: fails if broken
    if choice.note:
        print(f"note: {choice.note}", flush=True)
    model_path, evaluation_set = evaluation.prepare(choice.path, args.dataset, args.split, args.limit)
    plan = report.plan_reports(model_path, evaluation_set, args.beam_size, args.update_bundle)

    from captioning.cli.runtime import import_tensorflow

    import_tensorflow()  # only now: every check above is answered without it
    from captioning.inference.captioner import Captioner

    result = evaluation.evaluate_images(Captioner.from_bundle(model_path), evaluation_set,
                                        args.beam_size, model_path)
    print(report.format_table(result))
    written = report.write_reports(result, plan, json_path=args.json)
    shown = model_choice.shown
    print()
    print(f"results saved in {shown(plan.folder)}/ (each evaluation setting keeps its own folder):")
    print(f"  metrics written to {shown(written['metrics'])}")
    print(f"  sample captions drawn in {shown(written['samples'])}")
    if "json" in written:
        print(f"  metrics also written to {shown(written['json'])}")
    if plan.update_bundle:
        print(f"the bundle's own record was updated: {shown(written['bundle_metrics'])}, "
              f"{shown(written['bundle_samples'])}")
    else:
        print(f"the bundle's own record {shown(model_path / report.METRICS_FILE)} was left as it was: "
              f"{plan.bundle_kept_because}")
    return EXIT_OK
