"""``ensemble``: combine trained bundles into one bundle whose members caption together."""

from __future__ import annotations

import argparse

from captioning.cli.runtime import EXIT_OK
from captioning.storage.safe_text import escape


def run(args: argparse.Namespace) -> int:
    """Check the members fit together, write the ensemble bundle and say where it went.

    Args:
        args: Parsed ``ensemble`` options: ``models`` (bundle folders) and ``output``.

    Returns:
        0. Members that do not fit together raise a ``BundleError``, an output folder that is not
        the tool's to replace an ``OutputFolderError`` (exit 1 through ``cli.main.run_command``).
    """
    from captioning.storage.output_folder import check_output_folder

    names = ", ".join(escape(model) for model in args.models)
    print(f"ensemble: combining {len(args.models)} bundles ({names}) -> {escape(args.output)}", flush=True)
    check_output_folder(args.output)  # before TensorFlow loads: a refusal comes at once
    from captioning.cli.runtime import import_tensorflow

    import_tensorflow()
    from captioning.bundles import store as bundles
    from captioning.bundles.combine import combine_bundles  # loads each member

    target = combine_bundles(args.models, args.output)
    print(f"ensemble of {bundles.read_bundle_config(target).member_count} models saved to {target}")
    print(bundles.describe_bundle(target))
    return EXIT_OK
