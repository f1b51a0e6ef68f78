"""Our adaptive design: grows before failing, shrinks when idle, one zone per address limit."""

from __future__ import annotations

import random
from typing import Callable

import pytest

from swiotlb import DmaDirection, Machine
from swiotlb.core import IoTlbMem, IoTlbPool, MapFailure, MapRefused, SlotMapping
from swiotlb.core.constants import IO_TLB_SHIFT
from swiotlb.memory import BackgroundLoad, CmaRegion, MemoryEncryption, PageAllocator, ZoneLayout
from swiotlb.policies import AdaptivePolicy, make_policy
from swiotlb.policies.adaptive import LARGE_OWNER
from swiotlb.policies.base import BufferMapping
from swiotlb.policies.buffers import DynamicBuffer
from swiotlb.policies.deferral import DeferralQueue
from swiotlb.policies.env import PolicyEnv
from tests.policies.support import Clock, Dev

GIB = 1 << 30
SECOND = 1_000_000_000



def setup(nslabs: int = 1024, *, coco: bool = False, ram: int = 8 * GIB, **knobs: object) -> tuple[AdaptivePolicy, Clock]:
    base = 0x4000_0000
    pages = PageAllocator(ZoneLayout.x86_64(ram), reserved=[(base, nslabs << IO_TLB_SHIFT)])
    clock = Clock()
    env = PolicyEnv(pages, MemoryEncryption(coco, page_size=4096), clock=clock)
    mem = IoTlbMem([IoTlbPool(base, nslabs, 1)], "v6.12", force_bounce=True)
    return AdaptivePolicy(mem, env, worker_delay_ns=1_000, **knobs), clock


def test_it_grows_before_the_pool_runs_out() -> None:
    policy, clock = setup(1024)
    dev = Dev()
    for i in range(6):  # 6 x 128 = 768 slots: past the 75 % watermark
        assert isinstance(policy.map(dev, 0x1_0000_0000 + (i << 20), 256 << 10), SlotMapping)
    assert policy.counts["worker_scheduled"] == 0
    assert isinstance(policy.map(dev, 0x2_0000_0000, 256 << 10), SlotMapping)  # 896 > 768
    assert policy.counts["worker_scheduled"] == 1
    clock.now = 1_000
    policy.run_deferred()
    assert policy.counts["pools_created"] == 1 and policy.mem.nslabs == 2048
    for i in range(8):  # atomic maps keep succeeding from the new pool, no transient pools
        assert isinstance(policy.map(dev, 0x3_0000_0000 + (i << 20), 256 << 10), SlotMapping)
    assert policy.counts["transient_created"] == 0


def test_a_sleeping_caller_grows_the_zone_instead_of_failing() -> None:
    policy, _ = setup(1024, min_grow_slabs=4096)
    dev = Dev()
    for i in range(8):
        policy.map(dev, 0x1_0000_0000 + (i << 20), 256 << 10)
    r = policy.map(dev, 0x2_0000_0000, 256 << 10, may_sleep=True)
    assert isinstance(r, SlotMapping) and r.pool.nslabs == 4096 and not r.pool.transient
    assert policy.counts["sync_growths_used"] == 1


def test_an_atomic_caller_never_does_sleeping_work() -> None:
    """In a confidential guest decrypting may sleep: an atomic map that finds the pool full
    gets pre-decrypted atomic-pool memory, and no conversion happens on its behalf."""
    policy, clock = setup(1024, coco=True)
    dev = Dev()
    decrypts = policy.env.encryption.stats.decrypt_ops
    for i in range(8):
        policy.map(dev, 0x1_0000_0000 + (i << 20), 256 << 10)
    r = policy.map(dev, 0x2_0000_0000, 16 << 10)
    assert isinstance(r, SlotMapping) and r.pool.transient
    assert policy.env.atomic_pool is not None and policy.env.atomic_pool.owns(r.pool.start)
    assert policy.env.encryption.stats.decrypt_ops == decrypts
    clock.now = 10**6
    policy.run_deferred()  # the worker may sleep: one conversion for the whole new pool
    assert policy.env.encryption.stats.decrypt_ops == decrypts + 1


