"""Chunks: the unit of work of an audit, and of its shards.

Every stacked forward pass of an audit (a chunk of VJP rows, of sweep cuts, of loss positions)
is a chunk of consecutive items. A shard ``(i, n)`` runs chunks ``i, i + n, i + 2n, ...`` and
nothing else: each of its forward passes is exactly one the whole audit would run, batch
composition included, so float32 rounding is the same and the shards' results merge into the
unsharded result bit for bit.
"""

import math
from collections.abc import Iterator, Sequence

__all__ = ["MIN_CHUNKS", "chunked", "copies_per_pass", "leads", "share", "spread"]

# Every phase with at least this many items is cut in at least this many chunks, so that a small
# audit spreads over up to this many shards (and a shard is never the whole audit by accident).
MIN_CHUNKS = 8


def chunked(items: Sequence, size: int, shard: tuple[int, int] | None = None) -> Iterator:
    """Consecutive chunks of at most ``size`` items (only this shard's, given one)."""
    size = max(1, size)
    for j, start in enumerate(range(0, len(items), size)):
        if shard is None or j % shard[1] == shard[0]:
            yield items[start : start + size]


def copies_per_pass(batch: int, positions: int, positions_per_pass: int) -> int:
    """How many copies of a ``(batch, positions)`` input one stacked forward pass holds, so
    that a pass carries about ``positions_per_pass`` position-samples (this bounds its memory)."""
    return max(1, positions_per_pass // max(1, batch * positions))


def spread(size: int, items: int) -> int:
    """A chunk size of at most ``size`` that cuts ``items`` items in ``MIN_CHUNKS`` chunks or
    more (where there are that many items)."""
    return max(1, min(size, math.ceil(items / MIN_CHUNKS)))


def leads(shard: tuple[int, int] | None) -> bool:
    """Whether this run does the once-only work (probe passes, Hypothesis searches): the whole
    audit does, and of its shards the first."""
    return shard is None or shard[0] == 0


def share(items: Sequence, size: int, shard: tuple[int, int] | None) -> list:
    """The items this shard covers when ``items`` is cut in chunks of ``size``."""
    return [item for chunk in chunked(items, size, shard) for item in chunk]
