"""The policies' event counts: exact under threads, and reading never creates a key."""

from __future__ import annotations

import sys
import threading

from swiotlb.policies.base import EventCounts


def test_reading_a_missing_count_gives_zero_and_adds_no_key() -> None:
    counts = EventCounts()
    assert counts["pools_created"] == 0
    counts.add("pools_freed", 3)
    counts.add("pools_freed")
    snap = counts.snapshot()
    assert snap == {"pools_freed": 4}  # the read above left no 0 entry behind for stats()
    snap["pools_freed"] = 99
    assert counts["pools_freed"] == 4  # a snapshot is a copy


def test_no_count_is_lost_when_many_threads_add_at_once() -> None:
    counts = EventCounts()
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter allows
    try:
        def bump() -> None:
            for i in range(20_000):
                counts.add("maps")
                counts.add(f"k{i % 7}", 2)

        threads = [threading.Thread(target=bump) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    snap = counts.snapshot()
    assert snap["maps"] == 8 * 20_000
    assert sum(v for k, v in snap.items() if k != "maps") == 8 * 20_000 * 2
