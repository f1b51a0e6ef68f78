"""The fast slot search answers exactly as the kernel's probe-by-probe loop (spec §3.3, §3.4).

``search_area_literal`` transcribes the kernel's counted loop; ``search_area_fast`` reaches its
answers through an arithmetic-progression argument, regex scans of the ``list`` bytes and a
per-area upper-bound index that searches lower lazily and releases raise. These tests drive
pools into fragmented states (with the index as stale as real use leaves it) and compare both
searches request by request, then pin down the corners the argument has to get right.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swiotlb.core import DeviceParams, IoTlbMem, IoTlbPool, SlotMapping
from swiotlb.core.constants import (
    IO_TLB_SEGSIZE,
    IO_TLB_SHIFT,
    IO_TLB_SIZE,
    U64_MASK,
    get_max_slots,
    is_span_boundary,
    nr_slots,
)
from swiotlb.core.pool import SEGS_PER_BLOCK
from swiotlb.core.profiles import V5_15, V6_6, V6_12, KernelProfile, SearchMasks
from swiotlb.core.search import (
    SearchRequest,
    alignment_progression,
    free_slots,
    search_area_fast,
    search_area_literal,
    take_slots,
)

# Deterministic: derandomized, no example database, no deadline (pool set-up dominates).
settings.register_profile(
    "swiotlb-core-search",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SEARCH_SETTINGS = settings.get_profile("swiotlb-core-search")

PROFILES = (V6_12, V6_6, V5_15)
PAGE = 4096


# -- helpers -------------------------------------------------------------------------------


def make_request(
    pool: IoTlbPool, nslots: int, masks: SearchMasks, orig_addr: int, seg_boundary_mask: int
) -> SearchRequest:
    """What the kernel computes before taking the area lock (spec §3.3)."""
    tbl = pool.start & seg_boundary_mask
    return SearchRequest(
        nslots=nslots,
        masks=masks,
        orig_addr=orig_addr,
        tbl_dma=tbl,
        shift=nr_slots(tbl),
        max_slots=get_max_slots(seg_boundary_mask),
    )


def tight_index(pool: IoTlbPool, area_index: int) -> tuple[bytearray, bytearray]:
    """The exact per-segment / per-block maxima of the free runs of one area."""
    base = area_index * pool.area_nslabs
    nsegs = -(-pool.area_nslabs // IO_TLB_SEGSIZE)
    segub = bytearray(
        max(pool.list[base + (s << 7) : base + min((s + 1) << 7, pool.area_nslabs)])
        for s in range(nsegs)
    )
    nblocks = -(-nsegs // SEGS_PER_BLOCK)
    blkub = bytearray(
        max(segub[b * SEGS_PER_BLOCK : (b + 1) * SEGS_PER_BLOCK]) for b in range(nblocks)
    )
    return segub, blkub


def clone(pool: IoTlbPool, *, fresh_index: bool = False) -> IoTlbPool:
    """An independent copy of what a search reads; ``fresh_index`` rebuilds the index tight.

    Per-slot ``orig_addr``/``alloc_size``/``pad_slots`` are not copied: no search reads them.
    """
    c = IoTlbPool(pool.start, pool.nslabs, pool.nareas, list_capped=pool.list_capped)
    c.list[:] = pool.list  # searches read only list, the cursors, used and the index
    for a, (src, dst) in enumerate(zip(pool.areas, c.areas)):
        dst.index = src.index
        dst.used = src.used
        if fresh_index:
            dst.segub, dst.blkub = tight_index(pool, a)
        else:
            dst.segub = bytearray(src.segub)
            dst.blkub = bytearray(src.blkub)
    return c


def observable(pool: IoTlbPool) -> tuple[bytes, tuple[tuple[int, int], ...]]:
    return bytes(pool.list), tuple((a.index, a.used) for a in pool.areas)


def assert_same_answer(pool: IoTlbPool, area_index: int, req: SearchRequest) -> int:
    """Literal on the pool, fast on a copy (stale index) and on a copy with a tight index."""
    before = observable(pool)
    want = search_area_literal(pool, area_index, req)
    stale = clone(pool)
    fresh = clone(pool, fresh_index=True)
    got_stale = search_area_fast(stale, area_index, req)
    got_fresh = search_area_fast(fresh, area_index, req)
    context = (
        f"{pool!r} area={area_index} index={pool.areas[area_index].index} "
        f"used={pool.areas[area_index].used} req={req}"
    )
    assert got_stale == want, f"fast (stale index) {got_stale} != literal {want}: {context}"
    assert got_fresh == want, f"fast (tight index) {got_fresh} != literal {want}: {context}"
    # A search decides; it never changes the observable state (only the index may tighten).
    assert observable(pool) == before
    assert observable(stale) == before and observable(fresh) == before
    assert stale.free_run_errors() == [] and fresh.free_run_errors() == []
    if want >= 0:  # and the answer is a legal one
        assert pool.list[want] >= req.nslots
        assert not is_span_boundary(want, req.nslots, req.shift, req.max_slots)
    return want


def modulo_literal(pool: IoTlbPool, area_index: int, req: SearchRequest) -> int:
    """A *wrong* variant of the kernel loop that wraps with ``%`` instead of restarting at 0."""
    area = pool.areas[area_index]
    nslabs = pool.area_nslabs
    if req.nslots > nslabs - area.used:
        return -1
    base = area_index * nslabs
    index = area.index
    checked = 0
    while checked < nslabs:
        slot = base + index
        a = req.tbl_dma + (slot << IO_TLB_SHIFT)
        aligned = not (a & req.masks.align_mask) and not (
            req.orig_addr and (a & req.masks.iotlb_mask) != (req.orig_addr & req.masks.iotlb_mask)
        )
        if not aligned:
            index = (index + 1) % nslabs
            checked += 1
            continue
        crosses = is_span_boundary(slot, req.nslots, req.shift, req.max_slots)
        if not crosses and pool.list[slot] >= req.nslots:
            return slot
        index = (index + req.masks.stride) % nslabs
        checked += req.masks.stride
    return -1


_SIZES = (1, 1, 1, 2, 2, 3, 4, 5, 8, 16, 31, 32, 64, 127, 128)


def fragment(pool: IoTlbPool, rng: random.Random, nops: int, target: float) -> list[tuple[int, int]]:
    """Random takes and frees steering occupancy towards ``target``; returns live runs.

    Half of the takes go through the fast search (which tightens the index lazily), the rest
    pick a random free position, so states are fragmented in ways a next-fit cursor alone
    would not produce.
    """
    live: list[tuple[int, int]] = []
    plain = SearchMasks(IO_TLB_SIZE - 1, 0, 1)
    for _ in range(nops):
        occupied = pool.used / pool.nslabs
        p_map = min(0.95, max(0.05, 0.5 + 0.8 * (target - occupied)))
        if live and rng.random() >= p_map:
            index, n = live.pop(rng.randrange(len(live)))
            free_slots(pool, index, n)
            continue
        a = rng.randrange(pool.nareas)
        base = a * pool.area_nslabs
        n = rng.choice(_SIZES)
        slot = -1
        if rng.random() < 0.5:
            pool.areas[a].index = rng.randrange(pool.area_nslabs)
            req = SearchRequest(n, plain, 0, pool.start, nr_slots(pool.start), 1 << 60)
            slot = search_area_fast(pool, a, req)
        else:
            for _ in range(4):
                s = base + rng.randrange(pool.area_nslabs)
                if pool.list[s]:
                    slot = s
                    n = min(n, pool.list[s])
                    break
        if slot >= 0:
            take_slots(pool, a, slot, n, n * IO_TLB_SIZE)
            live.append((slot, n))
    return live


# -- strategies ----------------------------------------------------------------------------


def low_masks(lo_bits: int, hi_bits: int) -> st.SearchStrategy[int]:
    return st.integers(lo_bits, hi_bits).map(lambda k: (1 << k) - 1)


MIN_ALIGN = st.one_of(st.sampled_from([0, 0x3F, 0x7FF, 0xFFF, 0x1FFF, 0xFFFF]), low_masks(0, 32))
ALLOC_ALIGN = st.one_of(st.sampled_from([0, 0xFFF, 0x1FFF, 0xFFFF]), low_masks(0, 22))
SEG_MASK = st.one_of(
    st.sampled_from([0xFFFF, 0x1FFFF, 0xFFFFFFFF, U64_MASK]), low_masks(11, 64)
)
ORIG_ADDR = st.one_of(
    st.just(0),
    st.integers(0, U64_MASK),
    st.integers(0, 1 << 28).map(lambda p: p << 12 | 0x800),
    st.integers(0, (1 << 40) - 1),
)
NSLOTS = st.one_of(
    st.integers(1, 8), st.integers(1, 130), st.sampled_from([31, 32, 33, 64, 127, 128, 129, 130])
)
POOL_START = st.one_of(
    st.integers(0, 1 << 20).map(lambda p: p * PAGE),  # low memory, up to 4 GiB
    st.integers(0, 1 << 51).map(lambda p: p * PAGE),  # anywhere below 2**63
    st.tuples(st.integers(1, 64), st.integers(-800, 800)).map(  # straddling a 4 GiB multiple
        lambda t: (t[0] << 32) + t[1] * PAGE
    ),
    st.integers(0, 1 << 14).map(lambda p: p << 16 | 0x3000),  # 64 KiB windows mid-segment
)


@st.composite
def pool_shapes(draw: st.DrawFn, max_segments: int = 24) -> tuple[int, int, int]:
    """``(start, nslabs, nareas)``: nslabs a multiple of 128 and of 128 * nareas."""
    nareas = draw(st.sampled_from([1, 1, 2, 4, 8]))
    per_area = draw(st.integers(1, max(1, max_segments // nareas)))
    return draw(POOL_START), nareas * per_area * IO_TLB_SEGSIZE, nareas


@st.composite
def requests(draw: st.DrawFn, pool: IoTlbPool) -> tuple[int, int, SearchRequest]:
    """``(area, cursor, request)`` with masks from every profile's alignment rules."""
    profile: KernelProfile = draw(st.sampled_from(PROFILES))
    nslots = draw(NSLOTS)
    size = nslots * IO_TLB_SIZE - draw(st.integers(0, IO_TLB_SIZE - 1))
    page = draw(st.sampled_from([4096, 4096, 4096, 16384, 65536]))
    masks = profile.search_masks(size, draw(MIN_ALIGN), draw(ALLOC_ALIGN), page)
    req = make_request(pool, nslots, masks, draw(ORIG_ADDR), draw(SEG_MASK))
    area = draw(st.integers(0, pool.nareas - 1))
    n = pool.area_nslabs
    cursor = draw(
        st.one_of(
            st.integers(0, n - 1),
            st.integers(0, 40).map(lambda k: max(0, n - 1 - k)),  # near the area end
            st.just(0),
            st.integers(0, n // 32).map(lambda k: min(n - 1, k * 32)),
        )
    )
    return area, cursor, req


# -- differential properties ---------------------------------------------------------------


@settings(SEARCH_SETTINGS, max_examples=160)
@given(shape=pool_shapes(), seed=st.integers(0, 2**32 - 1),
       target=st.sampled_from([0.0, 0.3, 0.6, 0.85, 0.95, 1.2]), nops=st.integers(0, 400),
       data=st.data())
def test_fast_equals_literal_on_fragmented_pools(
    shape: tuple[int, int, int], seed: int, target: float, nops: int, data: st.DataObject
) -> None:
    start, nslabs, nareas = shape
    pool = IoTlbPool(start, nslabs, nareas)
    fragment(pool, random.Random(seed), nops, target)
    assert pool.free_run_errors() == []
    for _ in range(data.draw(st.integers(1, 12), label="nrequests")):
        area, cursor, req = data.draw(requests(pool), label="request")
        pool.areas[area].index = cursor
        assert_same_answer(pool, area, req)


def random_request(
    rng: random.Random, pool: IoTlbPool, profile: KernelProfile, min_align: int, seg_mask: int
) -> tuple[int, int, SearchRequest]:
    """``(area, size, request)`` of a typical driver map: sizes, alignments and offsets mixed."""
    nslots = rng.choice((1, 1, 2, 3, 4, 8, 16, 32, 33, 100, 128))
    size = nslots * IO_TLB_SIZE - rng.randrange(IO_TLB_SIZE)
    align = rng.choice((0, 0, 0xFFF, 0x1FFF, 0xFFFF))
    orig = rng.choice((0, rng.randrange(1 << 40), rng.randrange(1 << 28) << 12 | 0x800))
    masks = profile.search_masks(size, min_align, align, PAGE)
    return rng.randrange(pool.nareas), size, make_request(pool, nslots, masks, orig, seg_mask)


@settings(SEARCH_SETTINGS, max_examples=60)
@given(shape=pool_shapes(max_segments=16), seed=st.integers(0, 2**32 - 1),
       profile=st.sampled_from([V6_12, V6_6]), data=st.data())
def test_fast_equals_literal_along_a_search_sequence(
    shape: tuple[int, int, int], seed: int, profile: KernelProfile, data: st.DataObject
) -> None:
    """Searches that take what they find: the index goes stale exactly as in real use."""
    start, nslabs, nareas = shape
    pool = IoTlbPool(start, nslabs, nareas)
    rng = random.Random(seed)
    live: list[tuple[int, int]] = []
    min_align = data.draw(MIN_ALIGN, label="min_align_mask")
    seg_mask = data.draw(SEG_MASK, label="seg_boundary_mask")
    for _ in range(data.draw(st.integers(20, 120), label="nops")):
        if live and rng.random() < 0.35:
            free_slots(pool, *live.pop(rng.randrange(len(live))))
            continue
        area, size, req = random_request(rng, pool, profile, min_align, seg_mask)
        nslots = req.nslots
        slot = assert_same_answer(pool, area, req)
        if slot >= 0:
            take_slots(pool, area, slot, nslots, size)
            live.append((slot, nslots))
    assert pool.free_run_errors() == []


@st.composite
def mem_scripts(draw: st.DrawFn) -> tuple[KernelProfile, list[tuple[int, int, int]], int, int, int]:
    profile = draw(st.sampled_from([V6_12, V6_6]))
    npools = draw(st.integers(1, 3))
    shapes = []
    base = draw(st.integers(1, 1 << 20)) << 24  # pools laid out one after another, no overlap
    for _ in range(npools):
        nareas = draw(st.sampled_from([1, 2, 4, 8]))
        nslabs = nareas * draw(st.integers(1, max(1, 8 // nareas))) * IO_TLB_SEGSIZE
        shapes.append((base + draw(st.integers(0, 15)) * PAGE, nslabs, nareas))
        base += 1 << 24
    return profile, shapes, draw(MIN_ALIGN), draw(SEG_MASK), draw(st.integers(0, 2**32 - 1))


@settings(SEARCH_SETTINGS, max_examples=40)
@given(script=mem_scripts())
def test_allocator_fast_and_literal_agree_op_by_op(
    script: tuple[KernelProfile, list[tuple[int, int, int]], int, int, int],
) -> None:
    """IoTlbMem(fast=True) and IoTlbMem(fast=False) in lockstep over maps and unmaps."""
    profile, shapes, min_align, seg_mask, seed = script
    rng = random.Random(seed)
    mems = [
        IoTlbMem([IoTlbPool(s, n, a) for s, n, a in shapes], profile, dynamic=True, fast=fast)
        for fast in (True, False)
    ]
    dev = DeviceParams(min_align, seg_mask)
    live: list[tuple[SlotMapping, SlotMapping]] = []
    for _ in range(300):
        if live and rng.random() < 0.4:
            ma, mb = live.pop(rng.randrange(len(live)))
            assert mems[0].release_slots(dev, ma.tlb_addr) == mems[1].release_slots(dev, mb.tlb_addr)
            continue
        size = rng.choice((1, 100, 2048, 2049, 4096, 6000, 8192, 65536, 200_000, 262_144))
        align = rng.choice((0, 0, 0xFFF, 0xFFFF))
        orig = rng.choice((0, rng.randrange(1 << 40)))
        cpu = rng.randrange(16)
        a, b = (m.tbl_map_single(dev, orig, size, align, cpu=cpu) for m in mems)
        if isinstance(a, SlotMapping):
            assert isinstance(b, SlotMapping)
            assert (a.tlb_addr, a.index, a.pad_slots, a.nslots, a.pool.start) == (
                b.tlb_addr, b.index, b.pad_slots, b.nslots, b.pool.start
            )
            live.append((a, b))
            if profile is V6_12 and orig:
                # returned-address property (spec §3.1; all masks here are 2**k - 1)
                assert a.tlb_addr & min_align == orig & min_align
        else:
            assert a == b
    for pa, pb in zip(mems[0].pools, mems[1].pools):
        assert observable(pa) == observable(pb)
    assert mems[0].counters() == mems[1].counters()
    assert mems[0].check_invariants() == [] and mems[1].check_invariants() == []


@settings(SEARCH_SETTINGS, max_examples=25)
@given(shape=pool_shapes(), seed=st.integers(0, 2**32 - 1),
       profile=st.sampled_from([V6_12, V6_6]), min_align=MIN_ALIGN, seg_mask=SEG_MASK)
def test_upper_bound_index_never_hides_a_free_run(
    shape: tuple[int, int, int], seed: int, profile: KernelProfile, min_align: int, seg_mask: int
) -> None:
    """After many fast maps and releases, every segment's bound still covers its runs."""
    start, nslabs, nareas = shape
    mem = IoTlbMem([IoTlbPool(start, nslabs, nareas)], profile, fast=True)
    pool = mem.pools[0]
    dev = DeviceParams(min_align, seg_mask)
    rng = random.Random(seed)
    live: list[SlotMapping] = []
    for step in range(600):
        target = 0.9 if (step // 100) % 2 else 0.4
        if live and rng.random() > 0.5 + 0.8 * (target - pool.used / nslabs):
            mem.release_slots(dev, live.pop(rng.randrange(len(live))).tlb_addr)
        else:
            size = rng.choice((1, 2048, 4096, 10_000, 65_536, 131_072, 262_144))
            res = mem.tbl_map_single(
                dev, rng.randrange(1 << 36), size, rng.choice((0, 0xFFF)), cpu=rng.randrange(8)
            )
            if isinstance(res, SlotMapping):
                live.append(res)
        if step % 25 == 0:
            assert pool.free_run_errors() == [], f"after op {step}"
    assert pool.free_run_errors() == []
    assert mem.check_invariants() == []
    for m in live:
        mem.release_slots(dev, m.tlb_addr)
    assert pool.free_run_errors() == []
    assert bytes(pool.list) == bytes(IoTlbPool(start, nslabs, nareas).list)


def test_free_run_errors_detects_a_bound_below_a_run() -> None:
    """The index check used above is able to fail."""
    pool = IoTlbPool(0x8000_0000, 256, 2)
    assert pool.free_run_errors() == []
    pool.areas[1].segub[0] = 5
    assert any("index bound 5 below a free run" in e for e in pool.free_run_errors())


# -- targeted cases ------------------------------------------------------------------------


def _pool_with_single_run(
    nslabs: int, run_start: int, run_len: int, start: int = 0x8000_0000
) -> IoTlbPool:
    """One area, everything taken except ``[run_start, run_start + run_len)``."""
    pool = IoTlbPool(start, nslabs, 1)
    for seg in range(0, nslabs, IO_TLB_SEGSIZE):
        take_slots(pool, 0, seg, IO_TLB_SEGSIZE, IO_TLB_SEGSIZE * IO_TLB_SIZE)
    free_slots(pool, run_start, run_len)
    assert pool.free_run_errors() == []
    return pool


def _stride31_request(pool: IoTlbPool, nslots: int = 2) -> SearchRequest:
    """v6.12, min_align 0xffff + alloc_align 0xfff, orig bits 0xf000: one slot in 32 aligned."""
    masks = V6_12.search_masks(nslots * IO_TLB_SIZE, 0xFFFF, 0xFFF, PAGE)
    assert masks == SearchMasks(align_mask=0xFFF, iotlb_mask=0xF000, stride=31)
    return make_request(pool, nslots, masks, 0x1234_F000, U64_MASK)


def test_stride_31_visits_every_aligned_slot() -> None:
    # Pool at 0x8000_0000 (64 KiB aligned): slot s is aligned iff s % 32 == 30.
    pool = _pool_with_single_run(256, 222, 2)
    req = _stride31_request(pool)
    assert alignment_progression(req) == (32, 30)
    pool.areas[0].index = 0
    assert assert_same_answer(pool, 0, req) == 222
    # A misaligned run is never taken, however long.
    pool = _pool_with_single_run(256, 200, 20)
    pool.areas[0].index = 0
    assert assert_same_answer(pool, 0, _stride31_request(pool)) == -1


@pytest.mark.parametrize(("cursor", "expected"), [(254, 222), (252, 222), (251, -1), (240, -1)])
def test_budget_runs_out_in_the_second_pass(cursor: int, expected: int) -> None:
    """Worked by hand: the first probe is slot 254 (aligned, taken); 254 + 31 >= 256 restarts
    at 0 (not 285 % 256 = 29), 30 misaligned checks reach slot 30, then each aligned probe
    costs 32 checks, so slot 222 is probed after 253 checks plus the (254 - cursor)
    misaligned checks before 254. The budget is 256 checks: cursor 252 still reaches 222,
    cursor 251 runs out one check short."""
    pool = _pool_with_single_run(256, 222, 2)
    req = _stride31_request(pool)
    pool.areas[0].index = cursor
    assert assert_same_answer(pool, 0, req) == expected


def test_wrap_restarts_at_zero_not_modulo() -> None:
    """Same state, cursor 240: a modulo wrap would still find slot 222 (it reaches slot 29
    after 254 and spends 31 fewer checks); the kernel's restart at 0 runs out first."""
    pool = _pool_with_single_run(256, 222, 2)
    req = _stride31_request(pool)
    pool.areas[0].index = 240
    assert modulo_literal(pool, 0, req) == 222
    assert search_area_literal(pool, 0, req) == -1
    assert search_area_fast(clone(pool), 0, req) == -1


def test_overshoot_near_area_end_with_stride_2() -> None:
    """v5.15-style masks (no alignment, stride 2) from cursor 255: 255 + 2 restarts at slot 0
    and walks the even slots; a modulo wrap would land on slot 1 and walk the odd ones."""
    pool = _pool_with_single_run(256, 1, 2)  # list[1] = 2, list[2] = 1
    free_slots(pool, 6, 2)  # list[6] = 2
    masks = V5_15.search_masks(2 * IO_TLB_SIZE, 0, 0, PAGE)
    assert masks == SearchMasks(align_mask=0, iotlb_mask=0, stride=2)
    req = make_request(pool, 2, masks, 0x4000_0000, U64_MASK)
    pool.areas[0].index = 255
    assert modulo_literal(pool, 0, req) == 1
    assert assert_same_answer(pool, 0, req) == 6
    pool.areas[0].index = 1
    assert assert_same_answer(pool, 0, req) == 1


def test_orig_addr_zero_under_v6_6_gets_no_alignment() -> None:
    """6.3-6.8 skip every alignment test when orig_addr is 0 (CVE-2024-35814): a page-sized
    request starts on an odd slot; 6.12 keeps page alignment through alloc_align_mask."""
    for profile, expected in ((V6_6, 1), (V6_12, 2)):
        pool = IoTlbPool(0x8000_0000, 256, 1)
        masks = profile.search_masks(PAGE, 0, 0, PAGE)
        req = make_request(pool, 2, masks, 0, 0xFFFF_FFFF)
        pool.areas[0].index = 1
        assert assert_same_answer(pool, 0, req) == expected, profile.name
    # The same through the allocator: after a one-slot map, a 4 KiB map at orig 0 is odd.
    mem = IoTlbMem([IoTlbPool(0x8000_0000, 256, 1)], V6_6)
    dev = DeviceParams()
    first = mem.tbl_map_single(dev, 0x1000, 100)
    second = mem.tbl_map_single(dev, 0, PAGE)
    assert isinstance(first, SlotMapping) and isinstance(second, SlotMapping)
    assert (first.index, second.index) == (0, 1)
    assert second.tlb_addr % PAGE == IO_TLB_SIZE
    mem = IoTlbMem([IoTlbPool(0x8000_0000, 256, 1)], V6_12)
    mem.tbl_map_single(dev, 0x1000, 100)
    second = mem.tbl_map_single(dev, 0, PAGE)
    assert isinstance(second, SlotMapping) and second.index == 2


@pytest.mark.parametrize(
    ("cursor", "nslots", "expected"),
    [(18, 8, 18), (19, 8, 26), (20, 8, 26), (0, 32, 26), (27, 32, 58), (0, 33, -1), (26, 1, 26)],
)
def test_span_boundary_windows_of_32_slots(cursor: int, nslots: int, expected: int) -> None:
    """seg_boundary_mask 0xffff: 32-slot windows. The pool starts 6 slots into a 64 KiB
    window (0x...3000), so window edges fall at pool slots 26, 58, 90, ..., mid-segment."""
    pool = IoTlbPool(0x12_3456_3000, 512, 2)
    masks = V6_12.search_masks(nslots * IO_TLB_SIZE - 1, 0, 0, 1 << 30)  # no page rule
    req = make_request(pool, nslots, masks, 0x1000, 0xFFFF)
    assert (req.tbl_dma, req.shift, req.max_slots) == (0x3000, 6, 32)
    pool.areas[0].index = cursor
    assert assert_same_answer(pool, 0, req) == expected


def test_window_edge_inside_a_fragmented_segment() -> None:
    """Free runs 20-40 (across the window edge at 26) and 60-79, pool 6 slots into a window."""
    pool = _pool_with_single_run(256, 20, 21, start=0x8000_3000)
    free_slots(pool, 60, 20)
    masks = V6_12.search_masks(IO_TLB_SIZE, 0, 0, PAGE)
    for n, expected in ((6, 20), (7, 26), (15, 26), (16, 60), (20, 60), (21, -1)):
        req = make_request(pool, n, masks, 0, 0xFFFF)
        pool.areas[0].index = 0
        assert assert_same_answer(pool, 0, req) == expected, n


def test_quick_reject_and_impossible_sizes() -> None:
    pool = IoTlbPool(0x8000_0000, 256, 2)
    masks = V6_12.search_masks(IO_TLB_SIZE, 0, 0, PAGE)
    take_slots(pool, 0, 0, 100, 100 * IO_TLB_SIZE)
    # 28 free slots in area 0: 29 are rejected before any probe, 28 fit.
    assert assert_same_answer(pool, 0, make_request(pool, 29, masks, 0, U64_MASK)) == -1
    assert assert_same_answer(pool, 0, make_request(pool, 28, masks, 0, U64_MASK)) == 100
    fresh = IoTlbPool(0x8000_0000, 512, 1)
    assert assert_same_answer(fresh, 0, make_request(fresh, 129, masks, 0, U64_MASK)) == -1
    assert assert_same_answer(fresh, 0, make_request(fresh, 2, masks, 0, 0x7FF)) == -1
    assert assert_same_answer(fresh, 0, make_request(fresh, 1, masks, 0, 0x7FF)) == 0
