"""Parse JSON the tool did not write itself, within limits that make a hostile file one clear error.

Python's ``json`` module, given a file nested 100,000 levels deep, raises ``RecursionError``; given
an integer of 5,000 digits, a ``ValueError`` that is not a ``JSONDecodeError``; it accepts
``NaN`` and ``Infinity``, and ``"\\udce9"`` escapes that decode to lone surrogates, which later
crash any UTF-8 print or write. Here every one of these is an ``InputFileError`` naming the file:

* size: checked before reading (``regular_files.read_regular_file``; FIFOs and devices refused);
* nesting: measured over the raw text before parsing (``nesting_depth``, linear and about as fast
  as the parse), so the recursive parser never sees a file deeper than ``MAX_DEPTH``;
* numbers: integers longer than ``MAX_NUMBER_CHARS`` refused as they are parsed; ``NaN``,
  ``Infinity`` and overflowing floats refused unless the caller allows them (history.json may
  legitimately hold a ``NaN`` loss);
* text: strict UTF-8 (a leading BOM is skipped); strings holding lone surrogates refused unless
  the caller handles them itself (a dataset's captions file counts them as malformed entries).

TensorFlow-free and numpy-free, so the CLI's cheap checks stay cheap.
"""

from __future__ import annotations

import codecs
import json
import math
import re
from pathlib import Path
from typing import Any

from captioning.errors import InputFileError
from captioning.storage.regular_files import read_regular_file
from captioning.storage.safe_text import escape, needs_escaping

# The tool's own files nest at most 5 levels (config.json's ensemble members' training record);
# COCO-format captions 3.
MAX_DEPTH = 64
# Longest number literal: ids and counts have under 20 digits, a float's repr under 25 characters.
MAX_NUMBER_CHARS = 64

# For the nesting scan: every byte but quotes and brackets is deleted, braces become brackets.
_DELETE_ALL_BUT_STRUCTURE = bytes(b for b in range(256) if chr(b) not in '"[]{}')
_BRACES_AS_BRACKETS = bytes.maketrans(b"{}", b"[]")
_STRING_WITH_BRACKETS = re.compile(rb'"[^"]*"')


class _LimitExceeded(ValueError):
    """Internal: a number or constant past the limits (raised inside ``json.loads``'s hooks)."""


def read_json_file(path: str | Path, max_bytes: int, allow_nan: bool = False,
                   allow_surrogates: bool = False) -> Any:
    """Read and parse a JSON file within the limits of this module.

    Args:
        path: the file; must be a regular file.
        max_bytes: the most bytes this file may hold.
        allow_nan: accept ``NaN``, ``Infinity`` and floats that overflow to infinity.
        allow_surrogates: keep strings holding lone surrogates (the caller checks them).

    Returns:
        The parsed value.

    Raises:
        InputFileError: missing (``missing=True``), not a regular file, too large, not UTF-8,
            invalid JSON, or past a limit; ``reason`` says which, in one line.
    """
    data = read_regular_file(path, max_bytes)
    try:
        return parse_json(decode_utf8(data), allow_nan=allow_nan, allow_surrogates=allow_surrogates)
    except ValueError as error:
        raise InputFileError(path, str(error)) from None


def decode_utf8(data: bytes) -> str:
    """Strict UTF-8 text of ``data`` without a leading BOM.

    Raises:
        ValueError: one line saying where the first invalid byte is.
    """
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start})") from None


def parse_json(text: str, allow_nan: bool = False, allow_surrogates: bool = False) -> Any:
    """Parse JSON text within the limits of this module.

    Args:
        text: the JSON document.
        allow_nan: accept ``NaN``, ``Infinity`` and floats that overflow to infinity.
        allow_surrogates: keep strings holding lone surrogates.

    Returns:
        The parsed value.

    Raises:
        ValueError: one line saying what is wrong (invalid JSON, or which limit was passed).
    """
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        raise ValueError(f"JSON nested more than {MAX_DEPTH} levels deep")
    try:
        value = json.loads(text, parse_int=_parse_int, parse_float=_float_parser(allow_nan),
                           parse_constant=_constant_parser(allow_nan))
    except _LimitExceeded as error:
        raise ValueError(str(error)) from None
    except json.JSONDecodeError as error:
        raise ValueError(f"invalid JSON ({error.msg} at line {error.lineno} column {error.colno})") from None
    except RecursionError:  # cannot happen below MAX_DEPTH; kept so a change there fails clearly
        raise ValueError("JSON nested too deeply") from None
    if not allow_surrogates:
        bad = first_surrogate_string(value)
        if bad is not None:
            raise ValueError(f"text with an unpaired surrogate escape ({escape(bad)[:60]!r})")
    return value


def nesting_depth(text: str | bytes, stop_after: int = MAX_DEPTH) -> int:
    """How deep arrays and objects nest in JSON ``text`` (brackets inside strings ignored).

    Linear and in C-speed passes, so a hostile file costs no more than a parse: escaped
    backslashes and quotes are removed, then everything but quotes and brackets; adjacent quotes
    are dropped in pairs (an empty string, or the gap between two strings: either way nothing
    outside a string is lost and the parity of later quotes is kept), then the few strings still
    holding brackets. What is left is brackets alone, and each pass that removes every ``[]``
    removes one level.

    Args:
        text: JSON text (invalid JSON gives some number; the parser reports the error).
        stop_after: counting stops past this depth, so the result is at most ``stop_after + 1``.

    Returns:
        The depth: 0 for a scalar, 1 for ``[1, 2]``, 2 for ``{"a": [1]}``.
    """
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    data = data.translate(_BRACES_AS_BRACKETS, _DELETE_ALL_BUT_STRUCTURE).replace(b'""', b"")
    data = _STRING_WITH_BRACKETS.sub(b"", data)
    if b"[" * (stop_after + 1) in data:  # the usual deep file: a run of openers, found in one pass
        return stop_after + 1
    depth = 0
    while data and depth <= stop_after:
        shorter = data.replace(b"[]", b"")
        if len(shorter) == len(data):  # unbalanced: invalid JSON, which the parser reports
            break
        data, depth = shorter, depth + 1
    return depth


def first_surrogate_string(value: Any) -> str | None:
    """The first string (key or value) in a parsed JSON value that holds a lone surrogate."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if needs_escaping(item):
                return item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def _parse_int(literal: str) -> int:
    if len(literal) > MAX_NUMBER_CHARS:
        raise _LimitExceeded(f"a number of {len(literal)} digits (at most {MAX_NUMBER_CHARS} accepted)")
    return int(literal)


def _float_parser(allow_nan: bool):
    def parse(literal: str) -> float:
        if len(literal) > MAX_NUMBER_CHARS:
            raise _LimitExceeded(f"a number of {len(literal)} characters (at most {MAX_NUMBER_CHARS} "
                                 "accepted)")
        value = float(literal)
        if not allow_nan and not math.isfinite(value):
            raise _LimitExceeded(f"the number {literal} is too large for a float")
        return value
    return parse


def _constant_parser(allow_nan: bool):
    def parse(name: str) -> float:
        if not allow_nan:
            raise _LimitExceeded(f"{name} where a number is expected (JSON has no {name})")
        return float(name)
    return parse


__all__ = ["MAX_DEPTH", "MAX_NUMBER_CHARS", "decode_utf8", "first_surrogate_string", "nesting_depth",
           "parse_json", "read_json_file"]
