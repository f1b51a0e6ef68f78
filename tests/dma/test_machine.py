"""End to end through the public facade: the scenarios a README would show, and threads."""

from __future__ import annotations

import logging
import random
import threading
from typing import Any

import pytest

from swiotlb import DmaAttrs, DmaDirection, DmaMappingError, Machine, dma_bit_mask
from swiotlb.dma import DmaMapPage, SwiotlbBounced, parse_size

TO = DmaDirection.TO_DEVICE
FROM = DmaDirection.FROM_DEVICE
BIDI = DmaDirection.BIDIRECTIONAL
GIB = 1 << 30


def pattern(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def test_boot_sizes_and_places_the_default_pool(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="swiotlb"):
        m = Machine("16G", cpus=4, cmdline="console=ttyS0 swiotlb=force")
    assert m.pool is not None
    assert (m.pool.nslabs, m.pool.nareas) == (32768, 4)
    assert m.pool.end <= 1 << 32 and m.pool.start >= 1 << 20
    assert m.mem.force_bounce
    assert m.stats == {"io_tlb_nslabs": 32768, "io_tlb_used": 0, "io_tlb_used_hiwater": 0}
    assert f"software IO TLB: mapped [mem {m.pool.start:#018x}-{m.pool.end:#018x}] (64MB)" in caplog.messages
    assert "area num 4." in caplog.text
    assert m.memory.resident_bytes == 0  # 16 GiB of guest RAM, nothing touched yet


@pytest.mark.parametrize(
    "ram,cmdline,enabled,force",
    [("2G", "", False, False), ("8G", "", True, False), ("2G", "swiotlb=force", True, True),
     ("8G", "swiotlb=noforce", False, False)],
)
def test_who_gets_a_pool(ram: str, cmdline: str, enabled: bool, force: bool) -> None:
    m = Machine(ram, cmdline=cmdline)
    assert (m.pool is not None, m.mem.force_bounce) == (enabled, force)


def test_a_coco_guest_bounces_everything_through_a_6_percent_pool(caplog: pytest.LogCaptureFixture) -> None:
    m = Machine("8G", coco=True)
    assert m.pool is not None and m.pool.nslabs == 262144  # 6 % of 8 GiB, rounded to 512 MiB
    dev = m.add_device("virtio")
    buf = m.alloc(4096)
    with caplog.at_level(logging.WARNING, logger="swiotlb"):
        dma = dev.map_single(buf, 4096, TO)
        dev.unmap(dma, 4096, TO)
        dev.unmap(dev.map_single(buf, 4096, TO), 4096, TO)
    assert m.pool.start <= dma < m.pool.end
    assert caplog.messages.count("Memory encryption is active and system is using DMA bounce buffers") == 1


def test_to_device_bytes_land_in_the_bounce_buffer() -> None:
    m = Machine("16G", cmdline="swiotlb=force")
    dev = m.add_device("0000:00:02.0")
    buf = m.alloc(8192)
    buf.write(pattern(8192))
    dma = dev.map_single(buf, 8192, TO)
    assert m.pool is not None and m.pool.start <= dma < m.pool.end and dma != buf.phys_addr
    assert m.memory.read(dma, 8192) == pattern(8192)
    assert dev.dma_read(dma, 8192) == pattern(8192)
    assert m.stats["io_tlb_used"] == 4
    dev.unmap(dma, 8192, TO)
    assert m.stats["io_tlb_used"] == 0 and m.stats["io_tlb_used_hiwater"] == 4


def test_from_device_writes_reach_the_cpu_at_sync_and_unmap() -> None:
    m = Machine("16G", cmdline="swiotlb=force")
    dev = m.add_device("0000:00:03.0")
    buf = m.alloc(8192)
    buf.write(b"\x11" * 8192)
    dma = dev.map_single(buf, 8192, FROM)
    dev.dma_write(dma, pattern(8192, 2))
    assert buf.read() == b"\x11" * 8192
    dev.sync_for_cpu(dma, 8192, FROM)
    assert buf.read() == pattern(8192, 2)
    dev.dma_write(dma + 4096, b"\x99" * 4096)
    dev.unmap(dma, 8192, FROM)
    assert buf.read() == pattern(8192, 2)[:4096] + b"\x99" * 4096


def test_a_partial_sync_in_the_middle_of_a_mapping() -> None:
    m = Machine("16G", cmdline="swiotlb=force")
    dev = m.add_device("dev")
    buf = m.alloc(16384)
    dma = dev.map_single(buf, 16384, FROM)
    dev.dma_write(dma, pattern(16384, 3))
    dev.sync_for_cpu(dma + 6000, 3000, FROM)
    got = buf.read()
    assert got[6000:9000] == pattern(16384, 3)[6000:9000]
    assert got[:6000] == bytes(6000) and got[9000:] == bytes(16384 - 9000)
    dev.unmap(dma, 16384, FROM, attrs=DmaAttrs.SKIP_CPU_SYNC)
    assert buf.read() == got


@pytest.mark.parametrize("offset", [0x0, 0x10, 0x200, 0x7FF, 0x800, 0xA00, 0xFFF])
def test_nvme_min_align_mask_keeps_the_low_12_bits(offset: int) -> None:
    m = Machine("16G", cmdline="swiotlb=force")
    nvme = m.add_device("nvme", min_align_mask=0xFFF)
    other = m.add_device("virtio")
    other.map_single(0x4000_0000, 100, TO)  # disturb the cursor
    buf = m.alloc(3 * 4096)
    buf.write(pattern(3 * 4096, 5))
    dma = nvme.map_single(buf.phys_addr + offset, 5000, BIDI)
    assert dma & 0xFFF == offset
    assert nvme.dma_read(dma, 5000) == pattern(3 * 4096, 5)[offset : offset + 5000]
    nvme.unmap(dma, 5000, BIDI)


def test_boot_pool_sits_at_the_top_of_low_memory() -> None:
    """memblock allocates top-down below 4 GiB, as the real captures show (pool near the top)."""
    m = Machine("8G")
    assert m.pool is not None and m.pool.end == 4 * GIB


def test_a_30_bit_device_on_8_gib_bounces_a_high_buffer_through_a_low_pool() -> None:
    m = Machine("8G", reserved=[(GIB, 3 * GIB)])  # low memory above 1 GiB is taken
    dev = m.add_device("dev30", dma_mask=dma_bit_mask(30))
    assert m.pool is not None and m.pool.end <= GIB
    high = 5 * GIB + 0x40
    m.memory.write(high, pattern(4000, 6))
    dma = dev.map_single(high, 4000, BIDI)
    assert dma + 4000 <= GIB
    assert dev.dma_read(dma, 4000) == pattern(4000, 6)
    low = m.alloc(4096, limit=GIB - 1)
    assert dev.map_single(low, 4096, TO) == low.phys_addr  # reachable: no bounce


def test_a_30_bit_device_fails_when_the_pool_is_beyond_its_reach() -> None:
    m = Machine("8G", reserved=[(1 << 20, GIB)])
    assert m.pool is not None and m.pool.start >= GIB
    dev = m.add_device("dev30", dma_mask=dma_bit_mask(30))
    with pytest.raises(DmaMappingError) as info:
        dev.map_single(3 * GIB, 4000, TO)
    assert info.value.cause == "unaddressable" and info.value.device == "dev30"
    assert m.stats["io_tlb_used"] == 0


def test_more_than_256_kib_fails_as_too_large() -> None:
    m = Machine("16G", cmdline="swiotlb=force")
    dev = m.add_device("dev")
    with pytest.raises(DmaMappingError) as info:
        dev.map_single(0x4000_0000, 256 * 1024 + 1, TO)
    assert (info.value.cause, info.value.size) == ("too_large", 256 * 1024 + 1)
    assert "swiotlb buffer is full (sz: 262145 bytes), total 32768 (slots), used 0 (slots)" in str(info.value)


def test_full_warnings_are_rate_limited_on_the_injected_clock(caplog: pytest.LogCaptureFixture) -> None:
    now = [0]
    m = Machine("2G", cmdline="swiotlb=128,force", clock=lambda: now[0])
    dev = m.add_device("0000:00:02.0")
    dev.map_single(0x4000_0000, 256 * 1024, FROM)
    with caplog.at_level(logging.WARNING, logger="swiotlb"):
        for i in range(15):
            now[0] = i * 100_000_000
            with pytest.raises(DmaMappingError):
                dev.map_single(0x5000_0000, 4096, FROM)
        with pytest.raises(DmaMappingError):
            dev.map_single(0x5000_0000, 4096, FROM, attrs=DmaAttrs.NO_WARN)  # neither printed nor counted
        now[0] = 6_000_000_000
        with pytest.raises(DmaMappingError):
            dev.map_single(0x5000_0000, 8192, FROM)
    full = "0000:00:02.0: swiotlb buffer is full (sz: 4096 bytes), total 128 (slots), used 128 (slots)"
    assert caplog.messages == [full] * 10 + [
        "swiotlb_tbl_map_single: 5 callbacks suppressed",
        "0000:00:02.0: swiotlb buffer is full (sz: 8192 bytes), total 128 (slots), used 128 (slots)",
    ]


def test_events_come_in_kernel_order() -> None:
    m = Machine("16G", cpus=2, cmdline="swiotlb=force")
    events: list[Any] = []
    m.events.subscribe(events.append)
    dev = m.add_device("0000:00:03.0")
    buf = m.alloc(4096)
    dma = dev.map_single(buf.phys_addr + 0x600, 512, TO, cpu=1)
    dev.unmap(dma, 512, TO, cpu=1)
    assert [e.name for e in events] == ["swiotlb_bounced", "dma_map_page", "dma_unmap_page"]
    bounced, mapped, unmapped = events
    assert bounced == SwiotlbBounced("0000:00:03.0", dma_bit_mask(64), buf.phys_addr + 0x600, 512, True, 1)
    assert mapped == DmaMapPage("0000:00:03.0", TO, dma, 512, buf.phys_addr + 0x600, 0, 1)
    assert unmapped.dma_addr == dma and unmapped.cpu == 1


def test_a_machine_without_a_pool_maps_directly() -> None:
    m = Machine("2G")
    dev = m.add_device("nic")
    buf = m.alloc(1000)
    assert dev.map_single(buf, 1000, FROM) == buf.phys_addr
    assert m.stats == {}
    assert "no pool" in repr(m)


def test_devices_are_named_once_and_buffers_come_back() -> None:
    m = Machine("2G")
    m.add_device("a")
    with pytest.raises(ValueError, match="already exists"):
        m.add_device("a")
    buf = m.alloc(4096)
    buf.free()
    assert m.alloc(4096).phys_addr == buf.phys_addr
    with pytest.raises(IndexError, match="outside it"):
        buf.write(b"xx", 4095)


def test_parse_size() -> None:
    assert parse_size("2G") == 2 * GIB
    assert parse_size("512M") == 512 << 20
    assert parse_size("16GiB") == 16 * GIB
    assert parse_size(4096) == parse_size("4096") == 4096
    with pytest.raises(ValueError, match="cannot read"):
        parse_size("two gigs")


@pytest.mark.parametrize(
    "cmdline,max_size,may_fail", [("swiotlb=force", 64 * 1024, False), ("swiotlb=1024,force", 252 * 1024, True)]
)
def test_eight_threads_map_sync_and_unmap_at_once(cmdline: str, max_size: int, may_fail: bool) -> None:
    """Each thread keeps up to eight mappings live on two shared devices; with the small pool
    (1024 slots over 8 areas, demand around 4000 slots) maps also fail as full concurrently."""
    m = Machine("16G", cpus=8, cmdline=cmdline)
    devs = [m.add_device("nvme", min_align_mask=0xFFF), m.add_device("virtio")]
    errors: list[BaseException] = []
    failures = [0] * 8
    start = threading.Barrier(8)
    region = max_size + 8192

    def finish(dev: Any, dma: int, size: int, dir: DmaDirection, buf: Any, off: int, data: bytes, cpu: int, seed: int) -> None:
        assert dev.dma_read(dma, size) == data
        if dir is TO:
            dev.unmap(dma, size, dir, cpu=cpu)
            assert buf.read(off, size) == data
            return
        reply = pattern(size, seed)
        dev.dma_write(dma, reply)
        half = size // 2
        dev.sync_for_cpu(dma + half, size - half, dir, cpu=cpu)
        assert buf.read(off + half, size - half) == reply[half:]
        dev.unmap(dma, size, dir, cpu=cpu)
        assert buf.read(off, size) == reply

    def worker(cpu: int) -> None:
        rng = random.Random(cpu)
        buf = m.alloc(8 * region)
        live: dict[int, tuple[Any, ...]] = {}
        try:
            start.wait()
            for it in range(400):
                slot = rng.randrange(8)
                if slot in live:
                    finish(*live.pop(slot), cpu, cpu * 100_000 + it)
                    continue
                dev = devs[rng.randrange(2)]
                off = slot * region + rng.randrange(4096)
                size = rng.randrange(1, max_size)
                dir = rng.choice([TO, FROM, BIDI])
                data = pattern(size, cpu * 1000 + it)
                buf.write(data, off)
                try:
                    dma = dev.map_single(buf.phys_addr + off, size, dir, cpu=cpu)
                except DmaMappingError as e:
                    assert e.cause == "full" and may_fail, e
                    failures[cpu] += 1
                    continue
                if dev is devs[0]:
                    assert dma & 0xFFF == (buf.phys_addr + off) & 0xFFF
                live[slot] = (dev, dma, size, dir, buf, off, data)
            for args in live.values():
                finish(*args, cpu, 7)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(cpu,)) for cpu in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert m.mem.check_invariants() == []
    assert m.stats["io_tlb_used"] == 0
    assert m.pool is not None and sum(a.used for a in m.pool.areas) == 0
    assert all(d.live_mappings() == [] for d in devs)
    assert (sum(failures) > 0) == may_fail


