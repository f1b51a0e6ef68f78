"""RfcV1Policy: per-mapping buffers first, the fixed pool second (spec §7.3)."""

from __future__ import annotations

import inspect
import random
import threading
from dataclasses import dataclass
from typing import Any

import pytest

from swiotlb.core import IoTlbMem, IoTlbPool, MapFailure, MapRefused, ReleaseError, SlotMapping
from swiotlb.core.constants import IO_TLB_SHIFT
from swiotlb.dma import Machine
from swiotlb.dma.errors import DmaMappingError
from swiotlb.dma.types import DmaAttrs, DmaDirection
from swiotlb.memory import (
    GFP_KERNEL,
    GFP_NOWAIT,
    CmaRegion,
    Gfp,
    MemoryEncryption,
    PageAllocator,
    ZoneLayout,
    may_sleep,
)
from swiotlb.policies import POLICIES, make_policy
from swiotlb.policies.base import BufferMapping
from swiotlb.policies.env import PolicyEnv
from swiotlb.policies.rfc_v1 import OWNER, DynamicBuffer, RfcV1Policy

GIB = 1 << 30
MIB = 1 << 20
U64 = (1 << 64) - 1
POOL = 0x0080_0000  # 8 MiB: the fixed pool, inside ZONE_DMA on x86
NSLABS = 1024  # 2 MiB of slots


@dataclass(frozen=True)
class Dev:
    name: str = "vc4"
    min_align_mask: int = 0
    seg_boundary_mask: int = 0xFFFF_FFFF
    dma_limit: int = U64


def x86(ram: int = 6 * GIB, *, coco: bool = False, reserved: tuple[tuple[int, int], ...] = (),
        **kw: bool) -> RfcV1Policy:
    pages = PageAllocator(ZoneLayout.x86_64(ram), reserved=[(POOL, NSLABS << IO_TLB_SHIFT), *reserved])
    env = PolicyEnv(pages, MemoryEncryption(coco, page_size=4096))
    return RfcV1Policy(IoTlbMem([IoTlbPool(POOL, NSLABS, 1)], "v6.12", force_bounce=coco), env, **kw)


def rpi4() -> RfcV1Policy:
    """8 GiB Raspberry Pi 4: 256 MiB CMA and a 64 MiB fixed pool, both below 1 GiB."""
    pool = 0x3800_0000
    pages = PageAllocator(ZoneLayout.rpi4(8 * GIB), cma=[CmaRegion(0x2800_0000, 256 * MIB)],
                          reserved=[(pool, 64 * MIB)])
    return RfcV1Policy(IoTlbMem([IoTlbPool(pool, 32768, 4)], "v6.6"), PolicyEnv(pages))


def dyn(m: SlotMapping | BufferMapping | MapRefused) -> DynamicBuffer:
    assert isinstance(m, BufferMapping) and isinstance(m.pool, DynamicBuffer), m
    return m.pool


def test_registered_by_name_and_built_by_make_policy() -> None:
    policy = x86()
    assert POLICIES["rfc-v1"] is RfcV1Policy and POLICIES["static"].name == "static"
    made = make_policy("rfc-v1", IoTlbMem([IoTlbPool(POOL, 64, 1)]), policy.env, restricted=True)
    assert isinstance(made, RfcV1Policy) and made.restricted


def test_eligible_maps_get_their_own_buffer_below_the_device_limit() -> None:
    policy = x86()
    for limit in (U64, (1 << 32) - 1, (1 << 24) - 1):
        dev = Dev("dev", dma_limit=limit)
        m = policy.map(dev, 0x1_2345_6000, 3 * 4096 + 5)
        buf = dyn(m)
        assert isinstance(m, BufferMapping)
        assert m.tlb_addr == buf.phys and buf.phys % 4096 == 0
        assert buf.nbytes == 4 * 4096 and buf.mapping_size == 3 * 4096 + 5 and buf.orig_addr == 0x1_2345_6000
        assert buf.phys + buf.nbytes - 1 <= limit
        assert policy.find_pool(dev, buf.phys + buf.nbytes - 1) is buf
        assert policy.is_bounce_buffer(dev, buf.phys + 4096)
        assert not policy.is_bounce_buffer(dev, buf.phys + buf.nbytes)
    assert policy.mem.total_used == 0  # no slot was used
    assert policy.dyn_counters()["dyn_created"] == 3 and policy.fallbacks.total() == 0
    assert policy.env.pages.bytes_by_owner()[OWNER] >= 3 * 4 * 4096


