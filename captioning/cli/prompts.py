"""Small reusable prompts for the interactive menu.

Every prompt shows its default in brackets (Enter accepts it) and re-asks, with the reason, until the
answer is valid. They never catch ``EOFError`` or ``KeyboardInterrupt``: the menu decides what end of
input and Ctrl-C mean (exit cleanly / go back), so a prompt deep inside a step behaves like the top one.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

QUIT_WORDS = ("q", "quit")


def say(text: str = "") -> None:
    """Print one line of menu output straight away (stdout may be a pipe)."""
    print(text, flush=True)


def read_line(prompt: str) -> str:
    """Read one answer, stripped; raises ``EOFError`` at end of input and ``KeyboardInterrupt``."""
    return input(prompt).strip()


def clean_path(text: str) -> Path:
    """Turn a typed or pasted path into a ``Path``.

    Terminals and file managers often paste paths wrapped in quotes, and users type ``~``.

    Args:
        text: the raw answer.

    Returns:
        The path with surrounding quotes removed and ``~`` / ``$VARS`` expanded.
    """
    text = text.strip()
    while len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1].strip()
    return Path(os.path.expandvars(os.path.expanduser(text)))


def _with_default(question: str, default: object | None) -> str:
    return f"{question} [{default}]: " if default is not None else f"{question}: "


def ask_choice(title: str, options: Sequence[str], default: int | None = 1) -> int:
    """Show a numbered list and ask for one entry.

    Args:
        title: the line printed above the options.
        options: the labels, shown as ``1) label``.
        default: the 1-based number Enter picks, or None to require an answer.

    Returns:
        The 0-based index of the chosen option.
    """
    say(title)
    for number, label in enumerate(options, start=1):
        say(f"  {number}) {label}")
    while True:
        answer = read_line(_with_default("Choose", default))
        if not answer and default is not None:
            return default - 1
        if answer.isdigit() and 1 <= int(answer) <= len(options):
            return int(answer) - 1
        say(f"Please enter a number from 1 to {len(options)}")


def ask_int(name: str, default: int | None = None, minimum: int = 1) -> int:
    """Ask for a whole number of at least ``minimum``.

    Args:
        name: what is asked for, e.g. ``"epochs"`` (also used in the re-prompt reason).
        default: what Enter gives, or None to require an answer.
        minimum: the smallest accepted value.

    Returns:
        The number.
    """
    while True:
        answer = read_line(_with_default(name[:1].upper() + name[1:], default))
        if not answer and default is not None:
            return default
        try:
            value = int(answer)
        except ValueError:
            value = None
        if value is not None and value >= minimum:
            return value
        say(f"{name} must be a whole number >= {minimum}")


def ask_parsed(name: str, parse: Callable[[str], T], default: T | None = None) -> T:
    """Ask for a value the command line reads with ``parse`` (one rule for both), re-asking with its reason.

    Args:
        name: what is asked for, e.g. ``"port"``.
        parse: an argparse ``type=`` function; it raises ``ArgumentTypeError`` or ``ValueError``
            with the reason an answer is refused.
        default: what Enter gives, or None to require an answer.

    Returns:
        What ``parse`` made of the answer.
    """
    while True:
        answer = read_line(_with_default(name[:1].upper() + name[1:], default))
        if not answer and default is not None:
            return default
        try:
            return parse(answer)
        except (argparse.ArgumentTypeError, ValueError) as error:
            say(f"{name}: {error}")


def ask_yes_no(question: str, default: bool = False) -> bool:
    """Ask a yes/no question; ``[y/N]`` or ``[Y/n]`` shows the default.

    Args:
        question: the question, without the trailing ``?``.
        default: what Enter gives.

    Returns:
        True for yes.
    """
    hint = "Y/n" if default else "y/N"
    while True:
        answer = read_line(f"{question}? [{hint}]: ").lower()
        if not answer:
            return default
        if answer in ("y", "yes"):
            return True
        if answer in ("n", "no"):
            return False
        say("Please answer y or n")


def path_problem(path: Path, kind: str) -> str | None:
    """Say why ``path`` is not usable as ``kind`` (``"dir"``, ``"file"`` or ``"any"``), or None."""
    if not path.exists():
        return f"Not found: {path}"
    if kind == "dir" and not path.is_dir():
        return f"Not a folder: {path}"
    if kind == "file" and not path.is_file():
        return f"Not a file: {path}"
    return None


def ask_path(question: str, kind: str = "any", default: Path | None = None,
             allow_empty: bool = False) -> Path | None:
    """Ask for an existing path (quotes stripped, ``~`` expanded).

    Args:
        question: the prompt text.
        kind: ``"dir"``, ``"file"`` or ``"any"``: what the path must be.
        default: what Enter gives (shown in brackets), if any.
        allow_empty: when there is no default, Enter, ``q`` or ``quit`` return None (go back).

    Returns:
        The path, or None when the user went back.
    """
    while True:
        answer = read_line(_with_default(question, default))
        if not answer and default is not None:
            return default
        if allow_empty and (not answer or answer.lower() in QUIT_WORDS):
            return None
        if not answer:
            say("Please enter a path")
            continue
        path = clean_path(answer)
        problem = path_problem(path, kind)
        if problem is None:
            return path
        say(problem)


def _complete_path(text: str, state: int) -> str | None:
    """readline completer: file names, folders with a trailing separator."""
    import glob

    matches = sorted(glob.glob(os.path.expanduser(text) + "*"))
    matches = [m + os.sep if os.path.isdir(m) else m for m in matches]
    return matches[state] if state < len(matches) else None


def enable_line_editing() -> None:
    """Give interactive prompts arrow-key editing and Tab completion of paths (terminals only)."""
    import sys

    if not sys.stdin.isatty():
        return
    try:
        import readline
    except ImportError:  # not on every platform; plain input() still works
        return
    readline.set_completer_delims(" \t\n\"'")
    readline.set_completer(_complete_path)
    readline.parse_and_bind("tab: complete")
