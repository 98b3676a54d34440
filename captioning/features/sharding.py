"""``extract --shard I/N``: which of a dataset's photos one of N extraction workers computes.

The partition is deterministic and the same on every host: the photos sorted by their path
relative to the dataset folder (what the cache keys on), then every N-th from the I-th. Shares
are disjoint, cover every photo together, and differ in size by at most one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from captioning.errors import CaptioningError

T = TypeVar("T")
MAX_SHARDS = 10_000
_SPEC = re.compile(r"\s*(\d{1,9})\s*/\s*(\d{1,9})\s*")


class ShardSpecError(CaptioningError):
    """A ``--shard`` value that is not ``I/N`` with ``0 <= I < N``."""


@dataclass(frozen=True)
class Shard:
    """Share ``index`` of ``count`` (``0 <= index < count``)."""

    index: int
    count: int

    @property
    def name(self) -> str:
        """``"1-of-4"``: the share's folder name in the feature cache."""
        return f"{self.index}-of-{self.count}"

    def select(self, items: Sequence[T], key: Callable[[T], str]) -> list[T]:
        """This share of ``items``: sorted by ``key``, every ``count``-th from ``index``, in key order."""
        ordered = sorted(items, key=key)
        return ordered[self.index::self.count]


def parse_shard(text: str) -> Shard:
    """Parse ``--shard I/N``.

    Raises:
        ShardSpecError: one line saying what a valid value looks like.
    """
    match = _SPEC.fullmatch(text)
    example = "e.g. --shard 0/2 on one host and --shard 1/2 on the other"
    if match is None:
        raise ShardSpecError(f"--shard {text!r}: expected I/N, this worker's number I and the number of "
                             f"workers N, {example}")
    index, count = int(match.group(1)), int(match.group(2))
    if not 1 <= count <= MAX_SHARDS:
        raise ShardSpecError(f"--shard {text}: N (the number of workers) must be from 1 to {MAX_SHARDS}")
    if index >= count:
        raise ShardSpecError(f"--shard {text}: I must be from 0 to {count - 1} (workers are numbered from 0), "
                             f"{example}")
    return Shard(index, count)


__all__ = ["Shard", "ShardSpecError", "parse_shard"]
