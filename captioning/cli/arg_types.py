"""argparse value types for the CLI's options, in a module of their own so the menu can ask with
the same rules (e.g. ``serve --port``) without importing the parser that starts the menu."""

from __future__ import annotations

import argparse
from pathlib import Path

from captioning.storage.safe_text import escape


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def png_file(text: str) -> str:
    """argparse type: a file name ending in .png (the annotated image is always a PNG)."""
    if Path(text).suffix.lower() != ".png":
        raise argparse.ArgumentTypeError(f"the annotated image is a PNG; give a name ending in .png, "
                                         f"not {escape(text)!r}")
    return text


def positive_float(text: str) -> float:
    """argparse type: a float > 0."""
    return _checked_float(text, lambda value: value > 0, "> 0")


def non_negative_float(text: str) -> float:
    """argparse type: a float >= 0."""
    return _checked_float(text, lambda value: value >= 0, ">= 0")


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0 (any free port) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {value}")
    return value


def dropout_rate(text: str) -> float:
    """argparse type: a float in [0, 1)."""
    return _checked_float(text, lambda value: 0 <= value < 1, "from 0 to below 1")


def _checked_float(text: str, accept, bound: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not accept(value):  # nan fails every comparison, so it is refused too
        raise argparse.ArgumentTypeError(f"expected a number {bound}, got {value}")
    return value
