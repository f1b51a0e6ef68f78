"""The Linux 6.6 dynamic design (spec §5): transient pools, the growth worker, no shrinking."""

from __future__ import annotations


import pytest

from swiotlb.core import IoTlbMem, IoTlbPool, MapRefused, SlotMapping
from swiotlb.core.constants import IO_TLB_SHIFT
from swiotlb.memory import MemoryEncryption, PageAllocator, SleepInAtomicContext, ZoneLayout
from swiotlb.policies.env import PolicyEnv
from swiotlb.policies.linux66 import Linux66Policy
from tests.policies.support import Clock, Dev

GIB = 1 << 30



def setup(nslabs: int = 1024, nareas: int = 1, *, coco: bool = False, profile: str = "v6.12",
          ram: int = 4 * GIB) -> tuple[Linux66Policy, Clock]:
    pages = PageAllocator(ZoneLayout.x86_64(ram), reserved=[(0x4000_0000, nslabs << IO_TLB_SHIFT)])
    clock = Clock()
    env = PolicyEnv(pages, MemoryEncryption(coco, page_size=4096), clock=clock)
    mem = IoTlbMem([IoTlbPool(0x4000_0000, nslabs, nareas)], profile, force_bounce=True)
    return Linux66Policy(mem, env, worker_delay_ns=1_000), clock


def fill(policy: Linux66Policy, dev: Dev, n: int, size: int = 256 << 10) -> list[SlotMapping]:
    out = []
    for i in range(n):
        r = policy.map(dev, 0x1_0000_0000 + i * size, size)
        assert isinstance(r, SlotMapping), r
        out.append(r)
    return out


def test_a_full_pool_falls_back_to_a_transient_pool_and_schedules_growth() -> None:
    policy, clock = setup(1024)
    dev = Dev()
    fill(policy, dev, 8)  # 8 x 128 slots: the boot pool is full
    r = policy.map(dev, 0x2_0000_0000, 5000)
    assert isinstance(r, SlotMapping) and r.pool.transient and r.pool.nslabs == 3
    assert policy.mem.counters()["io_tlb_transient_nslabs"] == 3
    assert policy.worker_due == 1_000 and policy.counts["worker_scheduled"] == 1
    policy.map(dev, 0x2_0000_1000 + (1 << 20), 4096)  # a second failure does not queue twice
    assert policy.counts["worker_scheduled"] == 1
    policy.release(dev, r.tlb_addr, r.pool)
    assert policy.mem.counters()["io_tlb_transient_nslabs"] == 2  # only the second one is left
    assert policy.find_pool(dev, r.tlb_addr) is None


def test_the_worker_lands_a_pool_later_and_later_maps_use_it() -> None:
    policy, clock = setup(1024, nareas=1)
    dev = Dev()
    fill(policy, dev, 8)
    policy.map(dev, 0x2_0000_0000, 4096)
    assert policy.run_deferred() == 0  # not due yet
    clock.now = 1_000
    assert policy.run_deferred() == 1
    assert policy.counts["pools_created"] == 1 and len(policy.mem.pools) == 2
    grown = policy.mem.pools[0]
    assert grown.late_alloc and not grown.transient
    assert grown.nslabs == 1024  # default_nslabs (the boot pool's size), below the 2048-slot cap
    r = policy.map(dev, 0x3_0000_0000, 8192)
    assert isinstance(r, SlotMapping) and r.pool is grown
    assert policy.mem.counters()["io_tlb_nslabs"] == 2048


def test_growth_is_capped_at_max_page_order_and_halves_on_failure() -> None:
    policy, clock = setup(32768, ram=1 * GIB)
    policy.default_nslabs = 32768
    policy._schedule_worker()
    clock.now = 10**9
    policy.run_deferred()
    assert policy.mem.pools[0].nslabs == 2048  # 4 MiB with 4 KiB pages (spec §5.4)


def test_requests_over_256k_are_rejected_early_without_growth_on_6_12() -> None:
    policy, _ = setup(1024)
    r = policy.map(Dev(), 0x1_0000_0000, (256 << 10) + 1)
    assert isinstance(r, MapRefused) and r.cause.value == "too_large"
    assert policy.worker_due is None and policy.counts["transient_created"] == 0


def test_pools_are_never_freed() -> None:
    policy, clock = setup(1024)
    dev = Dev()
    maps = fill(policy, dev, 8)
    policy.map(dev, 0x2_0000_0000, 4096)
    clock.now = 5_000
    policy.run_deferred()
    for m in maps:
        policy.release(dev, m.tlb_addr, m.pool)
    clock.now = 10**12
    assert policy.run_deferred() == 0 and len(policy.mem.pools) == 2


def test_transient_pools_in_a_confidential_guest_come_from_the_atomic_pool() -> None:
    """Atomic callers must not decrypt (it may sleep): transient pools use pre-decrypted memory."""
    policy, clock = setup(1024, coco=True)
    dev = Dev()
    fill(policy, dev, 8)
    decrypts = policy.env.encryption.stats.decrypt_ops
    r = policy.map(dev, 0x2_0000_0000, 4096)
    assert isinstance(r, SlotMapping) and policy.env.atomic_pool is not None
    assert policy.env.atomic_pool.owns(r.pool.start)
    assert policy.env.encryption.stats.decrypt_ops == decrypts  # no per-mapping decrypt
    clock.now = 1_000
    policy.run_deferred()  # the worker sleeps: its pool is decrypted once, as a whole
    assert policy.env.encryption.stats.decrypt_ops == decrypts + 1


