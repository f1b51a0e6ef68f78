"""BackgroundLoad: deterministic by seed, fragments memory, exhausts it without raising."""

from __future__ import annotations

import random
from typing import Any

import pytest

from swiotlb.memory import GFP_KERNEL, BackgroundLoad, CmaRegion, PageAllocator, ZoneLayout

MIB = 1 << 20
SEC = 10**9


def system(ram: int = 64 * MIB, **kw: Any) -> PageAllocator:
    return PageAllocator(ZoneLayout(ram, dma_bits=None, dma32=False), **kw)


def wave(now_ns: int) -> int:
    """A target that rises and falls: 8 MiB -> 56 MiB -> 8 MiB over ten seconds."""
    return (8 + 48 * (5 - abs(now_ns // SEC % 10 - 5)) // 5) * MIB


def run(seed: int) -> tuple[dict[str, list[int]], tuple[int, ...], int]:
    pa = system()
    load = BackgroundLoad(pa, random.Random(seed), target=wave, movable_fraction=0.8, order_mix={0: 6, 2: 2, 9: 1})
    for t in range(0, 30 * SEC, SEC // 2):
        load.step(t)
    s = load.stats
    pa.check()
    return pa.buddyinfo(), (s.allocations, s.frees, s.fallbacks, s.oom_events), load.resident_bytes


def test_same_seed_same_memory_map() -> None:
    assert run(7) == run(7)
    assert run(7)[0] != run(8)[0]


def test_the_load_follows_its_target_within_one_block() -> None:
    pa = system()
    load = BackgroundLoad(pa, random.Random(1), target=wave, order_mix={0: 1, 9: 1})
    for t in range(0, 10 * SEC, SEC):
        held = load.step(t)
        assert abs(held - wave(t)) < 2 * MIB  # one order-9 block of overshoot at most
        assert pa.bytes_by_owner().get("background", 0) == held
    limited = BackgroundLoad(system(), random.Random(1), target_bytes=32 * MIB, max_bytes_per_step=MIB)
    assert limited.step(0) == MIB
    assert limited.step(1) == 2 * MIB


def test_random_frees_fragment_memory() -> None:
    pa = system()
    assert pa.largest_free_order() == 10
    load = BackgroundLoad(pa, random.Random(3), target_bytes=64 * MIB, movable_fraction=0.9)
    load.step(0)
    load.set_target(32 * MIB)  # the load shrinks: frees scatter holes
    load.step(1)
    assert pa.free_bytes() == 32 * MIB
    order = pa.largest_free_order()
    assert order is not None and order <= 5
    zone = pa.layout.zone("Normal").buddy
    assert zone.unusable_index(9) == 1.0
    assert abs(load.unmovable_bytes - 0.1 * load.resident_bytes) <= 64 * 1024  # mix kept on shrink
    # scattered unmovable pages defeat compaction for a 4 MiB block; all-movable memory does not
    assert pa.alloc_pages(10, GFP_KERNEL) is None
    pa2 = system()
    movable = BackgroundLoad(pa2, random.Random(3), target_bytes=64 * MIB, movable_fraction=1.0)
    movable.step(0)
    movable.set_target(32 * MIB)
    movable.step(1)
    assert pa2.largest_free_order() is not None and pa2.largest_free_order() != 10
    assert pa2.alloc_pages(10, GFP_KERNEL) is not None
    assert pa2.stats.migrated_pages > 0 and movable.stats.migrations_seen == pa2.stats.migrated_pages
    pa2.check()


def test_a_target_above_ram_gives_oom_events_not_exceptions() -> None:
    pa = system(16 * MIB)
    load = BackgroundLoad(pa, random.Random(2), target_bytes=32 * MIB, order_mix={0: 3, 4: 1})
    assert load.step(0) == 16 * MIB
    assert load.stats.oom_events == 1
    load.step(1)
    assert load.stats.oom_events == 2
    assert pa.stats.oom_events == 2 and pa.stats.oom_by_owner == {"background": 2}
    assert pa.free_bytes() == 0
    pa.check()


def test_high_orders_fall_back_to_order_zero_on_fragmented_memory() -> None:
    pa = system(16 * MIB)
    load = BackgroundLoad(pa, random.Random(4), target_bytes=16 * MIB, movable_fraction=0.5)
    load.step(0)
    load.set_target(8 * MIB)
    load.step(1)
    thp = BackgroundLoad(pa, random.Random(4), target_bytes=4 * MIB, order_mix={9: 1.0}, owner="thp")
    thp.step(0)
    assert thp.stats.fallbacks == thp.stats.allocations > 0  # no 2 MiB block left anywhere
    assert pa.stats.compactions == 0  # opportunistic attempts never compact
    assert thp.resident_bytes == 4 * MIB


def test_migration_keeps_the_load_consistent() -> None:
    pa = system(64 * MIB, cma=[CmaRegion(32 * MIB, 32 * MIB)])
    load = BackgroundLoad(pa, random.Random(5), target_bytes=48 * MIB)
    load.step(0)
    assert pa.stats.cma_lent > 0
    p = pa.alloc_contig(16 * MIB)
    assert p is not None and pa.in_cma(p)
    assert pa.stats.migrated_pages > 0 and load.stats.migrations_seen == pa.stats.migrated_pages
    pa.check()
    load.release_all()
    pa.free_contig(p)
    assert load.resident_bytes == 0 and pa.free_bytes() == 64 * MIB
    pa.check()


def test_any_object_with_random_is_a_random_source() -> None:
    class Halves:
        def random(self) -> float:
            return 0.5

    pa = system(16 * MIB)
    load = BackgroundLoad(pa, Halves(), target_bytes=MIB, movable_fraction=0.4)
    load.step(0)
    assert load.unmovable_bytes == MIB  # 0.5 >= 0.4: every block is unmovable


def test_arguments_are_checked() -> None:
    pa = system(16 * MIB)
    rng = random.Random(0)
    with pytest.raises(ValueError, match="exactly one"):
        BackgroundLoad(pa, rng)
    with pytest.raises(ValueError, match="exactly one"):
        BackgroundLoad(pa, rng, target_bytes=1, target=lambda _t: 1)
    with pytest.raises(ValueError, match="0 <= order <= 10"):
        BackgroundLoad(pa, rng, target_bytes=1, order_mix={11: 1.0})
    with pytest.raises(ValueError, match="sum to zero"):
        BackgroundLoad(pa, rng, target_bytes=1, order_mix={0: 0.0})
    with pytest.raises(ValueError, match="movable_fraction"):
        BackgroundLoad(pa, rng, target_bytes=1, movable_fraction=1.5)