def test_idle_pools_are_freed_after_the_hysteresis_and_not_before() -> None:
    policy, clock = setup(1024, coco=True, min_grow_slabs=1024)
    dev = Dev()
    maps = [policy.map(dev, 0x1_0000_0000 + (i << 20), 256 << 10) for i in range(7)]
    clock.now = 1_000
    policy.run_deferred()
    assert policy.mem.nslabs == 2048
    grown = policy.mem.pools[0]
    r = policy.map(dev, 0x2_0000_0000, 256 << 10)
    assert isinstance(r, SlotMapping) and r.pool is grown
    policy.release(dev, r.tlb_addr, r.pool)  # the grown pool is idle from now on
    idle_from = clock.now
    clock.now = idle_from + 29 * SECOND
    policy.run_deferred()
    assert grown in policy.mem.pools
    encrypts = policy.env.encryption.stats.encrypt_ops
    clock.now = idle_from + 30 * SECOND
    policy.run_deferred()
    assert grown not in policy.mem.pools and policy.counts["pools_freed"] == 1
    assert policy.env.encryption.stats.encrypt_ops == encrypts + 1  # made private again, once
    assert policy.mem.nslabs == 1024  # the boot pool stays
    assert all(isinstance(m, SlotMapping) for m in maps)


def test_a_busy_pool_is_never_freed() -> None:
    policy, clock = setup(1024)
    dev = Dev()
    maps = [policy.map(dev, 0x1_0000_0000 + (i << 20), 256 << 10) for i in range(7)]
    clock.now = 1_000
    policy.run_deferred()
    grown = policy.mem.pools[0]
    held = policy.map(dev, 0x2_0000_0000, 256 << 10)
    assert isinstance(held, SlotMapping) and held.pool is grown
    clock.now = 100 * SECOND
    policy.run_deferred()
    assert grown in policy.mem.pools and len(maps) == 7


def test_a_64_bit_device_filling_its_pools_does_not_starve_a_30_bit_device() -> None:
    policy, _ = setup(1024, max_total_slabs=1024, transient=False)
    fast, slow = Dev("nic"), Dev("vc4", dma_limit=(1 << 30) - 1)
    policy.attach_device(slow)
    while isinstance(policy.map(fast, 0x1_0000_0000, 256 << 10, may_sleep=True), SlotMapping):
        pass
    r = policy.map(slow, 0x1_8000_0000, 64 << 10)
    assert isinstance(r, SlotMapping) and r.tlb_addr + (64 << 10) <= 1 << 30
    assert policy.stats()["zones"] == 2


def test_unknown_or_invalid_knobs_are_refused_with_what_is_allowed() -> None:
    with pytest.raises(ValueError, match="unknown adaptive knobs"):
        setup(1024, watermark=0.5)
    with pytest.raises(ValueError, match="high_watermark"):
        setup(1024, high_watermark=1.5)
    with pytest.raises(ValueError, match="multiple of 128"):
        setup(1024, min_grow_slabs=100)


def test_random_traffic_keeps_every_zone_consistent() -> None:
    policy, clock = setup(1024)
    rng = random.Random(5)
    devs = [Dev("a"), Dev("b", dma_limit=(1 << 32) - 1), Dev("c", min_align_mask=0xFFF)]
    for d in devs:
        policy.attach_device(d)
    live: list[tuple[Dev, SlotMapping]] = []
    for step in range(3000):
        clock.now += rng.randrange(10**7)
        if live and rng.random() < 0.48:
            d, m = live.pop(rng.randrange(len(live)))
            policy.release(d, m.tlb_addr, m.pool)
        else:
            d = rng.choice(devs)
            r = policy.map(d, rng.randrange(1 << 40) & ~0x3F, rng.randint(1, 200_000), may_sleep=rng.random() < 0.3)
            if isinstance(r, SlotMapping):
                assert r.tlb_addr <= d.dma_limit
                live.append((d, r))
        if step % 100 == 0:
            policy.run_deferred()
    for zone in policy._zones.values():
        assert zone.mem.check_invariants() == []
    for d, m in live:
        policy.release(d, m.tlb_addr, m.pool)
    assert policy.counters()["io_tlb_used"] == 0


