"""Typed, checked access to the fields of a bundle's ``config.json``, for ``schema``.

Each accessor returns the field's value (None when absent or null, unless required) or raises a
``BundleError`` of one line naming the file, the field's full name (``decoder.units``) and what is
wrong with it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, NoReturn, overload

from captioning.errors import BundleError
from captioning.storage.safe_text import escape

HINT = "the bundle is damaged or was not written by this tool; retrain the model or re-copy the bundle"
_MISSING = object()


class Fields:
    """Typed access to one JSON object's fields, failing with the file and the field's full name."""

    def __init__(self, data: dict, source: str | Path, prefix: str = ""):
        self.data, self.source, self.prefix = data, source, prefix

    def fail(self, key: str, problem: str) -> NoReturn:
        raise BundleError(f"{escape(self.source)}: {self.prefix}{key} {problem}; {HINT}")

    def get(self, key: str, required: bool = False) -> Any:
        """The raw value of ``key``; None when absent or null (refused when ``required``)."""
        value = self.data.get(key, _MISSING)
        if value is _MISSING or value is None:
            if required:
                self.fail(key, "is missing" if value is _MISSING else "must be set, got null")
            return None
        return value

    @overload
    def record(self, key: str, *, required: Literal[True]) -> Fields: ...
    @overload
    def record(self, key: str, required: bool = False) -> Fields | None: ...

    def record(self, key: str, required: bool = False) -> Fields | None:
        value = self.get(key, required)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.fail(key, f"must be an object, got {describe_value(value)}")
        return Fields(value, self.source, f"{self.prefix}{key}.")

    @overload
    def integer(self, key: str, low: int | None = None, high: int | None = None, *,
                required: Literal[True]) -> int: ...
    @overload
    def integer(self, key: str, low: int | None = None, high: int | None = None,
                required: bool = False) -> int | None: ...

    def integer(self, key: str, low: int | None = None, high: int | None = None,
                required: bool = False) -> int | None:
        value = self.get(key, required)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(key, f"must be a whole number, got {describe_value(value)}")
        if (low is not None and value < low) or (high is not None and value > high):
            self.fail(key, f"must be {_range(low, high)}, got {value}")
        return value

    def number(self, key: str, low: float | None = None, high: float | None = None, required: bool = False,
               below_high: bool = False, allow_nan: bool = False) -> float | None:
        value = self.get(key, required)
        if value is None:
            return None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            self.fail(key, f"must be a number, got {describe_value(value)}")
        value = float(value)
        if math.isnan(value) and allow_nan:
            return value
        if not math.isfinite(value):
            self.fail(key, f"must be a finite number, got {value}")
        too_high = high is not None and (value >= high if below_high else value > high)
        if (low is not None and value < low) or too_high:
            self.fail(key, f"must be {_range(low, high, below_high)}, got {value}")
        return value

    def text(self, key: str, required: bool = False) -> str | None:
        value = self.get(key, required)
        if value is not None and not isinstance(value, str):
            self.fail(key, f"must be text, got {describe_value(value)}")
        return value

    def flag(self, key: str) -> bool | None:
        value = self.get(key, False)
        if value is not None and not isinstance(value, bool):
            self.fail(key, f"must be true or false, got {describe_value(value)}")
        return value

    @overload
    def choice(self, key: str, choices: tuple[str, ...], *, required: Literal[True]) -> str: ...
    @overload
    def choice(self, key: str, choices: tuple[str, ...], required: bool = False) -> str | None: ...

    def choice(self, key: str, choices: tuple[str, ...], required: bool = False) -> str | None:
        value = self.text(key, required)
        if value is not None and value not in choices:
            self.fail(key, f"must be one of {', '.join(choices)}, got {escape(repr(value)[:40])}")
        return value


def _range(low, high, below_high: bool = False) -> str:
    """``between 3 and 100``, ``at least 0``, ``at least 0.0 and below 1.0``."""
    if low is not None and high is not None and not below_high:
        return f"between {low} and {high}"
    bounds = [f"at least {low}"] if low is not None else []
    if high is not None:
        bounds.append(f"below {high}" if below_high else f"at most {high}")
    return " and ".join(bounds)


def describe_value(value: Any) -> str:
    """A JSON value described for a message: ``null``, ``a list``, ``the text 'abc'``, ``1.5``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the text {escape(repr(value[:30]))}"
    return escape(repr(value))[:40]


__all__ = ["HINT", "Fields", "describe_value"]
