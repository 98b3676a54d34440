"""Captions tokenised as the COCO caption toolkit tokenises them, before any metric sees them.

Stanford's PTBTokenizer (the jar shipped in pycocoevalcap, run with Java) lowercases and splits,
then the toolkit's punctuation list is dropped. Without Java a pure-Python tokeniser reproduces
that on ordinary caption text (checked against the jar on the 37,682 Flickr8k and COCO captions
beside the project, see ``tests/test_metrics.py``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

TOKENIZER_TIMEOUT_S = 300.0

# Exactly pycocoevalcap/tokenizer/ptbtokenizer.py's list. Note that the jar runs with -lowerCase,
# so "-LRB-" and friends come out as "-lrb-" and are *not* removed by the toolkit; we keep that.
PUNCTUATIONS = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
                          ".", "?", "!", ",", ":", "-", "--", "...", ";"])

JAVA_TOKENIZER = ("Stanford PTBTokenizer (CoreNLP 3.4.1 jar from pycocoevalcap, Java) + COCO "
                  "punctuation removal")
PYTHON_TOKENIZER = "pure-Python PTB-style tokeniser (Java not used) + COCO punctuation removal"

def java_available() -> bool:
    """Whether a ``java`` executable is on PATH (needed by the PTB tokeniser jar and METEOR)."""
    return shutil.which("java") is not None


_UNICODE_MAP = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"',
                              "\u2014": " -- ", "\u2013": " -- ", "\u2026": " ... ", "\n": " ",
                              "\r": " ", "\t": " "})
# Abbreviations the Stanford lexer keeps with their period inside a caption ("st. louis").
_ABBREVIATIONS = frozenset("mr mrs ms dr st jr sr mt ft vs etc co inc ltd corp ave rd blvd sgt capt "
                           "gen prof dept bros jan feb mar apr jun jul aug sep sept oct nov dec "
                           "mon tue wed thu fri sat sun sq".split())
_QUOTE = "''"  # the lexer turns a double quote into `` or '', both removed as punctuation
_INITIALISM = re.compile(r"^(?:[a-z]\.)+[a-z]?\.?$")  # u.s. / u.s.a. / a.m. / e.g. / u.
_NUMBER = re.compile(r"^\d+(?:[.,:/]\d+)*$")
_CLITIC = re.compile(r"^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$")
# A leading apostrophe that is not an opening quote: clitics typed apart ("dog 's"), '90s, 'n', 'tis.
_KEEP_APOSTROPHE = re.compile(r"^'(?:s|re|ve|ll|d|m|\d+s?|n'|t(?:is|was))$")
_SPLIT_WORDS = {"cannot": ["can", "not"], "gonna": ["gon", "na"], "gotta": ["got", "ta"],
                "wanna": ["wan", "na"], "lemme": ["lem", "me"], "gimme": ["gim", "me"],
                "'tis": ["'t", "is"], "'twas": ["'t", "was"]}
_LEADING = ("(", "[", "{", "$", "#", '"', "`")
_TRAILING = (")", "]", "}", "%", '"', ",", ";", ":", "!", "?")
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
# Inside a chunk these always stand alone; "," and ":" only when not between digits (1,000 9:30).
_INNER_SPLIT = re.compile(r"([()\[\]{}&=+;]|(?<!\d)[,:]|[,:](?!\d))")


def _peel_leading(chunk: str) -> tuple[list[str], str]:
    tokens = []
    while chunk:
        if chunk.startswith("--"):
            tokens.append("--"); chunk = chunk[2:]
        elif chunk[0] == "-" and len(chunk) > 1:
            tokens.append("-"); chunk = chunk[1:]
        elif chunk[0] in _LEADING and len(chunk) > 1:
            tokens.append(chunk[0]); chunk = chunk[1:]
        elif chunk[0] == "'" and len(chunk) > 1 and not _KEEP_APOSTROPHE.match(chunk):
            tokens.append("'"); chunk = chunk[1:]
        else:
            break
    return tokens, chunk


def _peel_trailing(chunk: str) -> tuple[str, list[str]]:
    tokens: list[str] = []
    while len(chunk) > 1:
        if chunk.endswith("...") and len(chunk) > 3:
            tokens.insert(0, "..."); chunk = chunk[:-3]
        elif chunk.endswith("--"):
            tokens.insert(0, "--"); chunk = chunk[:-2]
        elif chunk[-1] in _TRAILING or chunk[-1] == "-":
            tokens.insert(0, chunk[-1]); chunk = chunk[:-1]
        elif chunk[-1] == "'" and not chunk.endswith("n'"):
            tokens.insert(0, "'"); chunk = chunk[:-1]
        elif chunk[-1] == "." and _splits_period(chunk):
            tokens.insert(0, "."); chunk = chunk[:-1]
        else:
            break
    return chunk, tokens


def _splits_period(chunk: str) -> bool:
    """Whether a trailing period is a token of its own (sentence end) or part of an abbreviation."""
    stem = chunk[:-1]
    if stem.endswith("."):
        return not _INITIALISM.match(chunk)  # "dog.." -> "dog . ."
    if _INITIALISM.match(chunk) and "." in stem:
        return False  # u.s. / a.m.
    if stem in _ABBREVIATIONS or (len(stem) == 1 and stem.isalpha()):
        return False
    return True


def _word_tokens(word: str) -> list[str]:
    if word in _SPLIT_WORDS:
        return list(_SPLIT_WORDS[word])
    match = _CLITIC.match(word)
    if match and match.group(1) not in ("'", "o") and not _NUMBER.match(word):
        return list(match.groups())  # dog's -> dog 's, don't -> do n't
    return [word]


def _chunk_tokens(chunk: str) -> list[str]:
    """Tokens of one whitespace-separated chunk: peel punctuation off both ends, split the rest."""
    lead, chunk = _peel_leading(chunk)
    chunk, trail = _peel_trailing(chunk)
    middle: list[str] = []
    if _NUMBER.match(chunk):
        middle = [chunk]
    elif chunk:
        for piece in _INNER_SPLIT.split(chunk):
            if piece:
                middle.extend(_word_tokens(piece))
    return [_QUOTE if token == '"' else token for token in lead + middle + trail]


def ptb_tokenize(text: str) -> list[str]:
    """Split one caption as Stanford's PTBTokenizer (``-lowerCase``) does, before punctuation removal.

    A pure-Python approximation for when Java is missing: lowercases, splits off punctuation,
    brackets (as ``-lrb-`` etc.), quotes, clitics (``dog 's``, ``do n't``) and sentence-final
    periods, while keeping abbreviations (``st.``, ``u.s.``), numbers (``3.5``, ``1,000``) and
    hyphenated words whole.

    Args:
        text: a raw caption.

    Returns:
        The tokens, lowercase, punctuation tokens included.
    """
    text = text.translate(_UNICODE_MAP).lower().replace('"', ' " ')
    return [_BRACKETS.get(token, token) for chunk in text.split() for token in _chunk_tokens(chunk)]


def coco_tokenize_python(text: str) -> str:
    """Tokenise one caption like the COCO toolkit, in pure Python.

    Args:
        text: a raw caption.

    Returns:
        Space-joined lowercase tokens with the toolkit's punctuation tokens removed.
    """
    return " ".join(token for token in ptb_tokenize(text) if token not in PUNCTUATIONS)


def _stanford_jar() -> Path:
    from pycocoevalcap.tokenizer import ptbtokenizer

    return Path(ptbtokenizer.__file__).resolve().parent / ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR


def coco_tokenize_java(texts: list[str]) -> list[str]:
    """Tokenise captions with the COCO toolkit's own Stanford jar (needs Java).

    Runs the same command as ``pycocoevalcap.tokenizer.ptbtokenizer.PTBTokenizer`` (``-preserveLines
    -lowerCase``, one caption per line) and drops the same punctuation, but writes its temp file to
    the system temp folder rather than into site-packages (which may be read-only), keeps the jar's
    progress line off the terminal, and checks that one line came back per caption.

    Args:
        texts: raw captions.

    Returns:
        One space-joined token string per caption, in order.

    Raises:
        RuntimeError: Java failed or returned the wrong number of lines.
    """
    if not texts:
        return []
    lines = "\n".join(text.replace("\n", " ").replace("\r", " ") for text in texts)
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as handle:
        handle.write(lines.encode("utf-8"))
    try:
        cmd = ["java", "-cp", str(_stanford_jar()), "edu.stanford.nlp.process.PTBTokenizer",
               "-preserveLines", "-lowerCase", handle.name]
        done = subprocess.run(cmd, capture_output=True, timeout=TOKENIZER_TIMEOUT_S, check=False)
    finally:
        os.remove(handle.name)
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RuntimeError(f"java exited with {done.returncode}: {detail[-1] if detail else 'no message'}")
    out_lines = done.stdout.decode("utf-8").split("\n")
    if len(out_lines) < len(texts):
        raise RuntimeError(f"the tokeniser returned {len(out_lines)} lines for {len(texts)} captions")
    return [" ".join(w for w in line.rstrip().split(" ") if w and w not in PUNCTUATIONS)
            for line in out_lines[:len(texts)]]


def tokenize_all(texts: list[str], use_java: bool | None = None) -> tuple[list[str], str, list[str]]:
    """Tokenise captions with the Java jar when possible, else in pure Python.

    Args:
        texts: raw captions.
        use_java: True/False to force a tokeniser; None to use Java when it is installed.

    Returns:
        (token strings, tokeniser description, notes about any fallback).
    """
    notes: list[str] = []
    if use_java is None:
        use_java = java_available()
    if use_java:
        try:
            return coco_tokenize_java(texts), JAVA_TOKENIZER, notes
        except (OSError, RuntimeError, subprocess.SubprocessError, UnicodeDecodeError) as error:
            notes.append(f"Java PTB tokeniser failed ({error}); used the pure-Python tokeniser instead")
    return [coco_tokenize_python(text) for text in texts], PYTHON_TOKENIZER, notes


__all__ = ["JAVA_TOKENIZER", "PUNCTUATIONS", "PYTHON_TOKENIZER", "coco_tokenize_java", "coco_tokenize_python",
           "java_available", "ptb_tokenize", "tokenize_all"]
