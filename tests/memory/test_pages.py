"""PageAllocator: zone fallback, limits, CMA lending and migration, compaction, OOM counting."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swiotlb.memory import (
    GFP_ATOMIC,
    GFP_DMA,
    GFP_HIGHUSER_MOVABLE,
    GFP_KERNEL,
    GFP_NOFS,
    GFP_NOWAIT,
    BuddyError,
    CmaRegion,
    DoubleFree,
    Gfp,
    PageAllocator,
    PageError,
    SleepInAtomicContext,
    ZoneLayout,
)

MIB = 1 << 20
GIB = 1 << 30
PAGE = 4096


def normal_only(ram: int = 64 * MIB, **kw: Any) -> PageAllocator:
    return PageAllocator(ZoneLayout(ram, dma_bits=None, dma32=False), **kw)


class Tracker:
    """An owner of movable pages that follows migrations, as page tables do."""

    def __init__(self, pa: PageAllocator, owner: str = "lru") -> None:
        self.pa, self.owner = pa, owner
        self.held: dict[int, int] = {}
        self.moves: list[tuple[int, int, int]] = []
        pa.set_migration_hook(owner, self.moved)

    def moved(self, old: int, new: int, order: int) -> None:
        assert self.held.pop(old) == order
        self.held[new] = order
        self.moves.append((old, new, order))

    def alloc(self, order: int = 0) -> int | None:
        p = self.pa.alloc_pages(order, GFP_HIGHUSER_MOVABLE, owner=self.owner)
        if p is not None:
            self.held[p] = order
        return p

    def free(self, p: int) -> None:
        self.pa.free_pages(p, self.held.pop(p))


def test_zone_fallback_goes_from_normal_down_to_dma() -> None:
    pa = PageAllocator(ZoneLayout(32 * MIB, dma_bits=24, dma32=False))  # DMA 16 MiB, Normal 16 MiB
    got = [pa.alloc_pages(10) for _ in range(8)]
    assert got == [16 * MIB + i * 4 * MIB for i in range(4)] + [i * 4 * MIB for i in range(4)]
    assert pa.alloc_pages(10) is None
    assert pa.stats.allocations == {("Normal", 10): 4, ("DMA", 10): 4}
    assert pa.stats.failures == {("Normal", 10): 1}
    pa.free_pages(0, 10)
    pa.free_pages(16 * MIB, 10)
    assert pa.alloc_pages(0, GFP_KERNEL | GFP_DMA) == 0  # __GFP_DMA never looks at Normal
    pa.check()


def test_a_30_bit_limit_never_returns_memory_above_1_gib() -> None:
    pa = PageAllocator(ZoneLayout.rpi4(8 * GIB))
    rng = random.Random(5)
    limit = GIB - 1
    total = 0
    while True:
        order = rng.choice([0, 3, 9, 10])
        p = pa.alloc_pages(order, GFP_KERNEL, limit=limit)
        if p is None:
            break
        assert p + (PAGE << order) - 1 <= limit
        total += PAGE << order
    assert total > GIB - 4 * MIB  # it failed only once 1 GiB was (nearly) used up
    assert pa.free_bytes(limit) < 4 * MIB
    assert pa.alloc_pages(10) is not None  # memory above the limit is untouched
    x86 = PageAllocator(ZoneLayout.x86_64(8 * GIB))
    p = x86.alloc_pages(9, GFP_KERNEL, limit=GIB - 1)  # Normal is above the limit: DMA32 serves it
    assert p is not None and 16 * MIB <= p < GIB and x86.layout.zone_of(p).name == "DMA32"


def test_failures_are_counted_and_oom_events_follow_the_kernel_rules() -> None:
    pa = normal_only(16 * MIB)
    assert pa.alloc_pages(11) is None  # above MAX_PAGE_ORDER: always fails, no OOM killer
    assert pa.stats.failures[("Normal", 11)] == 1 and pa.stats.oom_events == 0
    while pa.alloc_pages(0, GFP_NOWAIT) is not None:
        pass
    assert pa.stats.oom_events == 0 and pa.stats.warnings == 2  # atomic failure: no OOM
    assert pa.alloc_pages(0, GFP_KERNEL, owner="app") is None
    assert pa.alloc_pages(0, GFP_KERNEL | Gfp.NOWARN, owner="app") is None
    assert pa.alloc_pages(3, GFP_KERNEL) is None  # costly order is 3: still an OOM
    assert pa.alloc_pages(4, GFP_KERNEL) is None  # above it: no OOM
    assert pa.alloc_pages(0, GFP_KERNEL | GFP_DMA) is None  # lowmem request: no OOM
    assert pa.alloc_pages(0, GFP_KERNEL, limit=8 * MIB) is None  # constrained: no OOM
    assert pa.alloc_pages(0, GFP_NOFS) is None  # no OOM kill without __GFP_FS
    assert pa.stats.oom_events == 3 and pa.stats.oom_by_owner == {"app": 2, "": 1}
    assert pa.stats.warnings == 8


def test_free_errors_name_the_address() -> None:
    pa = normal_only(16 * MIB, reserved=[(0, PAGE)])
    p = pa.alloc_pages(2)
    assert p == 4 * PAGE
    with pytest.raises(BuddyError, match=r"free_pages\(0x4000, order 1\): pfn 0x4 was allocated with order 2"):
        pa.free_pages(p, 1)
    with pytest.raises(BuddyError, match=r"pfn 0x5 is not the start of an allocated block"):
        pa.free_pages(p + PAGE, 0)
    pa.free_pages(p, 2)
    with pytest.raises(DoubleFree, match=r"double free of 0x4000"):
        pa.free_pages(p, 2)
    with pytest.raises(PageError, match="not page aligned"):
        pa.free_pages(p + 1, 0)
    with pytest.raises(PageError, match="outside RAM"):
        pa.free_pages(1 << 40, 0)
    with pytest.raises(PageError, match="0x0 is reserved memory"):
        pa.free_pages(0, 0)
    c = pa.alloc_contig(MIB)
    assert c is not None
    with pytest.raises(PageError, match="free_contig"):
        pa.free_pages(c, 0)
    with pytest.raises(PageError, match="not the start of a contiguous allocation"):
        pa.free_contig(c + PAGE)
    pa.free_contig(c)
    pa.check()


def test_cma_is_lent_only_to_movable_allocations() -> None:
    pa = normal_only(64 * MIB, cma=[CmaRegion(32 * MIB, 32 * MIB)])
    assert pa.free_bytes() == 64 * MIB and pa.free_bytes(include_cma=False) == 32 * MIB
    lru = Tracker(pa)
    first = lru.alloc()
    assert first is not None and not pa.in_cma(first)  # half the free memory is CMA: normal first
    assert pa.alloc_pages(10) == 4 * MIB  # now CMA is more than half of what is free
    lent = lru.alloc()
    assert lent == 32 * MIB and pa.in_cma(lent) and pa.page_kind(lent) == "movable"
    assert pa.stats.cma_lent == 1
    while pa.alloc_pages(0, GFP_NOWAIT) is not None:  # unmovable memory never comes from CMA
        pass
    assert pa.free_bytes(include_cma=False) == 0
    assert pa.free_bytes() == 32 * MIB - PAGE
    assert lru.alloc() is not None  # movable still fits, in CMA
    assert set(pa.buddyinfo()) == {"Normal", "cma@0x2000000"}
    pa.check()


def test_alloc_contig_migrates_lent_pages_out_of_cma_and_counts_them() -> None:
    pa = normal_only(64 * MIB, cma=[CmaRegion(32 * MIB, 16 * MIB)], migrate_cost_ns_per_page=1500)
    for _ in range(9):
        assert pa.alloc_pages(10) is not None  # 36 of 48 MiB outside CMA: CMA is now the larger part
    lru = Tracker(pa)
    for _ in range(1024):
        assert lru.alloc() is not None
    assert all(32 * MIB <= p < 36 * MIB for p in lru.held)  # lent from the bottom of CMA
    with pytest.raises(SleepInAtomicContext, match="cannot sleep"):
        pa.alloc_contig(8 * MIB, gfp=GFP_ATOMIC)
    with pytest.raises(SleepInAtomicContext):
        pa.alloc_contig(8 * MIB, gfp=GFP_NOWAIT)
    p = pa.alloc_contig(8 * MIB, owner="display")
    assert p == 32 * MIB
    assert pa.stats.migrated_pages == 1024 and pa.stats.migration_cost_ns == 1024 * 1500
    assert len(lru.moves) == 1024
    assert all(not p <= q < p + 8 * MIB and pa.page_kind(q) == "movable" for q in lru.held)
    assert pa.page_kind(p) == pa.page_kind(p + 8 * MIB - PAGE) == "contig"
    assert pa.bytes_by_owner()["display"] == 8 * MIB
    pa.check()
    pa.free_contig(p)
    assert pa.page_kind(p) == "free" and pa.in_cma(p)
    for q in list(lru.held):
        lru.free(q)
    assert pa.free_bytes() == 64 * MIB - 36 * MIB
    pa.check()


def test_pages_of_an_owner_without_a_migration_hook_are_pinned() -> None:
    pa = normal_only(64 * MIB, cma=[CmaRegion(60 * MIB, 4 * MIB)])
    while pa.alloc_pages(10, GFP_NOWAIT) is not None:
        pass
    pinned = [pa.alloc_pages(0, GFP_HIGHUSER_MOVABLE, owner="gup") for _ in range(1024)]
    assert all(p is not None and pa.page_kind(p) == "pinned" and pa.in_cma(p) for p in pinned)
    assert pa.alloc_contig(MIB, cma_only=True) is None
    assert pa.stats.contig_failures == 1 and pa.stats.migrated_pages == 0
    for p in pinned[:256]:
        assert p is not None
        pa.free_pages(p, 0)
    assert pa.alloc_contig(MIB, cma_only=True) == 60 * MIB


def test_direct_compaction_serves_sleeping_callers_only() -> None:
    pa = normal_only(16 * MIB)
    lru = Tracker(pa)
    pages = [lru.alloc() for _ in range(4096)]
    assert None not in pages and pa.free_bytes() == 0
    for p in pages[::2]:
        assert p is not None
        lru.free(p)
    assert pa.largest_free_order() == 0
    assert pa.alloc_pages(3, GFP_NOWAIT) is None
    assert pa.stats.compactions == 0
    p = pa.alloc_pages(3, GFP_KERNEL)
    assert p == 0 and pa.page_kind(p) == "unmovable"
    assert pa.stats.compactions == pa.stats.compaction_successes == 1
    assert pa.stats.migrated_pages == 4  # the odd pages of block 0..7 moved away
    pa.free_pages(p, 3)
    no_compaction = normal_only(16 * MIB, compaction=False)
    lru2 = Tracker(no_compaction)
    for q in [lru2.alloc() for _ in range(4096)][::2]:
        assert q is not None
        lru2.free(q)
    assert no_compaction.alloc_pages(3, GFP_KERNEL) is None
    pa.check()


def test_alloc_contig_outside_cma_migrates_movable_pages_below_the_limit() -> None:
    pa = normal_only(64 * MIB)
    lru = Tracker(pa)
    for _ in range(8192):  # the lowest 32 MiB
        assert lru.alloc() is not None
    assert pa.alloc_contig(8 * MIB, cma_only=True) is None
    p = pa.alloc_contig(8 * MIB, limit=16 * MIB - 1)
    assert p == 0
    assert pa.stats.migrated_pages == 2048
    assert all(q >= 8 * MIB for q in lru.held)  # moved to [32, 40) MiB, the lowest free pages
    assert pa.largest_contiguous() == 24 * MIB  # [40, 64) MiB
    pa.check()


def test_reserved_ranges_and_free_space_queries() -> None:
    pa = normal_only(64 * MIB, reserved=[(0, MIB), (10 * MIB + 5, 10)])
    assert pa.page_kind(0) == "reserved" and pa.page_kind(10 * MIB) == "reserved"
    assert pa.free_bytes() == 64 * MIB - MIB - PAGE
    assert pa.free_bytes(limit=2 * MIB - 1) == MIB
    assert pa.largest_contiguous() == 54 * MIB - PAGE
    assert pa.largest_contiguous(limit=10 * MIB - 1) == 9 * MIB
    assert pa.largest_free_order() == 10 and pa.largest_free_order(limit=4 * MIB - 1) == 9
    x86 = PageAllocator(ZoneLayout.x86_64(8 * GIB, pci_hole=True))
    assert x86.page_kind(3 * GIB + 7) == "hole"
    assert x86.free_bytes() == 8 * GIB


def test_cma_regions_must_be_free_ram_inside_one_zone() -> None:
    with pytest.raises(ValueError, match="and the next zone"):
        PageAllocator(ZoneLayout(64 * MIB), cma=[CmaRegion(8 * MIB, 16 * MIB)])
    with pytest.raises(ValueError, match="is not free RAM"):
        normal_only(64 * MIB, reserved=[(0, MIB)], cma=[CmaRegion(0, 4 * MIB)])
    with pytest.raises(ValueError, match="page-aligned"):
        normal_only(64 * MIB, cma=[CmaRegion(100, 4 * MIB)])
    lay = ZoneLayout(64 * MIB)
    PageAllocator(lay)
    with pytest.raises(ValueError, match="already backs a PageAllocator"):
        PageAllocator(lay)


def test_fault_injection_fails_atomic_high_order_allocations_only() -> None:
    with pytest.raises(ValueError, match="explicit rng"):
        normal_only(fault_rate=0.5)
    pa = normal_only(16 * MIB, rng=random.Random(1), fault_rate=1.0)
    assert pa.alloc_pages(1, GFP_NOWAIT) is None
    assert pa.alloc_pages(0, GFP_NOWAIT) is not None
    assert pa.alloc_pages(1, GFP_KERNEL) is not None
    assert pa.stats.injected_failures == 1


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 10**6)), max_size=40))
def test_random_operations_keep_every_map_consistent(script: list[tuple[int, int]]) -> None:
    pa = PageAllocator(ZoneLayout(16 * MIB, dma_bits=23, dma32=False), cma=[CmaRegion(12 * MIB, 2 * MIB)])
    lru = Tracker(pa)
    plain: list[tuple[int, int]] = []
    contig: list[int] = []
    for op, x in script:
        if op == 0:
            order = x % 5
            gfp = [GFP_KERNEL, GFP_NOWAIT, GFP_KERNEL | GFP_DMA][x % 3]
            p = pa.alloc_pages(order, gfp)
            if p is not None:
                assert p % (PAGE << order) == 0
                plain.append((p, order))
        elif op == 1:
            lru.alloc(x % 4)
        elif op == 2 and plain:
            pa.free_pages(*plain.pop(x % len(plain)))
        elif op == 3 and lru.held:
            lru.free(sorted(lru.held)[x % len(lru.held)])
        elif op == 4:
            p = pa.alloc_contig(PAGE * (1 + x % 700), cma_only=bool(x & 1))
            if p is not None:
                contig.append(p)
        elif op == 5 and contig:
            pa.free_contig(contig.pop(x % len(contig)))
        pa.check()
        assert all(pa.page_kind(q) == "movable" for q in lru.held)
    for p, order in plain:
        pa.free_pages(p, order)
    for p in contig:
        pa.free_contig(p)
    for q in list(lru.held):
        lru.free(q)
    assert pa.free_bytes() == 16 * MIB
    pa.check()


def test_memory_reserved_at_boot_can_be_freed_once() -> None:
    from swiotlb.memory import PageError

    pages = PageAllocator(ZoneLayout.x86_64(1 << 30), reserved=[(0x2000_0000, 1 << 20)])
    free0 = pages.free_bytes()
    pages.free_reserved(0x2000_0000, 1 << 20)
    assert pages.free_bytes() == free0 + (1 << 20) and pages.page_kind(0x2000_0000) == "free"
    pages.check()
    with pytest.raises(PageError, match="0x20000000 is free memory, not reserved"):
        pages.free_reserved(0x2000_0000, 1 << 20)
    with pytest.raises(ValueError, match="not page-aligned"):
        pages.free_reserved(0x2000_0001, 4096)
