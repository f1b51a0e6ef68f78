"""The inlined map and release paths decide exactly as the layered ones (docs/performance.md).

``IoTlbMem.tbl_map_single`` takes the first aligned slot at the cursor of the first searched
area itself, and ``release_slots`` merges free runs itself. These tests run the same random
scripts through allocators that take those paths and through the reference pieces
(``take_slots``/``free_slots`` on a bare pool, the literal search), and compare every
observable: mappings, the ``list`` bytes, cursors, counters and step counts.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from swiotlb.core import DeviceParams, IoTlbMem, IoTlbPool, IoTlbSteps, MapRefused, SlotMapping
from swiotlb.core.profiles import V6_6, V6_12, KernelProfile
from swiotlb.core.search import free_slots, take_slots
from tests.core.test_allocator import snapshot

START = 0x8000_0000


def script(seed: int, ops: int) -> list[tuple[str, int, int, int, int]]:
    """Maps (size, orig, align, cpu) and releases (index into the live list), seeded."""
    rng = random.Random(seed)
    out: list[tuple[str, int, int, int, int]] = []
    for _ in range(ops):
        if rng.random() < 0.45:
            out.append(("unmap", rng.randrange(1 << 30), 0, 0, 0))
        else:
            size = rng.choice((1, 100, 2048, 2049, 3000, 4096, 6000, 8192, 65536, 131072, 262144, 262145))
            orig = rng.choice((0, rng.randrange(1 << 40)))
            out.append(("map", size, orig, rng.choice((0, 0, 0xFFF, 0xFFFF)), rng.randrange(16)))
    return out


def replay(mem: IoTlbMem, dev: DeviceParams, ops: list[tuple[str, int, int, int, int]]) -> list[object]:
    """Every result, in order: a mapping's fields, a refusal's cause, a release's slot count."""
    live: list[SlotMapping] = []
    seen: list[object] = []
    for op, a, orig, align, cpu in ops:
        if op == "unmap":
            if live:
                m = live.pop(a % len(live))
                seen.append(mem.release_slots(dev, m.tlb_addr, m.pool if a & 1 else None))
        else:
            r = mem.tbl_map_single(dev, orig, a, align, cpu=cpu)
            if isinstance(r, SlotMapping):
                live.append(r)
                seen.append((r.tlb_addr, r.index, r.pad_slots, r.nslots, r.size))
            else:
                seen.append(r.cause)
    return seen


@pytest.mark.parametrize("profile", [V6_12, V6_6])
@pytest.mark.parametrize("dev", [DeviceParams(), DeviceParams(0xFFF), DeviceParams(0x3F, 0xFFFF)])
@pytest.mark.parametrize("shapes", [[(START, 1024, 4)], [(START, 1024, 4), (START + (1 << 24), 512, 2)]])
def test_hot_path_matches_the_literal_allocator(
    profile: KernelProfile, dev: DeviceParams, shapes: list[tuple[int, int, int]]
) -> None:
    """fast=True (hot path) and fast=False (layered, literal search) in lockstep, steps too."""
    ops = script(len(shapes) * 7 + dev.min_align_mask, 1500)
    mems = [
        IoTlbMem([IoTlbPool(s, n, a) for s, n, a in shapes], profile, dynamic=len(shapes) > 1, fast=fast,
                 count_steps=True)
        for fast in (True, False)
    ]
    assert replay(mems[0], dev, ops) == replay(mems[1], dev, ops)
    assert snapshot(mems[0]) == snapshot(mems[1])
    assert mems[0].steps == mems[1].steps
    assert mems[0].check_invariants() == []


def test_counting_does_not_change_decisions() -> None:
    dev = DeviceParams(0xFFF)
    ops = script(3, 2000)
    shared = IoTlbSteps()
    mems = [IoTlbMem([IoTlbPool(START, 2048, 8)], V6_12, count_steps=c) for c in (False, shared)]
    assert replay(mems[0], dev, ops) == replay(mems[1], dev, ops)
    assert snapshot(mems[0]) == snapshot(mems[1])
    assert mems[0].steps is None and shared["slot_mark"] > 0


def test_inlined_marking_and_merging_match_take_slots_and_free_slots() -> None:
    """The allocator's slot state equals a bare pool driven by take_slots/free_slots.

    (The upper-bound index may differ: searches lower it lazily; it only has to stay a bound.)
    """
    rng = random.Random(5)
    mem = IoTlbMem([IoTlbPool(START, 1024, 2)], V6_12)
    pool = mem.pools[0]
    twin = IoTlbPool(START, 1024, 2)
    dev = DeviceParams()
    live: list[SlotMapping] = []
    for _ in range(3000):
        if live and rng.random() < 0.5:
            m = live.pop(rng.randrange(len(live)))
            mem.release_slots(dev, m.tlb_addr, m.pool)
            free_slots(twin, m.index, m.nslots)
        else:
            r = mem.tbl_map_single(dev, 0, rng.randint(1, 40000), cpu=rng.randrange(2))
            if isinstance(r, SlotMapping):
                live.append(r)
                take_slots(twin, r.index // twin.area_nslabs, r.index, r.nslots, r.size)
                twin.areas[r.index // twin.area_nslabs].index = pool.areas[r.index // pool.area_nslabs].index
        assert pool.list == twin.list
    assert [a.used for a in pool.areas] == [a.used for a in twin.areas]
    assert mem.check_invariants() == [] and twin.free_run_errors() == []  # index bounds hold too


def test_early_reject_does_not_ask_for_growth() -> None:
    """>= 6.9 refuses over 256 KiB before any search: the exhaustion hook never runs."""
    mem = IoTlbMem([IoTlbPool(START, 1024, 1)], V6_12, dynamic=True, can_grow=True)
    calls: list[int] = []
    mem.on_exhausted = lambda dev, orig, size, align, cpu: calls.append(size)  # type: ignore[func-returns-value]
    r = mem.tbl_map_single(DeviceParams(), 0x1000, (256 << 10) + 1)
    assert isinstance(r, MapRefused) and r.cause.value == "too_large" and calls == []
    r = mem.tbl_map_single(DeviceParams(), 0x1000, 256 << 10)
    assert isinstance(r, SlotMapping) and calls == []