def test_env_refuses_sleeping_work_for_an_atomic_caller() -> None:
    policy, _ = setup(1024, coco=True)
    env = policy.env
    with pytest.raises(SleepInAtomicContext):
        env.free_bounce(0x8000_0000, 4096, may_sleep=False, owner="x")


def test_a_device_that_never_bounced_skips_the_pool_walk() -> None:
    policy, _ = setup(1024)
    assert policy.find_pool(Dev("quiet"), 0x4000_0000) is None
    r = policy.map(Dev("busy"), 0x1_0000_0000, 4096)
    assert isinstance(r, SlotMapping)
    assert policy.find_pool(Dev("busy"), r.tlb_addr) is r.pool


def test_transient_pool_too_small_for_a_min_align_offset_is_given_back() -> None:
    """Spec §5.5 caveat: a request that needs an odd first slot cannot fit an exact-size pool."""
    policy, _ = setup(1024)
    nvme = Dev(min_align_mask=0xFFF)
    fill(policy, Dev(), 8)
    before = policy.env.pages.free_bytes()
    r = policy.map(nvme, 0x2_0000_0800, 4096)  # bit 11 set: needs an odd slot
    assert isinstance(r, MapRefused)
    assert policy.counts["transient_unusable"] == 1
    assert policy.env.pages.free_bytes() == before and policy.mem.transient_pools == []
    assert policy.mem.check_invariants() == []


def test_v6_6_profile_searches_pool_major() -> None:
    policy, clock = setup(1024, nareas=1, profile="v6.6")
    dev = Dev()
    fill(policy, dev, 8)
    policy.map(dev, 0x2_0000_0000, 4096)
    clock.now = 1_000
    policy.run_deferred()
    assert policy.mem.profile.area_major is False and len(policy.mem.pools) == 2
    r = policy.map(dev, 0x3_0000_0000, 8192)
    assert isinstance(r, SlotMapping) and r.pool is policy.mem.pools[0]  # the newest pool first


def test_a_kernel_overrun_in_a_transient_pool_leaves_nothing_behind() -> None:
    """6.6.0 did not cap the free-run lengths at a small pool's end (CVE-2023-52790): a mapping
    that needs an odd slot would run past a 2-slot transient pool. The model refuses with
    PoolOverrun, after giving the pool and its memory back."""
    from swiotlb.core.search import PoolOverrun

    policy, _ = setup(1024, profile="v6.6")
    fill(policy, Dev(), 8)
    free = policy.env.pages.free_bytes()
    with pytest.raises(PoolOverrun):
        policy.map(Dev(min_align_mask=0xFFF), 0x2_0000_0800, 4096)  # 2 slots, the odd one first
    assert policy.mem.transient_pools == [] and policy.mem.transient_nslabs == 0
    assert policy.env.pages.free_bytes() == free


def test_grown_pools_stay_below_the_allocator_phys_limit() -> None:
    """Spec §1.5/§5.3: without SWIOTLB_ANY the worker allocates below ARCH_LOW_ADDRESS_LIMIT."""
    from swiotlb import DmaDirection, Machine, dma_bit_mask

    clock = Clock()
    m = Machine("16G", cmdline="swiotlb=512,force", policy="linux-6.6", clock=clock)
    nic = m.add_device("nic", dma_mask=dma_bit_mask(32))
    bufs = [m.alloc(256 << 10) for _ in range(5)]
    for b in bufs[:4]:
        nic.map_single(b, 256 << 10, DmaDirection.TO_DEVICE)
    nic.map_single(bufs[4], 4096, DmaDirection.TO_DEVICE)  # transient, worker scheduled
    clock.now = 10**9
    m.run_deferred()
    grown = m.mem.pools[0]
    assert grown is not m.pool and grown.end <= 1 << 32
    dma = nic.map_single(bufs[4], 8192, DmaDirection.TO_DEVICE)
    assert dma + 8192 <= 1 << 32


def test_next_deadline_is_the_worker_and_footprint_counts_transient_pools() -> None:
    policy, clock = setup(1024)
    dev = Dev()
    assert policy.next_deadline() is None
    assert policy.footprint() == (1024 << IO_TLB_SHIFT, 0)
    fill(policy, dev, 8)
    r = policy.map(dev, 0x2_0000_0000, 5000)  # transient: 3 slots
    assert isinstance(r, SlotMapping) and r.pool.transient
    assert policy.next_deadline() == 1_000
    assert policy.footprint() == ((1024 + 3) << IO_TLB_SHIFT, (1024 + 3) << IO_TLB_SHIFT)
    clock.now = 1_000
    policy.run_deferred()
    assert policy.next_deadline() is None


def test_the_environment_counts_page_allocations_by_order() -> None:
    from collections import Counter

    from swiotlb.core import IoTlbSteps

    policy, clock = setup(1024)
    steps = IoTlbSteps()
    policy.env.steps = steps
    fill(policy, Dev(), 8)
    policy.map(Dev(), 0x2_0000_0000, 5000)  # a 3-slot transient pool: one order-1 allocation
    assert steps == Counter({"page_alloc_order_1": 1})
    assert policy.env.stats.page_allocs == 1 and policy.env.stats.page_alloc_pages == 2
