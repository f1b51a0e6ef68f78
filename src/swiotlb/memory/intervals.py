"""Sorted, disjoint, coalesced ``[start, end)`` intervals kept as two parallel lists.

Shared by the range allocator (free ranges) and memory encryption (shared ranges): both need
"insert and merge with the neighbours" and "cut a sub-range out", with O(log n) lookups.
"""

from __future__ import annotations

import bisect


def insert(starts: list[int], ends: list[int], lo: int, hi: int) -> None:
    """Add ``[lo, hi)`` (disjoint from every interval), merging with touching neighbours."""
    i = bisect.bisect_left(starts, lo)
    if i > 0 and ends[i - 1] == lo:  # merge with the predecessor
        i -= 1
        lo = starts[i]
        del starts[i], ends[i]
    if i < len(starts) and starts[i] == hi:  # merge with the successor
        hi = ends[i]
        del starts[i], ends[i]
    starts.insert(i, lo)
    ends.insert(i, hi)


def carve(starts: list[int], ends: list[int], i: int, lo: int, hi: int) -> None:
    """Remove ``[lo, hi)`` from interval ``i``, which must contain it; keeps what is left."""
    s, e = starts[i], ends[i]
    del starts[i], ends[i]
    if hi < e:
        starts.insert(i, hi)
        ends.insert(i, e)
    if s < lo:
        starts.insert(i, s)
        ends.insert(i, lo)


def containing(starts: list[int], ends: list[int], addr: int) -> int:
    """Index of the interval holding ``addr``, or -1."""
    i = bisect.bisect_right(starts, addr) - 1
    return i if i >= 0 and ends[i] > addr else -1
