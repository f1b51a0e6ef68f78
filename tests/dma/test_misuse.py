"""DMA API misuse (CONFIG_DMA_API_DEBUG): one test per exception class, each checking that
nothing changed — allocator, memory, live mappings."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from swiotlb import DmaApiMisuse, DmaDirection, Machine
from swiotlb.dma import (
    DeviceAccessError,
    DeviceRemovedError,
    DoubleUnmapError,
    InvalidDirectionError,
    InvalidSizesError,
    MappingsLeakedError,
    SyncDirectionError,
    SyncRangeError,
    UnknownMappingError,
    UnmapMismatchError,
)
from swiotlb.dma.device import Device

TO = DmaDirection.TO_DEVICE
FROM = DmaDirection.FROM_DEVICE
BIDI = DmaDirection.BIDIRECTIONAL


def state(m: Machine, *devs: Device) -> tuple[Any, ...]:
    pool = m.pool
    assert pool is not None
    in_use = [i for i, free_run in enumerate(pool.list) if free_run == 0]
    return (
        m.memory.snapshot(),
        bytes(pool.list),
        [(i, pool.slot_orig_addr(i), pool.slot_alloc_size(i)) for i in in_use],
        [(a.index, a.used) for a in pool.areas],
        m.mem.counters(),
        [[(x.dma_addr, x.size, x.dir, x.kind) for x in d.live_mappings()] for d in devs],
    )


@pytest.fixture
def setup() -> tuple[Machine, Device, dict[str, int]]:
    m = Machine("2G", cmdline="swiotlb=force", profile="v6.6")
    dev = m.add_device("0000:00:03.0", min_align_mask=0xFFF)
    buf = m.alloc(4 * 4096)
    buf.write(bytes(range(256)) * 64)
    maps = {
        "to": dev.map_single(buf.phys_addr + 0x100, 5000, TO),
        "from": dev.map_single(buf.phys_addr + 0x2000, 3000, FROM),
    }
    dev.dma_write(maps["from"], b"\x5a" * 3000)
    return m, dev, maps


def expect(m: Machine, dev: Device, exc: type[DmaApiMisuse], call: Callable[[], object], addr: int | None) -> DmaApiMisuse:
    before = state(m, dev)
    with pytest.raises(exc) as info:
        call()
    assert isinstance(info.value, DmaApiMisuse)
    assert info.value.device == dev.name and dev.name in str(info.value)
    if addr is not None:
        assert f"{addr:#x}" in str(info.value)
    assert state(m, dev) == before
    return info.value


def test_unmap_of_an_unknown_address(setup: Any) -> None:
    m, dev, maps = setup
    bogus = maps["to"] + 0x10000
    err = expect(m, dev, UnknownMappingError, lambda: dev.unmap(bogus, 5000, TO), bogus)
    assert type(err) is UnknownMappingError and "never mapped" in str(err)


def test_double_unmap(setup: Any) -> None:
    m, dev, maps = setup
    dev.unmap(maps["to"], 5000, TO)
    err = expect(m, dev, DoubleUnmapError, lambda: dev.unmap(maps["to"], 5000, TO), maps["to"])
    assert "already unmapped" in str(err)


@pytest.mark.parametrize(
    "size,dir,sg,words",
    [(4096, TO, False, "size 4096 differs"), (5000, BIDI, False, "dir=BIDIRECTIONAL differs"),
     (5000, TO, True, "unmapped as sg but mapped as single")],
)
def test_unmap_that_does_not_match_the_map(setup: Any, size: int, dir: DmaDirection, sg: bool, words: str) -> None:
    m, dev, maps = setup
    dma = maps["to"]
    call = (lambda: dev.unmap_sg([(dma, size)], dir)) if sg else (lambda: dev.unmap(dma, size, dir))
    err = expect(m, dev, UnmapMismatchError, call, dma)
    assert words in str(err)


def test_unmap_sg_with_a_different_entry_count(setup: Any) -> None:
    m, dev, _ = setup
    segs = dev.map_sg([(0x4000_0000, 100), (0x4000_1000, 200)], FROM)
    err = expect(m, dev, UnmapMismatchError, lambda: dev.unmap_sg(segs[:1], FROM), segs[0].dma_addr)
    assert "mapped with 2" in str(err)
    dev.unmap_sg(segs, FROM)


def test_sync_outside_the_mapping(setup: Any) -> None:
    m, dev, maps = setup
    dma = maps["from"]
    err = expect(m, dev, SyncRangeError, lambda: dev.sync_for_cpu(dma + 2000, 1001, FROM), dma + 2000)
    assert "runs past the end" in str(err)
    nowhere = dma + 0x8000
    expect(m, dev, UnknownMappingError, lambda: dev.sync_for_device(nowhere, 4, FROM), nowhere)


def test_sync_in_a_direction_the_mapping_does_not_allow(setup: Any) -> None:
    m, dev, maps = setup
    err = expect(m, dev, SyncDirectionError, lambda: dev.sync_for_cpu(maps["to"], 100, FROM), maps["to"])
    assert "dir=FROM_DEVICE" in str(err)
    expect(m, dev, SyncDirectionError, lambda: dev.sync_for_device(maps["from"] + 8, 8, BIDI), maps["from"] + 8)


def test_a_bidirectional_mapping_accepts_every_sync_direction(setup: Any) -> None:
    m, dev, _ = setup
    dma = dev.map_single(0x4000_0000, 4096, BIDI)
    for d in (TO, FROM, BIDI):
        dev.sync_for_cpu(dma, 4096, d)
        dev.sync_for_device(dma, 4096, d)
    dev.unmap(dma, 4096, BIDI)


def test_invalid_direction(setup: Any) -> None:
    m, dev, maps = setup
    expect(m, dev, InvalidDirectionError, lambda: dev.map_single(0x4000_0000, 64, DmaDirection.NONE), None)
    expect(m, dev, InvalidDirectionError, lambda: dev.unmap(maps["to"], 5000, 7), None)


def test_mapping_size_larger_than_alloc_size(setup: Any) -> None:
    m, dev, _ = setup
    err = expect(m, dev, InvalidSizesError,
                 lambda: dev.map_page(0x4000_0000, 0x40, 8192, TO, alloc_size=4096), 0x4000_0040)
    assert "Invalid sizes (mapping: 8192 bytes, alloc: 4096 bytes)" in str(err)
    expect(m, dev, InvalidSizesError, lambda: dev.map_single(0x4000_0000, 0, TO), 0x4000_0000)


def test_device_access_outside_its_mappings(setup: Any) -> None:
    m, dev, maps = setup
    end = maps["from"] + 3000
    expect(m, dev, DeviceAccessError, lambda: dev.dma_write(end - 10, b"x" * 11), end - 10)
    expect(m, dev, DeviceAccessError, lambda: dev.dma_read(0x4000_0000, 1), 0x4000_0000)
    other = m.add_device("other")
    before = state(m, dev)
    with pytest.raises(DeviceAccessError):
        other.dma_read(maps["to"], 16)  # another device's mapping does not count
    assert state(m, dev) == before


def test_removing_a_device_with_live_mappings(setup: Any) -> None:
    m, dev, maps = setup
    err = expect(m, dev, MappingsLeakedError, dev.remove, maps["to"])
    assert "2 live mapping(s)" in str(err)
    assert m.devices[dev.name] is dev and not dev.removed
    dev.unmap(maps["to"], 5000, TO)
    dev.unmap(maps["from"], 3000, FROM)
    dev.remove()
    assert dev.name not in m.devices and m.stats["io_tlb_used"] == 0


def test_calls_on_a_removed_device(setup: Any) -> None:
    m, dev, maps = setup
    dev.unmap(maps["to"], 5000, TO)
    dev.unmap(maps["from"], 3000, FROM)
    dev.remove()
    expect(m, dev, DeviceRemovedError, lambda: dev.map_single(0x4000_0000, 64, TO), None)
    expect(m, dev, DeviceRemovedError, lambda: dev.unmap(maps["to"], 5000, TO), None)


def test_every_misuse_class_is_a_dma_api_misuse() -> None:
    for cls in (UnknownMappingError, DoubleUnmapError, UnmapMismatchError, SyncRangeError, SyncDirectionError,
                InvalidDirectionError, InvalidSizesError, DeviceAccessError, MappingsLeakedError, DeviceRemovedError):
        assert issubclass(cls, DmaApiMisuse)
