"""RangeAllocator: first fit with alignment, limits, reservations and coalescing frees."""

from __future__ import annotations

import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swiotlb.memory import OutOfMemory, RangeAllocator, RangeError

MIB = 1 << 20


def test_first_fit_from_the_bottom_with_page_alignment() -> None:
    r = RangeAllocator(16 * MIB)
    assert r.alloc(100) == 0
    assert r.alloc(100) == 4096  # next page: default alignment is the page size
    assert r.alloc(64, align=64) == 128  # first fit: the gap after the first buffer
    assert r.free_bytes == 16 * MIB - 100 - 100 - 64


def test_alignment_skips_to_the_next_aligned_start() -> None:
    r = RangeAllocator(16 * MIB)
    r.reserve(0, 4096)
    assert r.alloc(MIB, align=MIB) == MIB
    with pytest.raises(RangeError, match="power of two"):
        r.alloc(10, align=3000)


def test_limit_is_an_inclusive_last_address() -> None:
    r = RangeAllocator(16 * MIB)
    r.reserve(0, 8 * MIB)
    assert r.alloc(4 * MIB, limit=12 * MIB - 1) == 8 * MIB
    with pytest.raises(OutOfMemory, match=r"below 0xbfffff"):
        r.alloc(4096, limit=12 * MIB - 1)
    assert r.alloc(4096) == 12 * MIB


def test_free_coalesces_so_the_space_can_be_reused_whole() -> None:
    r = RangeAllocator(4 * MIB)
    a, b, c = (r.alloc(MIB) for _ in range(3))
    r.alloc(MIB)
    with pytest.raises(OutOfMemory):
        r.alloc(4096)
    for addr in (b, a, c):  # out of order: predecessor and successor merges
        assert r.free(addr) == MIB
    assert r.largest_free() == 3 * MIB
    assert r.alloc(3 * MIB) == 0


def test_free_of_an_unknown_address_names_it() -> None:
    r = RangeAllocator(4 * MIB)
    r.alloc(4096)
    with pytest.raises(RangeError, match="0x1000 is not the start"):
        r.free(0x1000)


def test_reserve_needs_free_space_inside_ram() -> None:
    r = RangeAllocator(4 * MIB)
    r.reserve(MIB, MIB)
    assert r.alloc(2 * MIB) == 2 * MIB
    with pytest.raises(RangeError, match="not entirely free"):
        r.reserve(MIB + 4096, 4096)
    with pytest.raises(RangeError, match="not entirely free"):
        r.reserve(2 * MIB, 4096)
    with pytest.raises(RangeError, match="outside RAM"):
        r.reserve(3 * MIB, 2 * MIB)
    assert r.largest_free() == MIB


def test_largest_free_honours_limit_and_alignment() -> None:
    r = RangeAllocator(64 * MIB)
    r.reserve(0, MIB + 4096)
    assert r.largest_free() == 63 * MIB - 4096
    assert r.largest_free(limit=32 * MIB - 1) == 31 * MIB - 4096
    assert r.largest_free(align=2 * MIB) == 62 * MIB


def test_concurrent_allocations_never_overlap() -> None:
    r = RangeAllocator(64 * MIB)
    got: list[list[tuple[int, int]]] = [[] for _ in range(8)]

    def worker(k: int) -> None:
        rng = random.Random(k)
        mine: list[tuple[int, int]] = []
        for _ in range(300):
            if mine and rng.random() < 0.4:
                addr, _ = mine.pop(rng.randrange(len(mine)))
                r.free(addr)
            else:
                size = rng.randrange(1, 64 * 1024)
                mine.append((r.alloc(size), size))
        got[k] = mine

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spans = sorted(s for g in got for s in g)
    for (a, n), (b, _) in zip(spans, spans[1:]):
        assert a + n <= b
    assert r.allocations() == dict(spans)
    assert r.free_bytes == 64 * MIB - sum(n for _, n in spans)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 300_000), st.sampled_from([4096, 8192, 65536])), max_size=40))
def test_random_alloc_free_keeps_ranges_disjoint(ops) -> None:  # type: ignore[no-untyped-def]
    r = RangeAllocator(2 * MIB)
    live: dict[int, int] = {}
    for do_free, size, align in ops:
        if do_free and live:
            addr = sorted(live)[size % len(live)]
            assert r.free(addr) == live.pop(addr)
            continue
        try:
            addr = r.alloc(size, align)
        except OutOfMemory:
            assert r.largest_free(align=align) < size
            continue
        assert addr % align == 0
        assert all(addr + size <= a or a + n <= addr for a, n in live.items())
        live[addr] = size
    assert r.free_bytes == 2 * MIB - sum(live.values())


def test_top_down_takes_the_highest_fit_below_the_limit() -> None:
    r = RangeAllocator(1 << 30)
    r.reserve(0, 1 << 20)
    a = r.alloc(1 << 20, 1 << 20, (512 << 20) - 1, top_down=True)
    assert a == (511 << 20)
    b = r.alloc(1 << 20, 1 << 20, (512 << 20) - 1, top_down=True)
    assert b == (510 << 20)
    assert r.alloc(1 << 20) == 1 << 20  # bottom-up still starts low
