"""dma-direct over swiotlb: the bounce decision, the copies of each call, sg, messages, events."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.conftest import pure_only

from swiotlb import DmaAttrs, DmaDirection, DmaMappingError, Machine, dma_bit_mask
from swiotlb.core.constants import DMA_MAPPING_ERROR
from swiotlb.dma.events import (
    DmaMapPage,
    DmaMapSg,
    DmaSyncSingleForCpu,
    DmaUnmapPage,
    DmaUnmapSg,
    SwiotlbBounced,
)
from swiotlb.dma.ratelimit import RateLimit
from swiotlb.dma.types import SIZE_MAX, format_attrs

TO = DmaDirection.TO_DEVICE
FROM = DmaDirection.FROM_DEVICE
BIDI = DmaDirection.BIDIRECTIONAL
GIB = 1 << 30


def pattern(n: int, seed: int = 1) -> bytes:
    return bytes((i * 31 + seed) & 0xFF for i in range(n))


def forced(**kw: Any) -> Machine:
    kw.setdefault("ram", "2G")
    kw.setdefault("cmdline", "swiotlb=force")
    return Machine(**kw)


def record(m: Machine) -> list[Any]:
    events: list[Any] = []
    m.events.subscribe(events.append)
    return events


# -- whether to bounce ------------------------------------------------------------------------

def test_an_addressable_buffer_without_force_is_mapped_directly() -> None:
    m = Machine("8G")  # > 4 GiB: a pool exists, but nothing is forced
    events = record(m)
    dev = m.add_device("nic")
    buf = m.alloc(4096)
    dma = dev.map_single(buf, 4096, TO)
    assert dma == buf.phys_addr
    assert m.stats["io_tlb_used"] == 0
    assert [e.name for e in events] == ["dma_map_page"]
    dev.unmap(dma, 4096, TO)


def test_an_unreachable_buffer_bounces_without_force() -> None:
    m = Machine("8G")
    events = record(m)
    dev = m.add_device("old-nic", dma_mask=dma_bit_mask(32))
    high = 6 * GIB + 0x300
    m.memory.write(high, pattern(3000))
    dma = dev.map_single(high, 3000, TO)
    assert m.pool is not None and m.pool.start <= dma < m.pool.end
    assert dev.dma_read(dma, 3000) == pattern(3000)
    assert isinstance(events[0], SwiotlbBounced) and events[0].force is False
    assert events[0].dev_addr == high and events[0].dma_mask == dma_bit_mask(32)


def test_bus_dma_limit_counts_like_the_mask() -> None:
    m = Machine("8G")
    dev = m.add_device("bridge", bus_dma_limit=(1 << 32) - 1)
    dma = dev.map_single(5 * GIB, 100, TO)
    assert dma != 5 * GIB and dma < 1 << 32


def test_an_unreachable_buffer_without_a_pool_fails_as_no_pool(caplog: pytest.LogCaptureFixture) -> None:
    m = Machine("2G")  # x86 with 2 GiB: no pool
    assert m.pool is None and m.stats == {}
    events = record(m)
    dev = m.add_device("isa", dma_mask=dma_bit_mask(24))
    with caplog.at_level(logging.WARNING, logger="swiotlb"):
        with pytest.raises(DmaMappingError) as info:
            dev.map_single(0x0200_0000, 512, FROM)
    assert info.value.cause == "no_pool" and info.value.device == "isa" and info.value.size == 512
    assert "DMA addr 0x2000000+512 overflow (mask ffffff, bus limit 0)." in caplog.text
    assert [(e.name, e.dma_addr) for e in events] == [("dma_map_page", DMA_MAPPING_ERROR)]


def test_a_bounce_buffer_beyond_the_device_is_released_and_refused(caplog: pytest.LogCaptureFixture) -> None:
    m = forced(ram="8G", reserved=[(1 << 20, GIB)])  # the pool lands above 1 GiB
    assert m.pool is not None and m.pool.start > GIB
    dev = m.add_device("dev30", dma_mask=dma_bit_mask(30))
    with caplog.at_level(logging.WARNING, logger="swiotlb"):
        with pytest.raises(DmaMappingError) as info:
            dev.map_single(0x10_0000 + GIB + 0x100_0000 * 100, 4096, TO)
    assert info.value.cause == "unaddressable"
    assert "swiotlb addr" in caplog.text and "overflow (mask 3fffffff, bus limit 0)" in caplog.text
    assert m.stats["io_tlb_used"] == 0 and m.stats["io_tlb_used_hiwater"] == 2
    assert m.mem.check_invariants() == []


# -- copies at map time -----------------------------------------------------------------------

@pytest.mark.parametrize(
    "profile,dir,attrs,copied",
    [
        ("v6.12", FROM, 0, True),  # >= 5.18: always
        ("v6.12", TO, DmaAttrs.SKIP_CPU_SYNC, True),
        ("v6.6", FROM, DmaAttrs.SKIP_CPU_SYNC, True),
        ("v5.15", TO, 0, True),
        ("v5.15", BIDI, 0, True),
        ("v5.15", FROM, 0, False),
        ("v5.15", TO, DmaAttrs.SKIP_CPU_SYNC, False),
    ],
)
def test_map_time_copy_follows_the_profile(profile: str, dir: DmaDirection, attrs: int, copied: bool) -> None:
    m = forced(profile=profile)
    dev = m.add_device("dev")
    buf = m.alloc(6000)
    buf.write(pattern(6000))
    dma = dev.map_single(buf, 6000, dir, attrs=attrs)
    assert dev.dma_read(dma, 6000) == (pattern(6000) if copied else bytes(6000))


# -- unmap and sync copies ----------------------------------------------------------------------

def count_bounces(m: Machine) -> list[int]:
    calls: list[int] = []
    original = m.policy.bounce_target

    def counting(dev, tlb, size, pool=None):  # type: ignore[no-untyped-def]
        calls.append(size)
        return original(dev, tlb, size, pool)

    m.policy.bounce_target = counting  # type: ignore[method-assign]
    return calls


@pytest.mark.parametrize("dir", [FROM, BIDI])
def test_unmap_copies_back_exactly_once(dir: DmaDirection) -> None:
    m = forced()
    dev = m.add_device("disk")
    buf = m.alloc(8192)
    dma = dev.map_single(buf, 8192, dir)
    dev.dma_write(dma, pattern(8192, 7))
    assert buf.read() == bytes(8192)  # nothing reaches the CPU before sync/unmap
    calls = count_bounces(m)
    dev.unmap(dma, 8192, dir)
    assert calls == [8192]
    assert buf.read() == pattern(8192, 7)


def test_unmap_with_skip_cpu_sync_or_to_device_copies_nothing() -> None:
    m = forced()
    dev = m.add_device("disk")
    a, b = m.alloc(4096), m.alloc(4096)
    a.write(pattern(4096, 1))
    b.write(pattern(4096, 2))
    da = dev.map_single(a, 4096, FROM)
    db = dev.map_single(b, 4096, TO)
    dev.dma_write(da, bytes(4096))
    dev.dma_write(db, bytes(4096))
    dev.unmap(da, 4096, FROM, attrs=DmaAttrs.SKIP_CPU_SYNC)
    dev.unmap(db, 4096, TO)
    assert a.read() == pattern(4096, 1) and b.read() == pattern(4096, 2)
    assert m.stats["io_tlb_used"] == 0


def test_partial_syncs_move_only_their_range() -> None:
    m = forced()
    dev = m.add_device("nvme", min_align_mask=0xFFF)
    buf = m.alloc(3 * 4096)
    dma = dev.map_single(buf.phys_addr + 0x200, 10000, BIDI)
    dev.dma_write(dma, pattern(10000, 9))
    dev.sync_for_cpu(dma + 5000, 300, BIDI)
    got = buf.read(0x200, 10000)
    assert got[5000:5300] == pattern(10000, 9)[5000:5300]
    assert got[:5000] == bytes(5000) and got[5300:] == bytes(4700)
    buf.write(b"\xee" * 100, 0x200 + 7000)
    dev.sync_for_device(dma + 7000, 50, BIDI)
    seen = dev.dma_read(dma + 6990, 120)
    assert seen == pattern(10000, 9)[6990:7000] + b"\xee" * 50 + pattern(10000, 9)[7050:7110]


def test_no_op_syncs_follow_the_direction() -> None:
    m = forced()
    dev = m.add_device("dev")
    a, b = m.alloc(4096), m.alloc(4096)
    da = dev.map_single(a, 4096, FROM)
    db = dev.map_single(b, 4096, TO)
    a.write(b"cpu" * 10)
    dev.sync_for_device(da, 4096, FROM)  # FROM_DEVICE for the device: no copy
    assert dev.dma_read(da, 30) == bytes(30)
    dev.dma_write(db, b"dev" * 10)
    dev.sync_for_cpu(db, 4096, TO)  # TO_DEVICE for the CPU: no copy
    assert b.read(0, 30) == bytes(30)


def test_v6_6_refuses_a_partial_sync_early_in_a_later_slot(caplog: pytest.LogCaptureFixture) -> None:
    """Spec §4.1: <= 6.9 rejects syncs starting inside the first orig_off bytes of a later slot."""
    results = {}
    for profile in ("v6.6", "v6.12"):
        m = forced(profile=profile)
        dev = m.add_device("nvme", min_align_mask=0xFFF)
        buf = m.alloc(3 * 4096)
        dma = dev.map_single(buf.phys_addr + 0x300, 6000, FROM)
        dev.dma_write(dma, pattern(6000, 4))
        at = (dma | 0x7FF) + 1 + 0x100  # 0x100 into the next slot, below orig offset 0x300
        with caplog.at_level(logging.WARNING, logger="swiotlb"):
            caplog.clear()
            dev.sync_for_cpu(at, 64, FROM)
            dev.sync_for_cpu(at, 64, FROM)
        k = at - dma
        results[profile] = (buf.read(0x300 + k, 64) == pattern(6000, 4)[k : k + 64], caplog.text)
    copied, text = results["v6.6"]
    assert not copied
    assert text.count("Access before mapping start detected. orig offset 768, requested offset 256.") == 1
    copied, text = results["v6.12"]
    assert copied and "Access before" not in text


# -- sizes and limits -------------------------------------------------------------------------

def test_more_than_a_segment_is_too_large_and_the_limit_is_reported() -> None:
    m = forced()
    dev = m.add_device("dev")
    nvme = m.add_device("nvme", min_align_mask=0xFFF)
    assert dev.max_mapping_size == 262144 and nvme.max_mapping_size == 258048
    dev.unmap(dev.map_single(0x4000_0000, 262144, TO), 262144, TO)
    with pytest.raises(DmaMappingError) as info:
        dev.map_single(0x4000_0000, 262145, TO)
    assert info.value.cause == "too_large"
    with pytest.raises(DmaMappingError) as info:
        nvme.map_single(0x4000_0400, 261121, TO)  # the kept 0x400 offset makes it 129 slots
    assert info.value.cause == "too_large"


def test_max_mapping_size_is_unbounded_when_nothing_bounces() -> None:
    m = Machine("8G")
    assert m.add_device("fast").max_mapping_size == SIZE_MAX
    assert m.add_device("dma32", dma_mask=dma_bit_mask(32)).max_mapping_size == 262144
    assert Machine("2G").add_device("dma32", dma_mask=dma_bit_mask(32)).max_mapping_size == SIZE_MAX


def test_alloc_size_is_searched_on_v6_6_and_rejected_on_v6_12() -> None:
    m = forced(profile="v6.6")
    dev = m.add_device("iommu-bounce")
    dma = dev.map_page(0x4000_0000, 0, 1000, TO, alloc_size=16384)
    assert m.stats["io_tlb_used"] == 8
    dev.unmap(dma, 1000, TO)
    assert m.stats["io_tlb_used"] == 0
    new = forced().add_device("x")
    with pytest.raises(ValueError, match="no separate alloc_size"):
        new.map_page(0x4000_0000, 0, 1000, TO, alloc_size=4096)


def test_alloc_align_mask_aligns_the_bounce_buffer() -> None:
    m = forced()
    dev = m.add_device("dev")
    dev.map_single(0x4000_0000, 100, TO)
    dma = dev.map_page(0x4000_1000, 0x10, 100, TO, alloc_align_mask=0xFFFF)
    assert dma & 0xFFFF == 0


def test_the_cpu_picks_the_area() -> None:
    m = forced(cpus=4)
    assert m.pool is not None and m.pool.nareas == 4
    dev = m.add_device("dev")
    area = m.pool.area_nslabs * 2048
    for cpu in range(4):
        dma = dev.map_single(0x4000_0000 + cpu * 4096, 4096, TO, cpu=cpu)
        assert (dma - m.pool.start) // area == cpu


# -- scatter-gather ---------------------------------------------------------------------------

def test_map_sg_maps_each_entry_and_unmap_sg_copies_back() -> None:
    m = forced()
    events = record(m)
    dev = m.add_device("usb")
    bufs = [m.alloc(n) for n in (0x400, 0x1000, 0xA00)]
    entries = [(bufs[0].phys_addr + 0x20, 0x300), (bufs[1], 0x1000), (bufs[2].phys_addr, 0xA00)]
    segs = dev.map_sg(entries, FROM, attrs=DmaAttrs.NO_WARN, cpu=0)
    assert [s.length for s in segs] == [0x300, 0x1000, 0xA00]
    assert [s.phys_addr for s in segs] == [bufs[0].phys_addr + 0x20, bufs[1].phys_addr, bufs[2].phys_addr]
    for i, s in enumerate(segs):
        dev.dma_write(s.dma_addr, pattern(s.length, i))
    dev.unmap_sg(segs, FROM)
    assert bufs[0].read(0x20, 0x300) == pattern(0x300, 0)
    assert bufs[1].read() == pattern(0x1000, 1)
    assert bufs[2].read() == pattern(0xA00, 2)
    assert [e.name for e in events] == ["swiotlb_bounced"] * 3 + ["dma_map_sg", "dma_unmap_sg"]
    sg = events[3]
    assert isinstance(sg, DmaMapSg) and sg.nents == sg.ents == 3
    assert sg.dma_addrs == tuple(s.dma_addr for s in segs) and sg.sizes == (0x300, 0x1000, 0xA00)
    assert isinstance(events[4], DmaUnmapSg) and events[4].phys_addrs == sg.phys_addrs
    assert m.stats["io_tlb_used"] == 0


def test_a_failing_sg_entry_undoes_the_others_without_events(caplog: pytest.LogCaptureFixture) -> None:
    m = forced(cmdline="swiotlb=512,force")  # 512 slots: four 256 KiB entries fit
    events = record(m)
    dev = m.add_device("nvme")
    entries = [(0x4000_0000 + i * 0x40000, 0x40000) for i in range(5)]
    with caplog.at_level(logging.WARNING, logger="swiotlb"):
        with pytest.raises(DmaMappingError, match=r"sg entry 4 of 5; 4 mapped entries undone") as info:
            dev.map_sg(entries, FROM)
    assert info.value.cause == "full"
    assert "nvme: swiotlb buffer is full (sz: 262144 bytes), total 512 (slots), used 512 (slots)" in caplog.text
    assert [e.name for e in events] == ["swiotlb_bounced"] * 5
    assert m.stats["io_tlb_used"] == 0 and m.stats["io_tlb_used_hiwater"] == 512
    assert dev.live_mappings() == []
    assert m.mem.check_invariants() == []


# -- messages ---------------------------------------------------------------------------------

def test_no_warn_silences_the_full_message(caplog: pytest.LogCaptureFixture) -> None:
    m = forced(cmdline="swiotlb=128,force")
    dev = m.add_device("dev")
    dev.map_single(0x4000_0000, 0x40000, TO)
    with caplog.at_level(logging.WARNING, logger="swiotlb"):
        with pytest.raises(DmaMappingError):
            dev.map_single(0x4000_0000, 4096, TO, attrs=DmaAttrs.NO_WARN)
        assert "buffer is full" not in caplog.text
        with pytest.raises(DmaMappingError):
            dev.map_single(0x4000_0000, 4096, TO)
        assert "dev: swiotlb buffer is full (sz: 4096 bytes), total 128 (slots), used 128 (slots)" in caplog.text


def test_ratelimit_allows_a_burst_per_interval_then_reports_the_suppressed(caplog: pytest.LogCaptureFixture) -> None:
    now = [0]
    rl = RateLimit("site", lambda: now[0], interval_ns=5_000_000_000, burst=10)
    logger = logging.getLogger("swiotlb.test")
    with caplog.at_level(logging.WARNING, logger="swiotlb.test"):
        assert [rl.allow(logger) for _ in range(13)] == [True] * 10 + [False] * 3
        now[0] = 5_000_000_000  # not yet past the interval
        assert not rl.allow(logger)
        now[0] = 5_000_000_001
        assert rl.allow(logger)
    assert caplog.messages == ["site: 4 callbacks suppressed"]


# -- events -----------------------------------------------------------------------------------

def test_event_text_matches_the_real_trace_lines() -> None:
    bounced = SwiotlbBounced("0000:00:02.0", dma_bit_mask(64), 0x11F960F8, 16, True)
    assert bounced.format() == "dev_name: 0000:00:02.0 dma_mask=ffffffffffffffff dev_addr=11f960f8 size=16 FORCE"
    mp = DmaMapPage("0000:00:02.0", TO, 0x6FA00000, 16, 0x11F960F8, 0)
    assert mp.format() == "0000:00:02.0 dir=TO_DEVICE dma_addr=6fa00000 size=16 phys_addr=11f960f8 attrs="
    up = DmaUnmapPage("0000:00:03.0", FROM, 0x6FA09000, 4096, 0)
    assert up.format() == "0000:00:03.0 dir=FROM_DEVICE dma_addr=6fa09000 size=4096 attrs="
    sg = DmaMapSg("0000:00:03.0", FROM, 3, 3, (0x70340000, 0x7034B000, 0x7037E000), (0xB000, 0x33000, 0x1000),
                  (0x125F5000, 0x12A00000, 0x12533000), DmaAttrs.NO_WARN)
    assert sg.format() == (
        "0000:00:03.0 dir=FROM_DEVICE nents=3/3 ents=3/3 dma_addrs={0x70340000,0x7034b000,0x7037e000} "
        "sizes={0xb000,0x33000,0x1000} phys_addrs={0x125f5000,0x12a00000,0x12533000} attrs=NO_WARN"
    )
    usg = DmaUnmapSg("0000:00:03.0", FROM, (0x79D2000, 0x759D000), 0)
    assert usg.format() == "0000:00:03.0 dir=FROM_DEVICE phys_addrs={0x79d2000,0x759d000} attrs="
    assert format_attrs(DmaAttrs.SKIP_CPU_SYNC | DmaAttrs.NO_WARN) == "SKIP_CPU_SYNC|NO_WARN"
    with pytest.raises(AttributeError):
        mp.size = 1  # type: ignore[misc]


def test_sync_and_unmap_events_carry_the_call() -> None:
    m = forced()
    events = record(m)
    dev = m.add_device("dev")
    dma = dev.map_single(0x4000_0000, 4096, FROM, cpu=0)
    dev.sync_for_cpu(dma + 100, 200, FROM, cpu=0)
    dev.unmap(dma, 4096, FROM, attrs=DmaAttrs.SKIP_CPU_SYNC)
    assert events[2] == DmaSyncSingleForCpu("dev", FROM, dma + 100, 200, 0)
    assert events[3] == DmaUnmapPage("dev", FROM, dma, 4096, DmaAttrs.SKIP_CPU_SYNC, 0)


def test_unsubscribe_and_a_failing_subscriber(caplog: pytest.LogCaptureFixture) -> None:
    m = forced()
    seen: list[str] = []

    def broken(event: Any) -> None:
        raise RuntimeError("boom")

    handle = m.events.subscribe(lambda e: seen.append(e.name))
    m.events.subscribe(broken)
    dev = m.add_device("dev")
    with caplog.at_level(logging.ERROR, logger="swiotlb.events"):
        dma = dev.map_single(0x4000_0000, 64, TO)
    assert "event subscriber" in caplog.text
    assert seen == ["swiotlb_bounced", "dma_map_page"]
    handle()
    dev.unmap(dma, 64, TO)
    assert seen == ["swiotlb_bounced", "dma_map_page"]
    assert dev.live_mappings() == []


def test_forced_bouncing_without_a_pool_fails_as_no_pool(caplog: pytest.LogCaptureFixture) -> None:
    """swiotlb=force, but the boot allocator had no 1 MiB block: force stays on, no slots exist."""
    m = forced(reserved=[(1 << 20, 2 * GIB - (1 << 20) - (512 << 10))])
    assert m.pool is None and m.mem.force_bounce and m.stats == {}
    dev = m.add_device("dev")
    with caplog.at_level(logging.WARNING, logger="swiotlb"):
        with pytest.raises(DmaMappingError) as info:
            dev.map_single(2 * GIB - 4096, 64, TO, attrs=DmaAttrs.NO_WARN)
    assert info.value.cause == "no_pool"
    assert "dev: Can not allocate SWIOTLB buffer earlier" in caplog.text  # NO_WARN does not silence it


@pure_only("swiotlb.policies.static", "the hook set on the instance is not what the compiled map calls")
def test_may_sleep_and_attrs_reach_the_policy_failure_hook() -> None:
    m = forced(cmdline="swiotlb=128,force")
    seen: list[tuple[bool, int, int]] = []
    original = m.policy.on_map_failure

    def hook(dev, orig, size, align, refused, *, cpu, may_sleep, attrs):  # type: ignore[no-untyped-def]
        seen.append((may_sleep, attrs, cpu))
        return original(dev, orig, size, align, refused, cpu=cpu, may_sleep=may_sleep, attrs=attrs)

    m.policy.on_map_failure = hook  # type: ignore[method-assign]
    dev = m.add_device("gpu")
    dev.map_single(0x4000_0000, 0x40000, TO)
    for kwargs in ({"attrs": DmaAttrs.MAY_SLEEP}, {"may_sleep": True}, {"attrs": DmaAttrs.NO_WARN}):
        with pytest.raises(DmaMappingError):
            dev.map_single(0x5000_0000, 4096, TO, **kwargs)  # type: ignore[arg-type]
    assert seen == [(True, DmaAttrs.MAY_SLEEP, 0), (True, 0, 0), (False, DmaAttrs.NO_WARN, 0)]