def test_v5_15_machine_has_one_area_whatever_the_cpus() -> None:
    """5.12-5.19 have one lock and one cursor: no per-CPU areas to size."""
    m = Machine("8G", cpus=4, profile="v5.15", cmdline="swiotlb=1024,force")
    assert m.pool is not None and m.pool.nareas == 1


def test_map_sg_gives_back_earlier_entries_when_the_search_would_hang() -> None:
    """The <= 6.2 do/while search can spin forever (spec §3.4); the model raises instead, and
    an sg map that hits it on a later entry releases the entries it had mapped."""
    from swiotlb.core.search import SearchDeadlock

    m = Machine("1G", profile="v5.15", cmdline="swiotlb=128,force")
    dev = m.add_device("nvme", min_align_mask=0xFFF)
    buf = m.alloc(512 << 10)
    with pytest.raises(SearchDeadlock):
        dev.map_sg([(buf.phys_addr, 200 << 10), (buf.phys_addr + 0x800, 56 << 10)], TO)
    assert m.mem.total_used == 0 and dev.live_mappings() == [] and m.mem.check_invariants() == []


def test_boot_pool_is_halved_when_low_memory_is_short(caplog: pytest.LogCaptureFixture) -> None:
    """Spec §1.5: swiotlb_init_remap halves the pool until the boot allocator can give it."""
    low_free = 48 << 20  # only 48 MiB of contiguous memory left below 4 GiB
    with caplog.at_level("INFO", logger="swiotlb"):
        m = Machine("8G", reserved=[(1 << 20, (4 << 30) - (1 << 20) - low_free)])
    assert m.pool is not None and m.pool.nslabs == 16384 and m.pool.end <= 4 << 30
    assert "SWIOTLB bounce buffer size adjusted 32768 -> 16384 slabs" in caplog.text
