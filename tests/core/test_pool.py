"""Pool observation: free-run statistics and used slots by range, against a slot-by-slot count."""

from __future__ import annotations

import random

import pytest

from swiotlb.core import DeviceParams, IoTlbMem, IoTlbPool, SlotMapping
from swiotlb.core.constants import IO_TLB_SEGSIZE


def brute(pool: IoTlbPool) -> tuple[int, int]:
    """Free runs within segments and the longest, slot by slot."""
    runs = longest = 0
    for seg in range(0, pool.nslabs, IO_TLB_SEGSIZE):
        run = 0
        for i in range(seg, min(seg + IO_TLB_SEGSIZE, pool.nslabs)):
            run = run + 1 if pool.list[i] else 0
            runs += run == 1
            longest = max(longest, run)
    return runs, longest


@pytest.mark.parametrize("profile, nslabs", [("v6.12", 1024), ("v6.12", 1000), ("v5.15", 1000), ("v6.6", 512), ("v6.12", 8192)])
def test_free_run_stats_match_a_slot_by_slot_count(profile: str, nslabs: int) -> None:
    pool = IoTlbPool(0x1000_0000, nslabs, 1, list_capped=profile != "v5.15")
    mem = IoTlbMem([pool], profile)
    dev = DeviceParams()
    rng = random.Random(nslabs)
    live: list[int] = []
    assert pool.free_run_stats() == brute(pool) == (-(-nslabs // IO_TLB_SEGSIZE), IO_TLB_SEGSIZE)
    for step in range(600):
        if live and (rng.random() < 0.45 or len(live) > 60):
            mem.release_slots(dev, live.pop(rng.randrange(len(live))))
        else:
            got = mem.tbl_map_single(dev, rng.randrange(1 << 30), rng.choice([512, 2048, 6000, 40000]), 0)
            if isinstance(got, SlotMapping):
                live.append(got.tlb_addr)
        assert pool.free_run_stats() == brute(pool), step
        lo = rng.randrange(nslabs)
        hi = rng.randrange(lo, nslabs + 1)
        assert pool.used_between(lo, hi) == sum(1 for i in range(lo, hi) if pool.list[i] == 0)
    assert pool.used_between(0, nslabs) == pool.used


def test_a_full_pool_has_no_free_run() -> None:
    pool = IoTlbPool(0x1000_0000, 256, 1)
    mem = IoTlbMem([pool])
    while isinstance(mem.tbl_map_single(DeviceParams(), 0, 2048 * 128), SlotMapping):
        pass
    assert pool.free_run_stats() == (0, 0) and pool.used_between(0, 256) == 256
