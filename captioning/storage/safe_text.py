"""Show and store text that may not be valid Unicode: file names that are not UTF-8, above all.

On Linux a file name is bytes; Python presents the bytes that are not UTF-8 as lone surrogates
(``b"caf\\xe9.jpg"`` becomes ``"caf\\udce9.jpg"``), and printing or UTF-8-encoding such a string
raises ``UnicodeEncodeError``. Here such text is escaped the way Python's ``backslashreplace``
writes undecodable bytes: each byte that is not UTF-8 becomes ``\\xNN`` (``caf\\xe9.jpg``), any
other lone surrogate ``\\uXXXX``. Valid text is left exactly as it is.

JSON the tool writes holds the escaped text and, beside it, a field saying so
(``"image_escaping": "backslashreplace"``), so a reader knows the name is not the literal one.
The terminal streams use the same escaping as their error handler (``protect_streams``), so no
print anywhere can crash on such a name.
"""

from __future__ import annotations

import codecs
import re
import sys
from typing import Any

ESCAPING = "backslashreplace"  # recorded in JSON beside escaped text
ERROR_HANDLER = "captioning-escape"  # the codec error handler registered below

_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape_unencodable(error: UnicodeError) -> tuple[str, int]:
    """Codec error handler: undecodable file-name bytes as ``\\xNN``, anything else as ``\\uXXXX``."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    pieces = []
    for char in error.object[error.start:error.end]:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that surrogateescape could not decode
            pieces.append(f"\\x{code - 0xDC00:02x}")
        elif code <= 0xFF:
            pieces.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            pieces.append(f"\\u{code:04x}")
        else:
            pieces.append(f"\\U{code:08x}")
    return "".join(pieces), error.end


codecs.register_error(ERROR_HANDLER, _escape_unencodable)


def needs_escaping(text: str) -> bool:
    """Whether ``text`` holds lone surrogates (undecodable file-name bytes, or ``\\udce9`` escapes)."""
    return _SURROGATE.search(text) is not None


def escape(text: Any) -> str:
    """``str(text)`` with lone surrogates escaped (see the module docstring); valid text unchanged.

    Args:
        text: a string, or anything with a ``str`` (a Path).

    Returns:
        Text that can be printed to any UTF-8 stream and written to UTF-8 files.
    """
    text = str(text)
    if not needs_escaping(text):
        return text
    return text.encode("utf-8", ERROR_HANDLER).decode("utf-8")


def json_text(key: str, text: Any) -> dict[str, str]:
    """``{key: text}`` for a JSON record, escaped when needed with ``{key}_escaping`` beside it.

    Args:
        key: the field name, e.g. ``"image"``.
        text: the value (a path or a string).

    Returns:
        ``{key: text}``, or ``{key: escaped text, f"{key}_escaping": "backslashreplace"}``.
    """
    text = str(text)
    if not needs_escaping(text):
        return {key: text}
    return {key: escape(text), f"{key}_escaping": ESCAPING}


def protect_streams(*streams) -> None:
    """Make ``streams`` (default stdout and stderr) escape what they cannot encode instead of raising.

    For the CLI's entry point: every message that names a file passes through these streams.
    Streams that cannot be reconfigured (replaced by a test harness, say) are left alone.
    """
    for stream in streams or (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is None:
            continue
        try:
            reconfigure(errors=ERROR_HANDLER)
        except (ValueError, OSError, AttributeError):
            pass


__all__ = ["ERROR_HANDLER", "ESCAPING", "escape", "json_text", "needs_escaping", "protect_streams"]
