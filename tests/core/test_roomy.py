"""The roomy-first walk of designs of our own (``IoTlbMem.roomy_first``, used by ``adaptive``).

It may order its searches differently from the kernel, but it must fail only where the
kernel's walk fails (every area is still searched in full), keep the slot state sound, and
count what it does: a crowded area left in pass 1 costs its lock and its cursor probe.
"""

from __future__ import annotations

import random

import pytest

from swiotlb.core import DeviceParams, IoTlbMem, IoTlbPool, SlotMapping
from swiotlb.core.search import fast_search

DEV = DeviceParams()
PAGE = 4096


def two_pools(count: bool = True) -> tuple[IoTlbMem, IoTlbPool, IoTlbPool]:
    old = IoTlbPool(start=0x1000_0000, nslabs=1024, nareas=2)
    new = IoTlbPool(start=0x2000_0000, nslabs=1024, nareas=2)
    mem = IoTlbMem([new, old], profile="v6.12", dynamic=True, count_steps=count)
    mem.roomy_first(0.25)
    return mem, new, old


def test_off_by_default_and_checked() -> None:
    mem = IoTlbMem([IoTlbPool(start=0x1000_0000, nslabs=1024, nareas=2)], profile="v6.12")
    assert mem._hints == []
    with pytest.raises(ValueError):
        mem.roomy_first(0.0)


def test_crowded_area_is_left_for_a_roomy_one() -> None:
    mem, new, old = two_pools()
    # fill area 0 of the newest pool with 4 KiB maps, then free one near its start: the
    # cursor sits past it, so the kernel's loop would walk almost the whole area to reach it
    got = [mem.tbl_map_single(DEV, 0x10_0000 + i * PAGE, PAGE, cpu=0) for i in range(256)]
    assert all(isinstance(g, SlotMapping) and g.pool is new for g in got)
    first = got[1]
    assert isinstance(first, SlotMapping)
    mem.release_slots(DEV, first.tlb_addr)
    assert new.areas[0].used == 510  # crowded: 2 free of 512
    assert mem.steps is not None
    mem.steps.clear()
    r = mem.tbl_map_single(DEV, 0x90_0000, PAGE, cpu=0)
    assert isinstance(r, SlotMapping) and r.pool is old  # pass 1 went on to the roomy area
    assert mem.steps["area_crowded"] == 1
    assert mem.steps["slot_probe"] == 2  # the crowded area's cursor probe, then the hit
    # the hint sends the next map straight there: one walk step, one probe
    mem.steps.clear()
    r2 = mem.tbl_map_single(DEV, 0x91_0000, PAGE, cpu=0)
    assert isinstance(r2, SlotMapping) and r2.pool is old
    assert (mem.steps["pool_walk"], mem.steps["slot_probe"]) == (1, 1)
    assert not mem.check_invariants()


def test_pass_two_finds_the_last_hole() -> None:
    mem, new, old = two_pools()
    got = []
    for i in range(1024):  # every slot of both pools, 4 KiB at a time
        g = mem.tbl_map_single(DEV, 0x10_0000 + i * PAGE, PAGE, cpu=i & 1)
        assert isinstance(g, SlotMapping)
        got.append(g)
    assert mem.total_used == 2048
    hole = got[5]
    mem.release_slots(DEV, hole.tlb_addr)
    r = mem.tbl_map_single(DEV, 0x90_0000, PAGE, cpu=1)
    assert isinstance(r, SlotMapping) and (r.pool, r.index) == (hole.pool, hole.index)
    assert not mem.check_invariants()


def test_fails_only_where_every_area_is_full() -> None:
    rng = random.Random(7)
    mem, new, old = two_pools(count=False)
    live: list[SlotMapping] = []
    for step in range(4000):
        if live and rng.random() < 0.45:
            m = live.pop(rng.randrange(len(live)))
            mem.release_slots(DEV, m.tlb_addr)
        else:
            size = rng.choice((PAGE, PAGE, 2 * PAGE, 32 * PAGE, 64 * PAGE))
            r = mem.tbl_map_single(DEV, 0x100_0000 + rng.randrange(1 << 20) * PAGE, size, cpu=rng.randrange(4))
            if isinstance(r, SlotMapping):
                live.append(r)
            else:  # no area of any pool could hold it: the kernel's full search agrees
                n = size >> 11
                for pool in (new, old):
                    for a in range(pool.nareas):
                        assert fast_search(pool, a, n, 2, 0, 2, 0, 1 << 20) < 0
        if step % 200 == 0:
            assert not mem.check_invariants()
    assert not mem.check_invariants()


def test_removing_a_pool_forgets_its_hints() -> None:
    mem, new, old = two_pools()
    got = [mem.tbl_map_single(DEV, 0x10_0000 + i * PAGE, PAGE, cpu=0) for i in range(256)]
    g = got[1]
    assert isinstance(g, SlotMapping)
    mem.release_slots(DEV, g.tlb_addr)
    r = mem.tbl_map_single(DEV, 0x90_0000, PAGE, cpu=0)
    assert isinstance(r, SlotMapping) and r.pool is old
    mem.release_slots(DEV, r.tlb_addr)
    mem.remove_pool(old)
    assert all(h is None or h[0] is not old for h in mem._hints)
    r = mem.tbl_map_single(DEV, 0x91_0000, PAGE, cpu=0)
    assert isinstance(r, SlotMapping) and r.pool is new
