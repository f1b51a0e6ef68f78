"""BuddyAllocator: exact splitting and merging against a page-level oracle, errors, large ranges."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swiotlb.memory import BuddyAllocator, BuddyError, DoubleFree, aligned_blocks


def test_seeding_uses_maximal_aligned_blocks_even_for_an_unaligned_range() -> None:
    b = BuddyAllocator(3, 13, 3)  # pfns [3, 16)
    assert b.free_blocks() == [(3, 0), (4, 2), (8, 3)]
    assert b.free_blocks_by_order() == [1, 0, 1, 1]
    assert b.free_pages == 13
    assert list(aligned_blocks(0, 1 << 12, 10)) == [(i << 10, 10) for i in range(4)]


def test_alloc_takes_the_lowest_block_of_the_smallest_fitting_order_and_splits_it() -> None:
    b = BuddyAllocator(0, 16, 4)
    assert b.alloc(0) == 0
    assert b.free_blocks() == [(1, 0), (2, 1), (4, 2), (8, 3)]
    assert b.alloc(1) == 2  # an order-1 block exists: no split of the larger ones
    assert b.alloc(0) == 1
    assert b.alloc(2) == 4
    assert b.alloc(2) == 8  # splits the order-3 block, keeps its lower half
    assert b.free_blocks() == [(12, 2)]
    assert b.alloc(3) is None
    assert b.largest_free_order() == 2


def test_free_merges_buddies_back_into_the_largest_block() -> None:
    b = BuddyAllocator(0, 16, 4)
    got = [b.alloc(0) for _ in range(16)]
    assert got == list(range(16)) and b.free_pages == 0
    for p in reversed(got):
        assert p is not None
        b.free(p, 0)
    assert b.free_blocks() == [(0, 4)]
    b.check()


def test_blocks_never_merge_above_max_order_or_across_the_range_edge() -> None:
    b = BuddyAllocator(4, 12, 3)  # [4, 16): the buddy of block 4/2 is 0/2, outside the range
    assert b.free_blocks() == [(4, 2), (8, 3)]
    b2 = BuddyAllocator(0, 64, 2)
    assert b2.free_blocks_by_order() == [0, 0, 16]


def test_below_limits_the_end_of_the_block() -> None:
    b = BuddyAllocator(0, 32, 4)
    assert b.alloc(0) == 0
    b.take_range(1, 3)  # pfns 1..3 gone: order-2 block 4, order-3 block 8, order-4 block 16 free
    assert b.alloc(2, below=8) == 4
    assert b.alloc(0, below=8) is None  # only blocks at 8 and above are left
    assert b.alloc(3, below=16) == 8
    assert b.alloc(0, below=17) == 16
    assert b.largest_free_order(below=20) == 1  # 18/1 ends at 20; 20/2 would end at 24
    assert b.largest_free_order() == 3


def test_double_free_wrong_order_and_interior_pfn_are_named() -> None:
    b = BuddyAllocator(0x100, 0x100, 4)
    p = b.alloc(2)
    assert p == 0x100
    with pytest.raises(BuddyError, match=r"pfn 0x100 was allocated with order 2 but freed with order 1"):
        b.free(p, 1)
    inside = r"pfn 0x101 is not the start of an allocated block \(it lies inside the order-2 block at pfn 0x100\)"
    with pytest.raises(BuddyError, match=inside):
        b.free(0x101, 0)
    b.free(p, 2)
    with pytest.raises(DoubleFree, match=r"double free of pfn 0x100 \(order 2\)"):
        b.free(p, 2)
    with pytest.raises(BuddyError, match=r"pfn 0x50 is outside \[0x100, 0x200\)"):
        b.free(0x50, 0)
    with pytest.raises(BuddyError, match="order 5 is outside 0..4"):
        b.alloc(5)
    b.check()


def test_take_release_and_claim_ranges() -> None:
    b = BuddyAllocator(0, 64, 3)
    b.take_range(5, 20)  # splits blocks around [5, 25)
    assert b.free_runs() == [(0, 5), (25, 39)]
    assert b.free_pages == 44
    with pytest.raises(BuddyError, match=r"pfn 0x5 is not free"):
        b.take_range(4, 2)
    with pytest.raises(DoubleFree, match=r"pfn 0x4 is already free"):
        b.release_range(4, 2)
    b.claim(8, 3)  # taken pages 8..15 become an allocated order-3 block
    with pytest.raises(BuddyError, match=r"order-3 block at pfn 0x8 is allocated"):
        b.release_range(5, 20)
    b.free(8, 3)
    b.release_range(5, 3)
    b.release_range(16, 9)
    assert b.free_blocks() == [(i, 3) for i in range(0, 64, 8)]
    with pytest.raises(BuddyError, match="not entirely taken"):
        b.claim(0, 3)
    b.check()


def test_unusable_free_space_index() -> None:
    b = BuddyAllocator(0, 16, 4)
    assert b.unusable_index(4) == 0.0
    for p in range(0, 16, 2):
        b.take_range(p, 1)  # every other page: 8 free order-0 blocks
    assert b.unusable_index(0) == 0.0
    assert b.unusable_index(1) == 1.0
    b.release_range(0, 1)  # pages 0 and 1 merge into an order-1 block
    assert b.unusable_index(1) == pytest.approx(7 / 9)


def test_longest_free_run_crosses_block_boundaries() -> None:
    b = BuddyAllocator(0, 64, 3)
    b.take_range(0, 3)
    b.take_range(40, 1)
    assert b.longest_free_run(0, 64) == 37  # pfns 3..39 span several blocks
    assert b.longest_free_run(41, 64) == 23
    assert b.longest_free_run(10, 20) == 10
    assert b.free_pages_in(0, 8) == 5


# -- oracle ------------------------------------------------------------------------------
def canonical_blocks(free: set[int], base: int, end: int, max_order: int) -> list[tuple[int, int]]:
    """The buddy free lists implied by a set of free pages: maximal aligned all-free blocks."""
    blocks = []
    p = base
    while p < end:
        if p not in free:
            p += 1
            continue
        k = 0
        while (
            k < max_order
            and p % (1 << (k + 1)) == 0
            and p + (1 << (k + 1)) <= end
            and all(q in free for q in range(p, p + (1 << (k + 1))))
        ):
            k += 1
        blocks.append((p, k))
        p += 1 << k
    return blocks


def oracle_alloc(blocks: list[tuple[int, int]], order: int, below: int | None) -> int | None:
    for k in sorted({k for _, k in blocks}):
        if k < order:
            continue
        fits = [p for p, kk in blocks if kk == k and (below is None or p + (1 << order) <= below)]
        if fits:
            return min(fits)
    return None


ops = st.lists(
    st.one_of(
        st.tuples(st.just("alloc"), st.integers(0, 5), st.one_of(st.none(), st.integers(0, 300))),
        st.tuples(st.just("free"), st.integers(0, 1000), st.none()),
        st.tuples(st.just("take"), st.integers(0, 300), st.integers(1, 40)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(base=st.integers(0, 70), npages=st.integers(1, 200), max_order=st.integers(0, 5), script=ops)
def test_buddy_matches_a_page_level_oracle(
    base: int, npages: int, max_order: int, script: list[tuple[str, int, int | None]]
) -> None:
    b = BuddyAllocator(base, npages, max_order)
    end = base + npages
    free = set(range(base, end))
    held: list[tuple[int, int]] = []
    ranges: list[tuple[int, int]] = []
    for op, x, y in script:
        if op == "alloc":
            order = min(x, max_order)
            below = None if y is None else base + y
            want = oracle_alloc(canonical_blocks(free, base, end, max_order), order, below)
            got = b.alloc(order, below=below)
            assert got == want
            if got is not None:
                held.append((got, order))
                free -= set(range(got, got + (1 << order)))
        elif op == "free" and held:
            p, order = held.pop(x % len(held))
            b.free(p, order)
            free |= set(range(p, p + (1 << order)))
        elif op == "take":
            lo = base + x % npages
            n = min(y or 1, end - lo)
            if all(q in free for q in range(lo, lo + n)):
                b.take_range(lo, n)
                free -= set(range(lo, lo + n))
                ranges.append((lo, n))
            else:
                with pytest.raises(BuddyError):
                    b.take_range(lo, n)
        assert b.free_blocks() == canonical_blocks(free, base, end, max_order)
        assert b.free_pages == len(free)
    for lo, n in ranges:
        b.release_range(lo, n)
    for p, order in held:
        b.free(p, order)
    assert b.free_blocks() == canonical_blocks(set(range(base, end)), base, end, max_order)
    b.check()


def test_a_16_gib_range_seeds_and_serves_quickly() -> None:
    t0 = time.perf_counter()
    b = BuddyAllocator(0x100, 4 << 20, 10)  # 4 Mi pages = 16 GiB of 4 KiB pages
    assert b.free_blocks_by_order()[10] == (4 << 20) // 1024 - 1  # 0x100 is not 1024-aligned
    got = [b.alloc(0) for _ in range(5000)] + [b.alloc(10) for _ in range(500)]
    assert None not in got
    for order, p in zip([0] * 5000 + [10] * 500, got):
        assert p is not None
        b.free(p, order)
    assert b.free_pages == 4 << 20
    assert b.longest_free_run(0, 1 << 30) == 4 << 20
    assert time.perf_counter() - t0 < 5.0