# -- mappings no slot run can hold (scenario S4) -------------------------------------------

FULLHD, UHD = 8_294_400, 35_389_440  # Raspberry Pi 4 dma-buf frames
VC4 = Dev("vc4", dma_limit=(1 << 30) - 1)


def rpi4(*, coco: bool = False, **knobs: object) -> AdaptivePolicy:
    """8 GiB Raspberry Pi 4: a 1 MiB boot pool and 256 MiB of CMA, both below 1 GiB."""
    base = 0x3800_0000
    pages = PageAllocator(ZoneLayout.rpi4(8 * GIB), cma=[CmaRegion(0x1000_0000, 256 << 20)],
                          reserved=[(base, 1 << 20)])
    env = PolicyEnv(pages, MemoryEncryption(coco, page_size=4096), clock=Clock())
    return AdaptivePolicy(IoTlbMem([IoTlbPool(base, 512, 1)], "v6.12", force_bounce=coco), env, **knobs)


def test_a_sleeping_caller_gets_a_contiguous_buffer_below_the_device_limit() -> None:
    policy = rpi4()
    policy.attach_device(VC4)
    pages = policy.env.pages
    reserved0, used0 = policy.footprint()
    maps = [policy.map(VC4, 0x1_4000_0000, size, may_sleep=True) for size in (FULLHD, UHD)]
    bufs = [m.pool for m in maps if isinstance(m, BufferMapping)]
    assert len(bufs) == 2 and all(isinstance(b, DynamicBuffer) for b in bufs)
    held = 0
    for m, buf, size in zip(maps, bufs, (FULLHD, UHD)):
        assert m.tlb_addr == buf.phys and buf.end <= GIB and pages.in_cma(buf.phys)
        assert buf.nbytes == -(-size // 4096) * 4096 and buf.mapping_size == size
        assert policy.find_pool(VC4, buf.phys + size - 1) is buf
        span = policy.bounce_target(VC4, buf.phys + 4096, 100)
        assert span is not None and span.orig_addr == 0x1_4000_0000 + 4096 and span.nbytes == 100
        held += buf.nbytes
    assert policy.footprint() == (reserved0 + held, used0 + held)
    assert policy.counters()["io_tlb_used"] == 0  # no slot taken, no pool grown for them
    stats = policy.stats()
    assert stats["large_live"] == 2 and stats["large_bytes"] == held and stats["pools_created"] == 1  # attach
    for m, buf in zip(maps, bufs):
        assert policy.release(VC4, m.tlb_addr, buf) == 0
    assert policy.footprint() == (reserved0, used0) and policy.large.buffers() == []
    assert LARGE_OWNER not in pages.bytes_by_owner()  # the memory went back
    assert policy.find_pool(VC4, bufs[0].phys) is None


def test_an_atomic_caller_never_gets_cma_and_fails_as_too_large() -> None:
    policy = rpi4()
    policy.attach_device(VC4)
    r = policy.map(VC4, 0x1_4000_0000, FULLHD)
    assert isinstance(r, MapRefused) and r.cause is MapFailure.TOO_LARGE
    assert policy.env.pages.stats.contig_allocations == 0 and policy.counts["large_failed"] == 1
    assert policy.counts["pools_created"] == 1 and policy.counts["transient_created"] == 0  # 1: attach
    small = policy.map(VC4, 0x1_4000_0000, 512 << 10)  # a non-sleeping buddy allocation suffices
    assert isinstance(small, BufferMapping) and small.tlb_addr + (512 << 10) <= GIB


def test_devices_with_alignment_needs_and_the_knob_off_keep_slot_semantics() -> None:
    for policy, dev in ((rpi4(), Dev("nvme", min_align_mask=0xFFF)), (rpi4(large_buffers=False), VC4)):
        policy.attach_device(dev)
        r = policy.map(dev, 0x1_4000_0000, FULLHD, may_sleep=True)
        assert isinstance(r, MapRefused) and r.cause is MapFailure.TOO_LARGE
        assert policy.large.created == 0 and policy.counts["sync_growths_used"] == 0


def test_no_pool_is_grown_for_a_mapping_no_pool_can_hold() -> None:
    """Before 6.8 the core has no early 256 KiB reject; the exhaustion hook must not grow."""
    pages = PageAllocator(ZoneLayout.x86_64(8 * GIB), reserved=[(0x4000_0000, 1 << 20)])
    env = PolicyEnv(pages, clock=Clock())
    policy = AdaptivePolicy(IoTlbMem([IoTlbPool(0x4000_0000, 512, 1)], "v6.6"), env, large_buffers=False)
    r = policy.map(Dev(), 0x1_0000_0000, 1 << 20, may_sleep=True)
    assert isinstance(r, MapRefused) and r.cause is MapFailure.TOO_LARGE
    assert policy.counts["pools_created"] == 0 and policy.counts["transient_created"] == 0


def test_coco_one_decrypt_per_large_buffer_and_atomic_release_is_deferred() -> None:
    """A confidential guest pays one decrypt and one encrypt per large buffer (documented in
    the module): no pool can hold such a mapping, and they are rare. The encrypt may sleep, so
    an atomic unmap leaves it to the worker; the pages stay reserved until then."""
    policy = rpi4(coco=True)
    enc = policy.env.encryption
    policy.attach_device(VC4)
    d0, e0 = enc.stats.decrypt_ops, enc.stats.encrypt_ops
    m = policy.map(VC4, 0x1_4000_0000, FULLHD, may_sleep=True)
    assert isinstance(m, BufferMapping) and isinstance(m.pool, DynamicBuffer)
    buf = m.pool
    assert enc.stats.decrypt_ops == d0 + 1 and enc.is_shared(buf.phys, buf.nbytes // 4096)
    reserved, in_use = policy.footprint()
    assert policy.release(VC4, buf.phys, buf) == 0  # atomic, as the DMA layer unmaps
    assert enc.stats.encrypt_ops == e0 and policy.find_pool(VC4, buf.phys) is None
    assert policy.footprint() == (reserved, in_use - buf.nbytes)
    assert policy.next_deadline() == policy.env.now()
    assert policy.run_deferred() >= 1
    assert enc.stats.encrypt_ops == e0 + 1 and not enc.is_shared(buf.phys)
    assert policy.footprint() == (reserved - buf.nbytes, in_use - buf.nbytes)
    assert policy.stats()["large_deferred_frees"] == 1 and LARGE_OWNER not in policy.env.pages.bytes_by_owner()
    r = policy.map(VC4, 0x1_4000_0000, FULLHD)  # atomic: the atomic pool is far too small
    assert isinstance(r, MapRefused) and r.cause is MapFailure.TOO_LARGE
    assert enc.stats.decrypt_ops == d0 + 1


# -- deferred maps (the DMA layer supplies the retry closures) -------------------------------


def test_a_pool_added_by_the_worker_completes_waiting_maps_in_order() -> None:
    policy, clock = setup(1024, transient=False)
    isa = Dev("isa", dma_limit=(1 << 24) - 1)
    policy.attach_device(isa)  # a 1 MiB pool in ZONE_DMA
    pages = policy.env.pages
    hog = [(p, order) for order in range(pages.max_order, -1, -1)
           for p in iter(lambda o=order: pages.alloc_pages(o, limit=isa.dma_limit, owner="hog"), None)]
    fills = [policy.map(isa, 0x1_0000_0000, 256 << 10, may_sleep=True) for _ in range(4)]
    assert all(isinstance(f, SlotMapping) for f in fills)
    done: list[tuple[int, SlotMapping]] = []

    def retry_for(i: int) -> Callable[[], bool]:
        def retry() -> bool:
            r = policy.map(isa, 0x2_0000_0000 + i, 64 << 10, may_sleep=True)
            if isinstance(r, MapRefused):
                return False
            assert isinstance(r, SlotMapping)
            done.append((i, r))
            return True
        return retry

    for i in range(3):
        assert isinstance(policy.map(isa, 0x2_0000_0000 + i, 64 << 10, may_sleep=True), MapRefused)
        assert policy.defer(isa, retry_for(i))
    assert policy.deferred_waiting(isa) == 3 and policy.deferred_waiting(Dev()) == 0  # per zone
    assert policy.run_deferred() == 0 and done == []  # the worker is not due yet
    for p, order in hog:  # memory comes back; the worker (scheduled by the deferrals) can grow
        pages.free_pages(p, order)
    clock.now = 30_000
    pools = policy.counts["pools_created"]
    policy.run_deferred()
    assert policy.counts["pools_created"] == pools + 1
    assert [i for i, _ in done] == [0, 1, 2] and all(m.tlb_addr < 1 << 24 for _, m in done)
    stats = policy.stats()
    assert stats["deferred"] == stats["deferred_completed"] == 3 and stats["deferred_wait_max_ns"] == 30_000
    assert stats["deferred_pending"] == 0


def test_the_queue_retries_only_after_a_kick_and_never_reenters() -> None:
    clock = Clock()
    q = DeferralQueue(clock)
    order: list[str] = []

    def ok(name: str) -> Callable[[], bool]:
        def retry() -> bool:
            assert q.drain() == 0  # a callback that drains again does nothing
            order.append(name)
            return True
        return retry

    def boom() -> bool:
        raise RuntimeError("driver callback failed")

    q.add("a", ok("first"))
    q.add("a", boom)
    q.add("b", ok("third"))
    assert q.drain() == 0 and not q.ready  # no room has appeared
    q.kick()
    clock.now = 7
    with pytest.raises(RuntimeError, match="driver callback"):
        q.drain()
    assert order == ["first"] and q.waiting() == 1 and q.waiting("b") == 1 and not q.ready
    q.kick()
    assert q.drain() == 1 and order == ["first", "third"]
    assert q.counters() == {
        "deferred": 3, "deferred_completed": 3, "deferred_pending": 0,
        "deferred_wait_total_ns": 21, "deferred_wait_max_ns": 7,
    }


# -- through the machine -------------------------------------------------------------------


def test_machine_boots_a_small_pool_for_adaptive() -> None:
    static = Machine("8G", cpus=8, cmdline="swiotlb=force")
    adaptive = Machine("8G", cpus=8, cmdline="swiotlb=force", policy="adaptive")
    assert static.stats["io_tlb_nslabs"] == 32768
    assert adaptive.stats["io_tlb_nslabs"] == 512  # 1 MiB, with areas limited to 512 / 128
    assert adaptive.pool is not None and adaptive.pool.nareas == 4


def test_embedded_board_footprint_and_oom() -> None:
    """Scenario S6 / issue 3 §5: a 512 MiB board with rare small bounces. The static pool
    holds 64 MiB; adaptive holds at most 2 MiB, and under memory pressure the static pool's
    64 MiB turn into OOM events that the adaptive board does not have."""
    results = {}
    for policy in ("static", "adaptive"):
        clock = Clock()
        m = Machine("512M", cpus=2, cmdline="swiotlb=force", policy=policy, clock=clock)
        sdio = m.add_device("sdio")
        buf = m.alloc(4096)
        for i in range(60):  # ~6 events/s for 10 s: 4 B, 212 B and 4096 B bounces
            clock.now += SECOND // 6
            size = (4, 212, 4096)[i % 3]
            dma = sdio.map_single(buf, size, DmaDirection.TO_DEVICE)
            sdio.unmap(dma, size, DmaDirection.TO_DEVICE)
            m.run_deferred()
        reserved = m.stats["io_tlb_nslabs"] << IO_TLB_SHIFT
        load = BackgroundLoad(m.pages, random.Random(1), target_bytes=480 << 20)
        for step in range(200):
            load.step(step)
        results[policy] = (reserved, m.pages.stats.oom_events)
    assert results["static"][0] == 64 << 20
    assert results["adaptive"][0] <= 2 << 20
    assert results["static"][1] > 0 and results["adaptive"][1] == 0


def test_make_policy_builds_adaptive_from_options() -> None:
    policy, _ = setup(1024)
    p2 = make_policy("adaptive", IoTlbMem([IoTlbPool(0x8000_0000, 512, 1)], "v6.12"), policy.env, idle_ns=5)
    assert isinstance(p2, AdaptivePolicy) and p2.knobs.idle_ns == 5
    assert isinstance(p2.map(Dev(), 0x1000, 300 << 10), BufferMapping)  # > 256 KiB: its own buffer
    p3 = make_policy("adaptive", IoTlbMem([IoTlbPool(0x8000_0000, 512, 1)]), policy.env, large_buffers=False)
    assert isinstance(p3.map(Dev(), 0x1000, 300 << 10), MapRefused)  # slots only: too large


def test_growth_sizes_always_split_into_whole_areas() -> None:
    """Demand-sized pools (1536 slots with 8 default areas) get as many areas as divide them."""
    base = 0x4000_0000
    pages = PageAllocator(ZoneLayout.x86_64(8 * GIB), reserved=[(base, 1024 << IO_TLB_SHIFT)])
    env = PolicyEnv(pages, MemoryEncryption(False, page_size=4096), clock=Clock())
    mem = IoTlbMem([IoTlbPool(base, 1024, 8)], "v6.12", force_bounce=True)
    policy = AdaptivePolicy(mem, env, min_grow_slabs=1536)
    for i in range(12):
        assert isinstance(policy.map(Dev(), 0x1_0000_0000 + (i << 20), 256 << 10, may_sleep=True), SlotMapping)
    grown = policy.mem.pools[0]
    assert grown.nslabs == 1536 and (grown.nslabs // grown.nareas) % 128 == 0
    m = Machine("8G", cpus=4, cmdline="swiotlb=force swiotlb.policy=adaptive swiotlb.initial_slabs=384")
    assert m.pool is not None and m.pool.nslabs == 384 and m.pool.nareas == 1


def test_a_zone_without_memory_grows_on_the_first_sleeping_map() -> None:
    policy, _ = setup(1024)
    low = Dev("old", dma_limit=(1 << 30) - 1)
    pages = policy.env.pages
    hog = []
    for order in (10, 0):  # take everything below 1 GiB
        while (phys := pages.alloc_pages(order, limit=(1 << 30) - 1, owner="hog")) is not None:
            hog.append((phys, order))
    policy.attach_device(low)  # nothing below 1 GiB right now: the zone starts empty
    zone = policy._zone_for(low)
    assert zone.mem.nslabs == 0
    for phys, order in hog:
        pages.free_pages(phys, order)
    r = policy.map(low, 0x1_8000_0000, 4096, may_sleep=True)
    assert isinstance(r, SlotMapping) and r.tlb_addr < 1 << 30


def test_the_boot_pool_going_idle_sets_no_deadline() -> None:
    policy, clock = setup(1024)
    r = policy.map(Dev(), 0x1_0000_0000, 4096)
    assert isinstance(r, SlotMapping)
    policy.release(Dev(), r.tlb_addr, r.pool)
    clock.now = 100 * SECOND
    policy.run_deferred()
    assert policy.next_deadline() is None


def test_hiwater_is_the_peak_of_the_sum_over_zones() -> None:
    policy, _ = setup(1024)
    a, b = Dev("a"), Dev("b", dma_limit=(1 << 32) - 1)
    policy.attach_device(b)
    ra = policy.map(a, 0x1_0000_0000, 64 << 10)  # 32 slots in the default zone
    assert isinstance(ra, SlotMapping)
    policy.release(a, ra.tlb_addr, ra.pool)
    rb = policy.map(b, 0x1_0000_0000, 64 << 10)  # 32 slots in the 32-bit zone, later
    assert isinstance(rb, SlotMapping)
    assert policy.counters()["io_tlb_used_hiwater"] == 32  # never 64 slots at once


def test_a_quiet_zone_gives_back_its_boot_pool_and_lives_on_transient_pools() -> None:
    """S6: a window of idle_ns whose peak use stayed at or below small_demand_slabs frees every
    empty pool, the boot pool included; rare maps then get exact-size transient pools, no worker
    runs, and nothing grows until demand returns."""
    policy, clock = setup(512, idle_ns=10 * SECOND, coco=True)
    policy.env.encryption.set_decrypted(0x4000_0000, 256, may_sleep=True)  # as the machine boots it
    pages, dev = policy.env.pages, Dev()
    free0 = pages.free_bytes()
    m = policy.map(dev, 0x1_0000_0000, 4096)
    assert isinstance(m, SlotMapping)
    policy.release(dev, m.tlb_addr, m.pool)
    assert policy.next_deadline() == 10 * SECOND  # the end of the demand window
    clock.now = 10 * SECOND
    enc0 = policy.env.encryption.stats.encrypt_ops
    assert policy.run_deferred() == 1
    assert policy.mem.nslabs == 0 and policy.footprint() == (0, 0)
    assert pages.free_bytes() == free0 + (512 << IO_TLB_SHIFT)  # the reserved boot memory is free
    assert policy.env.encryption.stats.encrypt_ops == enc0 + 1  # private again before it is freed
    r = policy.map(dev, 0x1_0000_2000, 212)
    assert isinstance(r, SlotMapping) and r.pool.transient and r.pool.nslabs == 1  # exact size
    assert policy.next_deadline() is None and policy.counts["worker_scheduled"] == 0
    policy.release(dev, r.tlb_addr, r.pool)
    assert policy.footprint() == (0, 0)


def test_demand_coming_back_to_a_quiet_zone_grows_it_again() -> None:
    policy, clock = setup(512, idle_ns=10 * SECOND)
    dev = Dev()
    clock.now = 10 * SECOND
    policy.run_deferred()
    assert policy.mem.nslabs == 0
    held = [policy.map(dev, 0x1_0000_0000 + (i << 20), 65536) for i in range(3)]  # 96 slots > 64
    assert all(isinstance(m, SlotMapping) and m.pool.transient for m in held)
    assert policy.counts["worker_scheduled"] == 1  # the window's peak passed small_demand_slabs
    clock.now += 1_000
    policy.run_deferred()
    assert policy.mem.nslabs == 1024 and policy.counts["pools_created"] == 1


def test_a_busy_zone_keeps_its_pools_at_the_end_of_a_window() -> None:
    policy, clock = setup(512, idle_ns=10 * SECOND)
    dev = Dev()
    held = [policy.map(dev, 0x1_0000_0000 + (i << 20), 65536) for i in range(3)]  # 96 slots
    for m in held:
        assert isinstance(m, SlotMapping)
        policy.release(dev, m.tlb_addr, m.pool)
    clock.now = 10 * SECOND
    policy.run_deferred()
    assert policy.mem.nslabs == 512  # the window peaked at 96 slots: not quiet
    assert policy.next_deadline() == 20 * SECOND  # a new window began


@pytest.mark.parametrize(("ram", "coco", "slabs"), [
    (8 * GIB, False, 1024), (2 * GIB, True, 1024), (8 * GIB, True, 4096), (64 * GIB, True, 32768),
    (256 * GIB, True, 32768),
])
def test_the_smallest_growth_scales_with_ram_only_in_a_confidential_guest(ram: int, coco: bool, slabs: int) -> None:
    """Each growth in a CoCo guest costs a conversion: bigger guests grow in bigger steps."""
    policy, _ = setup(1024, coco=coco, ram=ram)
    assert policy.min_grow_slabs == slabs
    assert setup(1024, coco=coco, ram=ram, min_grow_slabs=2048)[0].min_grow_slabs == 2048


def test_a_zones_first_idle_time_follows_its_idle_pools() -> None:
    """``BounceZone.first_idle`` keeps the oldest idle time without a pass over the pools; driven
    at random (pools going idle, renewed, busy), it always equals the minimum taken afresh."""
    m = Machine("4G", cmdline="swiotlb=force swiotlb.policy=adaptive")
    assert isinstance(m.policy, AdaptivePolicy)
    zone = m.policy._default
    rng = random.Random(5)
    now = 0
    for _ in range(5000):
        now += rng.randrange(3)  # equal times too
        key = rng.randrange(8)
        if rng.random() < 0.5:
            zone.went_idle(key, now)  # new or renewed
        else:
            zone.went_busy(key)  # idle or not
        if rng.random() < 0.7:  # asked often, not always: invalidations pile up in between
            assert zone.first_idle() == (min(zone.idle_since.values()) if zone.idle_since else None)