@pytest.mark.parametrize(("dev", "size", "align", "reason"), [
    (Dev(), 4095, 0, "small"),
    (Dev(min_align_mask=0xFFF), 8192, 0, "min_align"),
    (Dev(), 8192, 0xFFF, "alloc_align"),
])
def test_ineligible_maps_use_the_fixed_pool(dev: Dev, size: int, align: int, reason: str) -> None:
    policy = x86()
    m = policy.map(dev, 0x1_0000_0000, size, align)
    assert isinstance(m, SlotMapping) and m.pool is policy.mem.pools[0]
    assert policy.fallbacks == {reason: 1} and policy.created == 0
    assert policy.release(dev, m.tlb_addr, m.pool) == m.nslots and policy.mem.total_used == 0


def test_disabled_or_restricted_never_allocates() -> None:
    for policy, reason in ((x86(allow_dyn=False), "disabled"), (x86(restricted=True), "restricted")):
        assert isinstance(policy.map(Dev(), 0x1_0000_0000, 65536, may_sleep=True), SlotMapping)
        assert policy.fallbacks == {reason: 1} and policy.env.stats.pages_allocated == 0


def test_page_allocator_failure_falls_back_to_the_fixed_pool() -> None:
    # Everything below 16 MiB is taken (the fixed pool lives there), so a 24-bit device gets no pages.
    policy = x86(reserved=((0, POOL), (POOL + (NSLABS << IO_TLB_SHIFT), 16 * MIB - POOL - (2 * MIB))))
    dev = Dev("isa", dma_limit=(1 << 24) - 1)
    m = policy.map(dev, 0x1_0000_0000, 8192, may_sleep=True)
    assert isinstance(m, SlotMapping) and m.tlb_addr + 8191 <= dev.dma_limit
    assert policy.fallbacks == {"alloc_failed": 1} and policy.env.stats.pages_failed == 1
    assert policy.dyn_counters()["fallback_alloc_failed"] == 1


def test_an_atomic_caller_never_sleeps_and_big_atomic_maps_fall_back() -> None:
    policy = x86()
    dev = Dev()
    pages = policy.env.pages
    seen: list[int] = []
    real = pages.alloc_pages

    def spy(order: int, gfp: int = 0, **kw: Any) -> int | None:
        seen.append(int(gfp))
        return real(order, gfp, **kw)

    pages.alloc_pages = spy  # type: ignore[method-assign]
    assert dyn(policy.map(dev, 0x1_0000_0000, 64 << 10)).nbytes == 64 << 10
    assert dyn(policy.map(dev, 0x1_0000_0000, 64 << 10, may_sleep=True)).nbytes == 64 << 10
    assert seen == [int(GFP_NOWAIT | Gfp.NOWARN), int(GFP_KERNEL | Gfp.NOWARN)]
    assert not may_sleep(seen[0]) and may_sleep(seen[1])
    big = 4 * MIB + 4096  # above MAX_PAGE_ORDER: only CMA could serve it, and CMA sleeps
    r = policy.map(dev, 0x1_0000_0000, big)
    assert isinstance(r, MapRefused) and r.cause is MapFailure.TOO_LARGE
    assert policy.fallbacks == {"alloc_failed": 1} and policy.failures == {"too_large": 1}
    assert pages.stats.contig_allocations == 0 and len(seen) == 2
    assert dyn(policy.map(dev, 0x1_0000_0000, big, may_sleep=True)).nbytes == big  # a sleeper gets it


