"""``default``: show or choose the model ``caption``, ``evaluate`` and the menu use without --model.

The choice is a pointer file in ``saved_models/`` (``bundles.default_model``); nothing here loads TensorFlow.
"""

from __future__ import annotations

import argparse

from captioning.bundles import default_model
from captioning.cli.runtime import EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Print the default model, or make ``args.model`` (or, with ``--shipped``, the shipped one) it.

    Args:
        args: Parsed ``default`` options: ``model`` (a bundle folder or None) and ``shipped``.

    Returns:
        0. A folder that is not a readable bundle, or a pointer that cannot be written, raises a
        ``CaptioningError`` (exit 1 through ``cli.main.run_command``).
    """
    changed, pointer = bool(args.shipped or args.model), None
    if args.shipped:
        default_model.reset_default()
    elif args.model:
        pointer = default_model.set_default(args.model, chosen_by="default command")
    choice = default_model.default_model()
    print(default_model.model_line(choice.path))
    if choice.note:
        print(f"note: {choice.note}")
    if changed:
        where = f" (saved in {default_model.shown(pointer)})" if pointer else ""
        print(f"caption, evaluate and the menu now use it when no --model is given{where}")
    return EXIT_OK
