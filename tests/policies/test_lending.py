"""The lending design (issue 3 §2): a CMA region lent to movable memory, claimed by chunks on demand.

Sources: spec §7.3 (RFC v1, ``DMA_ATTR_MAY_SLEEP`` for "page reclaim/CMA"), §5.3-§5.4 (worker,
pool sizes), §1.6 (256 KiB); scenarios S4 (30-bit vc4, region below 1 GiB), S6/S12 (footprint,
shrink after idle), feature table (Hyper-V 30 s hysteresis).
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from swiotlb.core import IoTlbMem, IoTlbPool, MapFailure, MapRefused, SlotMapping
from swiotlb.core.constants import IO_TLB_SHIFT
from swiotlb.memory import (
    GFP_NOWAIT,
    BackgroundLoad,
    CmaRegion,
    MemoryEncryption,
    PageAllocator,
    SleepInAtomicContext,
    ZoneLayout,
)
from swiotlb.policies import POLICIES, make_policy
from swiotlb.policies.env import PolicyEnv
from swiotlb.policies.lending import OWNER, LendingPolicy
from tests.policies.support import Clock, Dev

MIB = 1 << 20
GIB = 1 << 30
CHUNK = 4 * MIB
SEG = 256 << 10  # the largest slot mapping: one 128-slot segment
PER_CHUNK = CHUNK // SEG


def setup(
    ram: int = 128 * MIB, region: tuple[int, int] = (64 * MIB, 64 * MIB), *, coco: bool = False,
    phys_limit: int = (1 << 64) - 1, **knobs: Any,
) -> tuple[LendingPolicy, Clock]:
    """A small x86 guest whose CMA region is most of its free memory, so movable loads use it."""
    pages = PageAllocator(ZoneLayout.x86_64(ram), cma=[CmaRegion(*region, name="swiotlb")])
    clock = Clock()
    env = PolicyEnv(pages, MemoryEncryption(coco, page_size=4096), clock=clock)
    mem = IoTlbMem([], "v6.12", force_bounce=True, phys_limit=phys_limit)
    policy = LendingPolicy(mem, env, region_start=region[0], region_bytes=region[1], **knobs)
    return policy, clock


def lend(policy: LendingPolicy, target: int = 96 * MIB) -> BackgroundLoad:
    """Page cache / anonymous memory: all movable, so some of it is lent region pages."""
    load = BackgroundLoad(policy.env.pages, random.Random(7), target_bytes=target, movable_fraction=1.0)
    load.step(0)
    return load


def lent_pages(policy: LendingPolicy, start: int, end: int) -> int:
    pages = policy.env.pages
    return sum(1 for a in range(start, end, pages.page_size) if pages.page_kind(a) == "movable")


def fill(policy: LendingPolicy, n: int, dev: Dev = Dev(), *, may_sleep: bool = True) -> list[SlotMapping]:
    out = []
    for i in range(n):
        r = policy.map(dev, 0x1_0000_0000 + i * SEG, SEG, may_sleep=may_sleep)
        assert isinstance(r, SlotMapping), r
        out.append(r)
    return out


def test_registered_and_built_by_make_policy() -> None:
    assert POLICIES["lending"] is LendingPolicy
    pages = PageAllocator(ZoneLayout.x86_64(128 * MIB), cma=[CmaRegion(96 * MIB, 32 * MIB)])
    policy = make_policy("lending", IoTlbMem([], "v6.12"), PolicyEnv(pages), region_start=96 * MIB,
                         region_bytes=32 * MIB, chunk_bytes=2 * MIB)
    assert isinstance(policy, LendingPolicy) and len(policy.chunks) == 1
    assert policy.mem.nslabs == 1024 and policy.chunks[0].start >= 96 * MIB


def test_boot_claims_one_chunk_from_the_region_and_nothing_else() -> None:
    policy, _ = setup()
    (chunk,) = policy.chunks
    assert policy.mem.pools == [chunk] and chunk.nslabs == CHUNK >> IO_TLB_SHIFT
    assert 64 * MIB <= chunk.start and chunk.end <= 128 * MIB
    assert policy.env.pages.bytes_by_owner()[OWNER] == CHUNK
    assert policy.footprint() == (CHUNK, 0)  # reserved: what bouncing holds, not the 64 MiB region


def test_lent_pages_are_migrated_out_when_a_sleeping_mapping_needs_a_chunk() -> None:
    policy, _ = setup()
    pages = policy.env.pages
    load = lend(policy)
    assert lent_pages(policy, 64 * MIB, 128 * MIB) > 0 and pages.stats.cma_lent > 0
    fill(policy, PER_CHUNK)  # the boot chunk is full
    before = pages.stats.migrated_pages
    r = policy.map(Dev(), 0x2_0000_0000, 8192, may_sleep=True)
    assert isinstance(r, SlotMapping) and len(policy.chunks) == 2 and r.pool is policy.chunks[1]
    moved = pages.stats.migrated_pages - before
    assert moved > 0 and load.stats.migrations_seen > 0
    stats = policy.stats()
    assert stats["migrated_pages"] == moved
    assert stats["migration_cost_ns"] == moved * pages.migrate_cost_ns_per_page
    assert stats["chunks_claimed"] == 2 and stats["reserved_bytes"] == 2 * CHUNK
    new = policy.chunks[1]
    assert lent_pages(policy, new.start, new.end) == 0 and pages.in_cma(new.start)
    pages.check()


def test_an_atomic_mapping_never_migrates_and_schedules_a_claim() -> None:
    policy, clock = setup(worker_delay_ns=1_000)
    pages = policy.env.pages
    lend(policy)
    fill(policy, PER_CHUNK)
    migrated, contig = pages.stats.migrated_pages, pages.stats.contig_allocations
    r = policy.map(Dev(), 0x2_0000_0000, 8192, may_sleep=False)  # no exception may leak
    assert isinstance(r, MapRefused) and r.cause is MapFailure.FULL
    assert pages.stats.migrated_pages == migrated and pages.stats.contig_allocations == contig
    assert len(policy.chunks) == 1 and policy.counts["failed_atomic"] == 1
    with pytest.raises(SleepInAtomicContext):  # the rule the policy must respect
        pages.alloc_contig(CHUNK, gfp=GFP_NOWAIT, owner=OWNER, cma_only=True)
    assert policy.next_due == 1_000 and policy.run_deferred() == 0  # not due yet
    clock.now = 1_000
    assert policy.run_deferred() == 1 and len(policy.chunks) == 2  # process context: may migrate
    assert pages.stats.migrated_pages > migrated
    assert isinstance(policy.map(Dev(), 0x2_0000_0000, 8192, may_sleep=False), SlotMapping)


def test_idle_chunks_go_back_after_the_hysteresis_and_not_before() -> None:
    policy, clock = setup(idle_ns=1_000)
    pages = policy.env.pages
    held = fill(policy, PER_CHUNK + 1)  # the last one claimed a second chunk
    extra = held.pop()
    second = extra.pool
    clock.now = 500
    policy.release(Dev(), extra.tlb_addr, extra.pool)  # the second chunk is idle from t=500
    clock.now = 1_499
    assert policy.run_deferred() == 0 and second in policy.chunks
    assert policy.next_due == policy.next_deadline() == 1_500
    clock.now = 1_500
    assert policy.run_deferred() == 1 and policy.chunks == [held[0].pool]
    assert pages.page_kind(second.start) == "free" and pages.in_cma(second.start)
    assert policy.stats()["chunks_returned"] == 1 and policy.footprint()[0] == CHUNK
    lend(policy, 120 * MIB)  # the returned chunk is lent again
    assert lent_pages(policy, second.start, second.end) > 0
    for m in held:  # the minimum (the boot chunk) stays, however long it idles
        policy.release(Dev(), m.tlb_addr, m.pool)
    clock.now = 10**12
    assert policy.run_deferred() == 0 and len(policy.chunks) == 1
    pages.check()


def test_a_chunk_used_again_restarts_its_idle_clock() -> None:
    policy, clock = setup(idle_ns=1_000)
    held = fill(policy, PER_CHUNK + 1)
    extra = held.pop()
    policy.release(Dev(), extra.tlb_addr, extra.pool)  # idle from t=0
    clock.now = 600
    again = policy.map(Dev(), 0x3_0000_0000, 4096, may_sleep=False)
    assert isinstance(again, SlotMapping) and again.pool is extra.pool
    clock.now = 800
    policy.release(Dev(), again.tlb_addr, again.pool)  # idle from t=800
    clock.now = 1_000
    assert policy.run_deferred() == 0 and len(policy.chunks) == 2
    clock.now = 1_800
    assert policy.run_deferred() == 1 and len(policy.chunks) == 1


def test_confidential_guest_decrypts_once_per_chunk_not_per_mapping() -> None:
    policy, clock = setup(coco=True, idle_ns=0)
    enc = policy.env.encryption
    (boot,) = policy.chunks
    assert enc.is_shared(boot.start, CHUNK // 4096)
    decrypts = enc.stats.decrypt_ops
    for i in range(100):
        r = policy.map(Dev(), 0x1_0000_0000 + i * 4096, 4096, may_sleep=True)
        assert isinstance(r, SlotMapping)
        policy.release(Dev(), r.tlb_addr, r.pool)
    assert enc.stats.decrypt_ops == decrypts
    held = fill(policy, PER_CHUNK + 1)  # claims one chunk: one decrypt
    assert enc.stats.decrypt_ops == decrypts + 1 and policy.stats()["decrypt_ops"] == decrypts + 1
    second = held[-1].pool
    assert enc.is_shared(second.start, CHUNK // 4096)
    encrypts = enc.stats.encrypt_ops
    policy.release(Dev(), held[-1].tlb_addr, second)
    assert policy.run_deferred() == 1  # returned: encrypted again, once
    assert enc.stats.encrypt_ops == encrypts + 1 and not enc.is_shared(second.start)


def test_the_region_and_each_claim_respect_the_device_limit() -> None:
    """S4: a 30-bit vc4 needs bounce memory below 1 GiB; the region is placed there."""
    vc4 = Dev(dma_limit=GIB - 1)
    policy, _ = setup(2 * GIB, (512 * MIB, 64 * MIB), phys_limit=GIB - 1)
    fill(policy, 5 * PER_CHUNK, vc4)
    assert len(policy.chunks) == 5 and all(c.end <= GIB for c in policy.chunks)
    with pytest.raises(ValueError, match="phys_limit"):
        setup(2 * GIB, (GIB + 512 * MIB, 64 * MIB), phys_limit=GIB - 1)
    low = Dev("low", dma_limit=512 * MIB + 8 * MIB - 1)  # reaches only the first two chunks
    policy, _ = setup(2 * GIB, (512 * MIB, 16 * MIB))
    fill(policy, 2 * PER_CHUNK, low)
    r = policy.map(low, 0x2_0000_0000, SEG, may_sleep=True)
    assert isinstance(r, MapRefused) and policy.counts["failed_claim"] == 1
    assert all(c.end - 1 <= low.dma_limit for c in policy.chunks)
    assert isinstance(policy.map(Dev(), 0x2_0000_0000, SEG, may_sleep=True), SlotMapping)


def test_mappings_over_256k_still_fail_as_too_large_without_claiming() -> None:
    policy, _ = setup()
    pages = policy.env.pages
    lend(policy)
    contig = pages.stats.contig_allocations
    for size in (SEG + 1, 8_294_400):  # S4's FullHD frame
        r = policy.map(Dev(), 0x1_0000_0000, size, may_sleep=True)
        assert isinstance(r, MapRefused) and r.cause is MapFailure.TOO_LARGE
    assert pages.stats.contig_allocations == contig and len(policy.chunks) == 1
    assert policy.stats()["failed_too_large"] == 2 and policy.stats()["failures"] == 2


def test_bad_configurations_are_refused() -> None:
    policy, _ = setup()
    env = policy.env
    with pytest.raises(ValueError, match="region_start"):
        LendingPolicy(IoTlbMem([], "v6.12"), env)
    for start, size in ((32 * MIB, 16 * MIB), (96 * MIB, 32 * MIB), (64 * MIB, 128 * MIB)):  # none, part, beyond
        with pytest.raises(ValueError, match="not a .whole. CMA region"):
            LendingPolicy(IoTlbMem([], "v6.12"), env, region_start=start, region_bytes=size)
    with pytest.raises(ValueError, match="256 KiB"):
        LendingPolicy(IoTlbMem([], "v6.12"), env, region_start=64 * MIB, region_bytes=8 * MIB, chunk_bytes=100_000)
    with pytest.raises(ValueError, match="6.6"):
        LendingPolicy(IoTlbMem([], "v6.5"), env, region_start=64 * MIB, region_bytes=8 * MIB)


def test_a_boot_pool_in_mem_is_kept_and_replaces_the_minimum_chunk() -> None:
    pages = PageAllocator(ZoneLayout.x86_64(128 * MIB), reserved=[(8 * MIB, 2 * MIB)],
                          cma=[CmaRegion(64 * MIB, 64 * MIB)])
    boot = IoTlbPool(8 * MIB, 1024, 1, name="default")
    policy = LendingPolicy(IoTlbMem([boot], "v6.12"), PolicyEnv(pages), region_start=64 * MIB,
                           region_bytes=64 * MIB, idle_ns=0)
    assert policy.chunks == [] and policy.min_chunks == 0 and policy.mem.pools == [boot]
    assert LendingPolicy.boot_nslabs(32768) == CHUNK >> IO_TLB_SHIFT
    assert LendingPolicy.region_size(32768) == 64 * MIB
    held = fill(policy, 9)  # 8 fill the 2 MiB boot pool; the 9th claims a chunk
    assert len(policy.chunks) == 1 and held[-1].pool is policy.chunks[0]
    for m in held:
        policy.release(Dev(), m.tlb_addr, m.pool)
    assert policy.run_deferred() == 1 and policy.mem.pools == [boot]


def test_invariants_hold_over_a_random_sequence() -> None:
    policy, clock = setup(idle_ns=2_000, worker_delay_ns=100)
    pages = policy.env.pages
    load = BackgroundLoad(pages, random.Random(3), target=lambda t: (40 + (t // 5_000) % 3 * 25) * MIB,
                          movable_fraction=0.95, order_mix={0: 3, 2: 1})
    rng = random.Random(11)
    devs = [Dev("a"), Dev("b", min_align_mask=0xFFF), Dev("c", dma_limit=100 * MIB - 1)]
    live: list[tuple[Dev, SlotMapping]] = []
    for step in range(3_000):
        clock.now += rng.randrange(0, 50)
        if step % 100 == 0:
            load.step(clock.now)
        op = rng.random()
        if op < 0.5:
            dev = rng.choice(devs)
            r = policy.map(dev, rng.randrange(1 << 32, 1 << 33), rng.choice([512, 4096, 65536, SEG]),
                           may_sleep=rng.random() < 0.6)
            if isinstance(r, SlotMapping):
                live.append((dev, r))
        elif live:
            dev, m = live.pop(rng.randrange(len(live)))
            policy.release(dev, m.tlb_addr, m.pool)
        if op > 0.97:
            policy.run_deferred()
    assert policy.mem.check_invariants() == []
    pages.check()
    chunks = policy.chunks
    reserved, in_use = policy.footprint()
    assert reserved == len(chunks) * CHUNK == pages.bytes_by_owner().get(OWNER, 0)
    assert in_use == sum(m.nslots for _, m in live) << IO_TLB_SHIFT
    stats = policy.stats()
    assert stats["chunks_claimed"] - stats["chunks_returned"] == len(chunks)
    assert stats["chunks_returned"] > 0 and stats["migrated_pages"] > 0 and stats["failed_atomic"] > 0
    for dev, m in live:
        policy.release(dev, m.tlb_addr, m.pool)
    clock.now += 10**9
    policy.run_deferred()
    assert len(policy.chunks) == 1 and policy.mem.check_invariants() == []


def test_machine_end_to_end_bounces_through_claimed_chunks() -> None:
    from swiotlb import DmaDirection, Machine, dma_bit_mask

    clock = Clock()
    region = (512 * MIB, 64 * MIB)
    m = Machine("2G", policy="lending", cma=[region], clock=clock,
                policy_options={"region_start": region[0], "region_bytes": region[1], "idle_ns": 1_000})
    assert isinstance(m.policy, LendingPolicy) and len(m.policy.chunks) == 1
    vc4 = m.add_device("vc4", dma_mask=dma_bit_mask(30))
    frame = GIB + 256 * MIB  # above the device's reach: every map bounces
    data = bytes(range(256)) * (SEG // 256)
    dmas = []
    for i in range(PER_CHUNK + 4):
        m.memory.write(frame + i * SEG, data)
        dmas.append(vc4.map_single(frame + i * SEG, SEG, DmaDirection.TO_DEVICE, may_sleep=True))
    assert len(m.policy.chunks) == 2 and all(d + SEG <= GIB for d in dmas)
    assert vc4.dma_read(dmas[-1], 64) == data[:64]
    for d in dmas:
        vc4.unmap(d, SEG, DmaDirection.TO_DEVICE)
    clock.now = 1_000
    assert m.run_deferred() == 1 and len(m.policy.chunks) == 1
    m.pages.check()