def test_rpi4_vc4_buffers_come_from_cma_below_1gib_for_sleeping_callers() -> None:
    policy = rpi4()
    vc4 = Dev("vc4-drm gpu", dma_limit=(1 << 30) - 1)
    bufs = []
    for size in (8_294_400, 35_389_440):
        buf = dyn(policy.map(vc4, 0x1_0000_0000, size, may_sleep=True))
        assert buf.phys + buf.nbytes - 1 < GIB and policy.env.pages.in_cma(buf.phys)
        assert buf.nbytes == -(-size // 4096) * 4096
        bufs.append(buf)
    assert policy.dyn_counters()["dyn_bytes"] == sum(b.nbytes for b in bufs)
    for size in (8_294_400, 35_389_440):  # the same maps in atomic context
        r = policy.map(vc4, 0x1_0000_0000, size)
        assert isinstance(r, MapRefused) and r.cause is MapFailure.TOO_LARGE
        assert r.message.startswith(f"swiotlb buffer is full (sz: {size} bytes), total 32768 (slots)")
    assert policy.fallbacks == {"alloc_failed": 2} and policy.failures == {"too_large": 2}
    for buf in bufs:
        assert policy.release(vc4, buf.phys, buf) == 0
    assert policy.buffers() == [] and policy.dyn_counters()["dyn_bytes_peak"] == sum(b.nbytes for b in bufs)
    assert OWNER not in policy.env.pages.bytes_by_owner()


def test_alloc_size_of_the_older_signature_sizes_the_buffer() -> None:
    policy = rpi4()  # v6.6 rules: swiotlb_tbl_map_single still takes alloc_size
    dev = Dev()
    buf = dyn(policy.map(dev, 0x1_0000_0000, 5000, alloc_size=9000))
    assert (buf.nbytes, buf.mapping_size) == (12288, 9000)
    span = policy.bounce_target(dev, buf.phys + 8000, 2000, buf)
    assert span is not None and span.nbytes == 1000 and span.warning is not None
    r = policy.map(dev, 0x1_0000_0000, 9000, alloc_size=5000)
    assert isinstance(r, MapRefused) and r.cause is MapFailure.INVALID_SIZES
    assert policy.fallbacks == {"invalid_sizes": 1} and policy.failures == {"invalid_sizes": 1}


def test_coco_each_buffer_costs_one_decrypt_and_one_encrypt() -> None:
    policy = x86(4 * GIB, coco=True)
    enc = policy.env.encryption
    dev = Dev("virtio")
    d0, e0 = enc.stats.decrypt_ops, enc.stats.encrypt_ops
    bufs = [dyn(policy.map(dev, 0x1_0000_0000 + i * MIB, 16384 * (i + 1), may_sleep=True)) for i in range(5)]
    assert all(enc.is_shared(b.phys, b.nbytes // 4096) for b in bufs)
    assert enc.stats.decrypt_ops - d0 == 5 == policy.decrypt_ops
    for b in bufs:
        policy.release(dev, b.phys, b, may_sleep=True)
    assert enc.stats.encrypt_ops - e0 == 5 == policy.encrypt_ops
    assert not any(enc.is_shared(b.phys) for b in bufs)


def test_coco_atomic_release_is_deferred_to_process_context() -> None:
    policy = x86(4 * GIB, coco=True)
    enc = policy.env.encryption
    dev = Dev("virtio")
    buf = dyn(policy.map(dev, 0x1_0000_0000, 65536, may_sleep=True))
    e0 = enc.stats.encrypt_ops
    assert policy.release(dev, buf.phys, buf) == 0  # atomic: must not encrypt here
    assert enc.stats.encrypt_ops == e0 and enc.is_shared(buf.phys, 16)
    assert not policy.is_bounce_buffer(dev, buf.phys)
    assert policy.dyn_counters()["dyn_deferred_pending"] == 1 and policy.bytes_held == 65536
    assert policy.next_deadline() == policy.env.now()  # the free is due at once
    reserved, in_use = policy.footprint()
    assert reserved == (policy.mem.nslabs << 11) + 65536 and in_use == 0  # held until freed
    assert policy.run_deferred() == 1 and policy.run_deferred() == 0
    assert policy.next_deadline() is None
    assert enc.stats.encrypt_ops == e0 + 1 and not enc.is_shared(buf.phys)
    assert policy.bytes_held == 0 and OWNER not in policy.env.pages.bytes_by_owner()


def test_coco_atomic_maps_come_from_the_atomic_pool() -> None:
    policy = x86(4 * GIB, coco=True)
    env = policy.env
    assert env.atomic_pool is not None and env.atomic_pool.size == 512 << 10
    d0 = env.encryption.stats.decrypt_ops
    dev = Dev("virtio")
    buf = dyn(policy.map(dev, 0x1_0000_0000, 65536))
    assert env.atomic_pool.owns(buf.phys) and env.stats.atomic_pool_allocs == 1
    assert env.encryption.stats.decrypt_ops == d0 and policy.decrypt_ops == 0
    r = policy.map(dev, 0x1_0000_0000, 1 * MIB)  # larger than the atomic pool: fixed pool, too large
    assert isinstance(r, MapRefused) and policy.fallbacks == {"alloc_failed": 1}
    policy.release(dev, buf.phys)  # back to the atomic pool at once, nothing deferred
    assert policy.run_deferred() == 0 and policy.encrypt_ops == 0
    assert env.atomic_pool.alloc(512 << 10) is not None  # the whole pool is free again


def test_bounce_target_maps_every_byte_to_its_original() -> None:
    policy = x86()
    dev = Dev()
    orig, size = 0x1_0000_0123, 2 * 4096 + 77
    m = policy.map(dev, orig, size)
    buf = dyn(m)
    assert isinstance(m, BufferMapping)
    for k in range(size):
        for pool in (buf, None):
            span = policy.bounce_target(dev, m.tlb_addr + k, 1, pool)
            assert span is not None and (span.orig_addr, span.tlb_addr, span.nbytes) == (orig + k, m.tlb_addr + k, 1)
    whole = policy.bounce_target(dev, m.tlb_addr, size, buf)
    assert whole is not None and whole.nbytes == size and whole.warning is None
    over = policy.bounce_target(dev, m.tlb_addr + 100, size, buf)
    assert over is not None and over.nbytes == size - 100 and over.warning is not None
    assert "Allocation size: %d. Mapping size: %d." % (size - 100, size) in over.warning
    with pytest.raises(ValueError, match="outside"):
        policy.bounce_target(dev, m.tlb_addr + buf.nbytes, 1, buf)
    fixed = policy.map(dev, 0x2_0000_0000, 100)
    assert isinstance(fixed, SlotMapping)
    span = policy.bounce_target(dev, fixed.tlb_addr + 10, 5)
    assert span is not None and span.orig_addr == 0x2_0000_0000 + 10


def test_release_of_unknown_or_stale_addresses_raises() -> None:
    policy = x86()
    dev = Dev("nvme0")
    with pytest.raises(ReleaseError, match=r"nvme0: release of 0x123000"):
        policy.release(dev, 0x12_3000)
    buf = dyn(policy.map(dev, 0x1_0000_0000, 8192))
    with pytest.raises(ReleaseError, match="not the start"):
        policy.release(dev, buf.phys + 4096)
    assert policy.release(dev, buf.phys) == 0
    with pytest.raises(ReleaseError, match=f"{buf.phys:#x}"):
        policy.release(dev, buf.phys, buf)  # double release with the stale handle
    with pytest.raises(ReleaseError):
        policy.release(dev, buf.phys)


def test_fixed_pool_overlap_is_a_setup_error() -> None:
    pages = PageAllocator(ZoneLayout.x86_64(2 * GIB))  # the pool's memory was not reserved
    policy = RfcV1Policy(IoTlbMem([IoTlbPool(0, 8192, 1)]), PolicyEnv(pages))  # all of ZONE_DMA
    with pytest.raises(ValueError, match="inside the fixed pool"):
        policy.map(Dev("isa", dma_limit=(1 << 24) - 1), 0x1000_0000, 8192)
    assert pages.bytes_by_owner().get(OWNER, 0) == 0 and policy.created == 0 and policy.buffers() == []


def test_concurrent_maps_and_releases_keep_the_books() -> None:
    for coco in (False, True):
        policy = x86(4 * GIB, coco=coco)
        devs = [Dev("a"), Dev("b", min_align_mask=0xFFF), Dev("c", dma_limit=(1 << 32) - 1)]
        errors: list[str] = []
        barrier = threading.Barrier(6)

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            live: list[tuple[Dev, SlotMapping | BufferMapping]] = []
            barrier.wait()
            try:
                for i in range(300):
                    dev = rng.choice(devs)
                    m = policy.map(dev, 0x1_0000_0000 + seed * 0x100_0000 + i * 0x1000,
                                   rng.choice((512, 4096, 20000, 65536)), may_sleep=rng.random() < 0.5, cpu=seed)
                    if isinstance(m, MapRefused):
                        continue
                    if isinstance(m.pool, DynamicBuffer) and policy.find_pool(dev, m.tlb_addr) is not m.pool:
                        errors.append(f"lookup lost {m.pool!r}")
                    live.append((dev, m))
                    if len(live) > 8:
                        dev, old = live.pop(rng.randrange(len(live)))
                        policy.release(dev, old.tlb_addr, old.pool, may_sleep=rng.random() < 0.5)
                for dev, old in live:
                    policy.release(dev, old.tlb_addr, old.pool)
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(repr(exc))

        threads = [threading.Thread(target=worker, args=(s,)) for s in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        policy.run_deferred()
        c = policy.dyn_counters()
        assert errors == []
        assert c["dyn_created"] == c["dyn_freed"] > 100 and c["dyn_bytes"] == 0 and c["dyn_live"] == 0
        assert policy.fallbacks["small"] + policy.fallbacks["min_align"] > 100
        assert policy.mem.total_used == 0 and policy.mem.check_invariants() == []
        assert OWNER not in policy.env.pages.bytes_by_owner()
        if coco:
            assert c["decrypt_ops"] == c["encrypt_ops"] > 0 and c["dyn_deferred_frees"] > 0
            pool = policy.env.atomic_pool
            assert pool is not None
            assert policy.env.encryption.shared_bytes == pool.size  # only the atomic pool stays shared


@pytest.mark.skipif("policy" not in inspect.signature(Machine).parameters, reason="Machine cannot take a policy yet")
def test_end_to_end_through_the_dma_layer_on_an_rpi4() -> None:
    machine = Machine("8G", arch="arm64", policy="rfc-v1", cmdline="swiotlb=force",
                      cma=[(0x2000_0000, 128 * MIB)])
    policy = machine.policy
    assert isinstance(policy, RfcV1Policy)
    vc4 = machine.add_device("vc4", dma_mask=(1 << 30) - 1)
    size = 8_294_400
    buf = machine.alloc(size)
    payload = bytes(random.Random(1).randrange(256) for _ in range(4096)) * (size // 4096)
    buf.write(payload)
    dma = vc4.map_single(buf, size, DmaDirection.BIDIRECTIONAL, attrs=int(DmaAttrs.MAY_SLEEP))
    assert dma != buf.phys_addr and dma + size - 1 <= vc4.dma_limit
    assert policy.find_pool(vc4, dma) is policy.buffers()[0]
    assert vc4.dma_read(dma, size) == payload  # copied in at map time
    vc4.dma_write(dma + 5000, b"device")
    vc4.sync_for_cpu(dma + 4096, 4096, DmaDirection.BIDIRECTIONAL)  # a partial sync
    assert buf.read(5000, 6) == b"device"
    vc4.unmap(dma, size, DmaDirection.BIDIRECTIONAL)
    assert policy.dyn_counters()["dyn_freed"] == 1 and policy.buffers() == []
    with pytest.raises(DmaMappingError, match="swiotlb buffer is full") as exc:
        vc4.map_single(buf, size, DmaDirection.TO_DEVICE)  # atomic: no CMA, and 8 MiB exceeds a segment
    assert exc.value.cause == "too_large"
