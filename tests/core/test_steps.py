"""Counting the kernel's work steps (``IoTlbMem(count_steps=True)``, issue 4 §2).

The fast search never probes slot by slot, so the kernel's probe count is derived from
positions (:func:`swiotlb.core.search.kernel_probes`). These tests check the derivation
against a probe-by-probe transcription that counts its loop iterations, on random fragmented
pools, cursors and masks (failures and wraps included), then check the allocator's counters
end to end and on the worked examples of spec §3.5.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swiotlb.core import DeviceParams, IoTlbMem, IoTlbPool, SlotMapping
from swiotlb.core.allocator import IoTlbSteps, Tally
from swiotlb.core.constants import IO_TLB_SEGSIZE, IO_TLB_SIZE, is_span_boundary
from swiotlb.core.profiles import V5_15, V6_6, V6_12, KernelProfile, SearchMasks
from swiotlb.core.search import (
    SearchRequest,
    alignment_progression,
    kernel_probes,
    search_area_fast,
    search_area_literal,
    search_area_wrap,
    take_slots,
)
from tests.core.test_search import (
    MIN_ALIGN,
    SEARCH_SETTINGS,
    SEG_MASK,
    clone,
    fragment,
    make_request,
    mem_scripts,
    pool_shapes,
    random_request,
    requests,
)


def counting_literal(pool: IoTlbPool, area_index: int, req: SearchRequest) -> tuple[int, int]:
    """The counted loop of spec §3.3 with an iteration counter: ``(slot or -1, iterations)``."""
    area = pool.areas[area_index]
    nslabs = pool.area_nslabs
    n = req.nslots
    if n > nslabs - area.used:
        return -1, 0
    base = area_index * nslabs
    index = area.index
    m = req.masks
    iterations = checked = 0
    while checked < nslabs:
        iterations += 1
        slot = base + index
        a = req.tbl_dma + slot * IO_TLB_SIZE
        if (a & m.align_mask) or (req.orig_addr and (a & m.iotlb_mask) != (req.orig_addr & m.iotlb_mask)):
            index = index + 1 if index + 1 < nslabs else 0
            checked += 1
            continue
        if not is_span_boundary(slot, n, req.shift, req.max_slots) and pool.list[slot] >= n:
            return slot, iterations
        index = index + m.stride if index + m.stride < nslabs else 0
        checked += m.stride
    return -1, iterations


def positional_loop(nslabs: int, index: int, residue: int, q: int, stride: int, target: int) -> int:
    """Iterations of the counted loop when only area index ``target`` fits (-1: none)."""
    iterations = checked = 0
    while checked < nslabs:
        iterations += 1
        if index % q != residue:
            index = index + 1 if index + 1 < nslabs else 0
            checked += 1
            continue
        if index == target:
            return iterations
        index = index + stride if index + stride < nslabs else 0
        checked += stride
    return iterations


# -- the derivation ------------------------------------------------------------------------


@settings(SEARCH_SETTINGS, max_examples=3000)
@given(data=st.data())
def test_kernel_probes_matches_the_loop_position_by_position(data: st.DataObject) -> None:
    """Any area size, cursor, period, residue and stride (not only powers of two)."""
    nslabs = data.draw(st.integers(1, 700), label="nslabs")
    q = data.draw(st.sampled_from([1, 2, 3, 4, 8, 16, 64, 128, 256, 1024]), label="q")
    stride = data.draw(st.one_of(st.sampled_from([1, 2, 4, 8, 16, 32, q]), st.integers(1, 40)), label="stride")
    residue = data.draw(st.integers(0, q - 1), label="residue")
    index = data.draw(st.one_of(st.integers(0, nslabs - 1), st.just(nslabs - 1), st.just(0)), label="cursor")
    target = data.draw(
        st.one_of(st.just(-1), st.integers(0, nslabs - 1),
                  st.integers(0, nslabs - 1).map(lambda t: t - (t - residue) % q)),
        label="target",
    )
    want = positional_loop(nslabs, index, residue, q, stride, target)
    got = kernel_probes(nslabs, index, residue, q, stride, target)
    assert got == want, f"nslabs={nslabs} index={index} residue={residue} q={q} stride={stride} target={target}"


def check_probe_counts(pool: IoTlbPool, area_index: int, req: SearchRequest) -> int:
    """Counting transcription == literal's own count == the count derived from fast's answer."""
    slot, iterations = counting_literal(pool, area_index, req)
    probes = [0]
    assert search_area_literal(pool, area_index, req, probes) == slot
    assert probes[0] == iterations
    prog = alignment_progression(req)
    if prog is None:
        return slot
    q, r = prog
    nslabs = pool.area_nslabs
    base = area_index * nslabs
    area = pool.areas[area_index]
    found = search_area_fast(clone(pool), area_index, req)
    assert found == slot
    if req.nslots > nslabs - area.used:
        assert iterations == 0  # quick reject: the loop does not run
        return slot
    derived = kernel_probes(nslabs, area.index, (r - base) % q, q, req.masks.stride,
                            found - base if found >= 0 else -1)
    assert derived == iterations, (
        f"derived {derived} != loop {iterations}: {pool!r} area={area_index} "
        f"index={area.index} used={area.used} req={req} slot={slot}"
    )
    return slot


@settings(SEARCH_SETTINGS, max_examples=200)
@given(shape=pool_shapes(), seed=st.integers(0, 2**32 - 1),
       target=st.sampled_from([0.0, 0.3, 0.6, 0.85, 0.95, 1.2]), nops=st.integers(0, 400),
       data=st.data())
def test_derived_probes_equal_the_literal_loop_on_fragmented_pools(
    shape: tuple[int, int, int], seed: int, target: float, nops: int, data: st.DataObject
) -> None:
    start, nslabs, nareas = shape
    pool = IoTlbPool(start, nslabs, nareas)
    fragment(pool, random.Random(seed), nops, target)
    for _ in range(data.draw(st.integers(1, 12), label="nrequests")):
        area, cursor, req = data.draw(requests(pool), label="request")
        pool.areas[area].index = cursor
        check_probe_counts(pool, area, req)


@settings(SEARCH_SETTINGS, max_examples=60)
@given(shape=pool_shapes(max_segments=16), seed=st.integers(0, 2**32 - 1),
       profile=st.sampled_from([V6_12, V6_6]), data=st.data())
def test_derived_probes_along_a_search_sequence(
    shape: tuple[int, int, int], seed: int, profile: KernelProfile, data: st.DataObject
) -> None:
    """Searches that take what they find, so cursors and fullness are those of real use."""
    start, nslabs, nareas = shape
    pool = IoTlbPool(start, nslabs, nareas)
    rng = random.Random(seed)
    min_align = data.draw(MIN_ALIGN, label="min_align_mask")
    seg_mask = data.draw(SEG_MASK, label="seg_boundary_mask")
    failures = 0
    for _ in range(data.draw(st.integers(20, 150), label="nops")):
        area, size, req = random_request(rng, pool, profile, min_align, seg_mask)
        nslots = req.nslots
        slot = check_probe_counts(pool, area, req)
        if slot >= 0:
            take_slots(pool, area, slot, nslots, size)
        else:
            failures += 1


def test_failure_after_a_wrap_spends_the_whole_budget() -> None:
    """Cursor 251 of 256, stride 2: 1 misaligned probe, 252 and 254, wrap, then 126 probes."""
    pool = IoTlbPool(0x8000_0000, 256, 1)
    for s in range(0, 256, 2):
        take_slots(pool, 0, s, 1, IO_TLB_SIZE)  # every even slot taken: no 2-slot run anywhere
    pool.areas[0].index = 251
    req = make_request(pool, 2, SearchMasks(0xFFF, 0, 2), 0x1000, 2**64 - 1)
    assert counting_literal(pool, 0, req) == (-1, 129)
    assert check_probe_counts(pool, 0, req) == -1
    assert kernel_probes(256, 251, 0, 2, 2, -1) == 129


def test_wrap_loop_counts_its_iterations() -> None:
    """The <= 6.2 do/while loop counts too (the allocator uses it for V5_15 and 6.0-6.2)."""
    pool = IoTlbPool(0x8000_0000, 256, 1)
    take_slots(pool, 0, 0, 100, 100 * IO_TLB_SIZE)
    req = make_request(pool, 4, SearchMasks(0x7FF, 0, 1), 0, 2**64 - 1)
    probes = [0]
    assert search_area_wrap(pool, 0, req, probes) == 100
    assert probes[0] == 1  # cursor 100 after the take
    pool.areas[0].index = 0
    probes = [0]
    assert search_area_wrap(pool, 0, req, probes) == 100
    assert probes[0] == 101


# -- the allocator's counters --------------------------------------------------------------


@settings(SEARCH_SETTINGS, max_examples=40)
@given(script=mem_scripts())
def test_fast_and_literal_allocators_count_the_same_steps(
    script: tuple[KernelProfile, list[tuple[int, int, int]], int, int, int],
) -> None:
    """fast=True (derived probes) and fast=False (counted loop) in lockstep, op by op."""
    profile, shapes, min_align, seg_mask, seed = script
    rng = random.Random(seed)
    mems = [
        IoTlbMem([IoTlbPool(s, n, a) for s, n, a in shapes], profile, dynamic=True, fast=fast,
                 count_steps=True)
        for fast in (True, False)
    ]
    dev = DeviceParams(min_align, seg_mask)
    live: list[tuple[SlotMapping, SlotMapping]] = []
    for op in range(300):
        if live and rng.random() < 0.4:
            ma, mb = live.pop(rng.randrange(len(live)))
            mems[0].release_slots(dev, ma.tlb_addr)
            mems[1].release_slots(dev, mb.tlb_addr)
        else:
            size = rng.choice((1, 100, 2048, 2049, 4096, 6000, 8192, 65536, 200_000, 262_144))
            align = rng.choice((0, 0, 0xFFF, 0xFFFF))
            orig = rng.choice((0, rng.randrange(1 << 40)))
            cpu = rng.randrange(16)
            a, b = (m.tbl_map_single(dev, orig, size, align, cpu=cpu) for m in mems)
            if isinstance(a, SlotMapping) and isinstance(b, SlotMapping):
                live.append((a, b))
        assert mems[0].steps == mems[1].steps, f"after op {op}"
    steps = mems[0].steps
    assert steps is not None
    assert steps["slot_probe"] >= steps["area_search"]
    assert steps["lock_acquire"] >= steps["area_search"] + steps["area_quick_reject"]


def test_counting_is_off_by_default() -> None:
    mem = IoTlbMem([IoTlbPool(0x8000_0000, 1024, 1)])
    assert mem.steps is None
    assert isinstance(mem.tbl_map_single(DeviceParams(), 0x1000, 4096), SlotMapping)


def test_steps_are_native_counts_read_as_a_mapping() -> None:
    """``steps`` is an :class:`IoTlbSteps`: the allocator's steps are int attributes, other keys
    a dict, and the whole reads like a Counter (missing keys 0, zero counts left out)."""
    mem = IoTlbMem([IoTlbPool(0x8000_0000, 1024, 1)], count_steps=True)
    steps = mem.steps
    assert isinstance(steps, IoTlbSteps) and isinstance(steps, Mapping)
    assert Tally.__dict__["__delitem__"] is dict.__delitem__  # the simulator's counters
    assert steps["never_counted"] == 0 and "never_counted" not in steps and "slot_probe" not in steps
    steps["copy_byte"] += 4096
    assert isinstance(mem.tbl_map_single(DeviceParams(), 0x1000, 4096), SlotMapping)
    assert steps == Counter(copy_byte=4096, pool_walk=1, lock_acquire=1, area_search=1, slot_probe=1, slot_mark=2)
    assert Counter(copy_byte=4096, pool_walk=1, lock_acquire=1, area_search=1, slot_probe=1, slot_mark=2) == steps
    assert steps.slot_mark == steps["slot_mark"] == 2 and "slot_mark" in steps
    assert Counter(steps) == Counter(dict(steps.items())) and len(steps) == 6
    total = Counter(steps) + Counter(copy_byte=1)
    assert total["copy_byte"] == 4097
    shared = IoTlbMem([IoTlbPool(0x9000_0000, 1024, 1)], count_steps=steps)
    assert shared.steps is steps  # a given tally is counted into as it is
    steps.clear()
    assert steps == Counter() and steps.slot_mark == 0
    with pytest.raises(TypeError):
        IoTlbMem([IoTlbPool(0xA000_0000, 1024, 1)], count_steps=Counter())  # type: ignore[arg-type]


def test_slow_profiles_count_their_loop() -> None:
    """V5_15 runs the do/while loop; its iterations are counted directly."""
    mem = IoTlbMem([IoTlbPool(0x8000_0000, 1024, 1)], V5_15, count_steps=True)
    dev = DeviceParams()
    for _ in range(3):
        assert isinstance(mem.tbl_map_single(dev, 0x1000, 4096), SlotMapping)
    assert mem.steps == Counter(pool_walk=3, lock_acquire=3, area_search=3, slot_probe=3, slot_mark=6)


def test_spec_worked_examples() -> None:
    """Spec §3.5, examples 1-5, step by step."""
    pool = IoTlbPool(0x8000_0000, 32768, 4)
    mem = IoTlbMem([pool], V6_12, count_steps=True)
    steps = mem.steps
    assert steps is not None
    plain, nvme = DeviceParams(), DeviceParams(min_align_mask=0xFFF)

    def delta(before: Counter[str]) -> dict[str, int]:
        assert steps is not None
        return {k: v for k, v in (steps - before).items() if v}

    one = Counter(pool_walk=1, lock_acquire=1, area_search=1, slot_probe=1)
    before = steps.copy()
    m1 = mem.tbl_map_single(plain, 0x1000, 4096, cpu=5)  # example 1: slot 8192, 2 slots
    assert isinstance(m1, SlotMapping) and m1.index == 8192
    assert delta(before) == {**one, "slot_mark": 2}  # no fix-up: 8191 ends a segment
    before = steps.copy()
    m2 = mem.tbl_map_single(plain, 0x2000_0064, 100, cpu=5)  # example 2: slot 8194
    assert isinstance(m2, SlotMapping) and m2.index == 8194
    assert delta(before) == {**one, "slot_mark": 1}  # 8193 is in use: nothing to fix
    before = steps.copy()
    m3 = mem.tbl_map_single(nvme, 0x1234_0A00, 8192, cpu=5)  # example 3: odd slot 8195
    assert isinstance(m3, SlotMapping) and m3.index == 8195
    assert delta(before) == {**one, "slot_mark": 5}
    before = steps.copy()
    mem.release_slots(plain, m1.tlb_addr)  # example 4: list[8193]=1, list[8192]=2
    assert delta(before) == {"lock_acquire": 1, "list_fixup": 2}
    before = steps.copy()
    iommu = DeviceParams(min_align_mask=0xFFF)
    m5 = mem.tbl_map_single(iommu, 0x1234_5A00, 3000, 0xFFF, cpu=5)  # example 5: slots 8200-8203
    assert isinstance(m5, SlotMapping) and (m5.index, m5.pad_slots) == (8201, 1)
    assert delta(before) == {**one, "slot_mark": 4}  # 8199 is in use (example 3)
    before = steps.copy()
    mem.release_slots(iommu, m5.tlb_addr)
    assert delta(before) == {"lock_acquire": 1, "list_fixup": 4}
    before = steps.copy()
    mem.release_slots(plain, m2.tlb_addr)  # 8194 freed, merges with 8192-8193 before it
    assert delta(before) == {"lock_acquire": 1, "list_fixup": 3}
    assert mem.check_invariants() == []


def test_map_fix_up_and_quick_reject() -> None:
    pool = IoTlbPool(0x8000_0000, 512, 2)
    mem = IoTlbMem([pool], V6_12, count_steps=True)
    steps = mem.steps
    assert steps is not None
    dev = DeviceParams()
    pool.areas[0].index = 10
    m = mem.tbl_map_single(dev, 0x1000, 100)  # slot 10: slots 0-9 get list 10..1
    assert isinstance(m, SlotMapping) and m.index == 10
    assert steps["list_fixup"] == 10 and list(pool.list[:11]) == [*range(10, 0, -1), 0]
    steps.clear()
    pool.areas[0].index = 133  # mid-segment 1: the fix-up stops at the segment start (128)
    assert isinstance(mem.tbl_map_single(dev, 0x1000, 100), SlotMapping)
    assert steps["list_fixup"] == 5


def test_quick_reject_costs_no_probe() -> None:
    pool = IoTlbPool(0x8000_0000, 512, 2)
    mem = IoTlbMem([pool], V6_12, count_steps=True)
    dev = DeviceParams()
    take_slots(pool, 0, 0, IO_TLB_SEGSIZE, IO_TLB_SEGSIZE * IO_TLB_SIZE)
    take_slots(pool, 0, IO_TLB_SEGSIZE, IO_TLB_SEGSIZE - 3, 4096)  # area 0: 3 slots free
    r = mem.tbl_map_single(dev, 0x1000, 4 * IO_TLB_SIZE, cpu=0)  # 4 slots > 3 free
    assert isinstance(r, SlotMapping) and r.index == 256  # area 1, first probe
    assert mem.steps == Counter(
        pool_walk=1, lock_acquire=2, area_quick_reject=1, area_search=1, slot_probe=1, slot_mark=4
    )
