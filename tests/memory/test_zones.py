"""ZoneLayout: x86 and Raspberry Pi 4 zones, holes, page sizes; gfp zone modifiers."""

from __future__ import annotations

import pytest

from swiotlb.memory import (
    GFP_ATOMIC,
    GFP_DMA,
    GFP_DMA32,
    GFP_HIGHUSER_MOVABLE,
    GFP_KERNEL,
    GFP_NOWAIT,
    GFP_TRANSHUGE_LIGHT,
    Gfp,
    ZoneLayout,
    may_sleep,
)

MIB = 1 << 20
GIB = 1 << 30


def spans(layout: ZoneLayout) -> list[tuple[str, int, int, int]]:
    return [(z.name, z.start, z.end, z.present_pages) for z in layout.zones]


def test_x86_zones_with_24_bit_dma_and_the_pci_hole() -> None:
    lay = ZoneLayout.x86_64(8 * GIB, pci_hole=True)
    assert lay.ram_ranges == [(0, 3 * GIB), (4 * GIB, 5 * GIB)]  # the hole moves RAM up
    assert lay.end == 9 * GIB
    assert spans(lay) == [
        ("DMA", 0, 16 * MIB, 16 * MIB >> 12),
        ("DMA32", 16 * MIB, 4 * GIB, (3 * GIB - 16 * MIB) >> 12),
        ("Normal", 4 * GIB, 9 * GIB, 5 * GIB >> 12),
    ]
    assert sum(z.buddy.free_pages for z in lay.zones) == 8 * GIB >> 12
    assert lay.zone_dma_limit == (1 << 24) - 1
    assert lay.max_page_order == 10 and lay.pageblock_order == 9
    assert not lay.is_ram(3 * GIB + 5) and lay.is_ram(4 * GIB)
    assert lay.zone_of(3 * GIB + 5).name == "DMA32"  # a hole belongs to the zone spanning it


def test_rpi4_8_gib_has_a_1_gib_dma_zone() -> None:
    lay = ZoneLayout.rpi4()
    assert spans(lay) == [
        ("DMA", 0, GIB, GIB >> 12),
        ("DMA32", GIB, 4 * GIB, 3 * GIB >> 12),
        ("Normal", 4 * GIB, 8 * GIB, 4 * GIB >> 12),
    ]
    assert lay.zone_dma_limit == GIB - 1
    assert lay.zone_flags_for_limit(GIB - 1) == Gfp.DMA  # vc4's 30-bit limit (S4)
    assert lay.zone_flags_for_limit(4 * GIB - 1) == Gfp.DMA32
    assert lay.zone_flags_for_limit(16 * GIB - 1) == Gfp.NONE


def test_zonelists_fall_back_from_the_highest_allowed_zone_down() -> None:
    lay = ZoneLayout.rpi4()
    assert [z.name for z in lay.zonelist(GFP_KERNEL)] == ["Normal", "DMA32", "DMA"]
    assert [z.name for z in lay.zonelist(GFP_KERNEL | GFP_DMA32)] == ["DMA32", "DMA"]
    assert [z.name for z in lay.zonelist(GFP_ATOMIC | GFP_DMA)] == ["DMA"]
    with pytest.raises(ValueError, match="both __GFP_DMA and __GFP_DMA32"):
        lay.zonelist(GFP_DMA | GFP_DMA32)


def test_a_missing_zone_modifier_falls_through_to_the_next_zone_up() -> None:
    lay = ZoneLayout(2 * GIB, dma_bits=None)
    assert [z.name for z in lay.zones] == ["DMA32", "Normal"]
    assert lay.highest_zone(GFP_DMA).name == "DMA32"
    assert lay.zone_dma_limit is None
    assert lay.zone("Normal").present_pages == 0  # RAM ends below 4 GiB: empty, but kept
    only_normal = ZoneLayout(64 * MIB, dma_bits=None, dma32=False)
    assert [z.name for z in only_normal.zones] == ["Normal"]
    assert only_normal.highest_zone(GFP_DMA32).name == "Normal"


@pytest.mark.parametrize(("page_size", "max_order", "pageblock"), [(4096, 10, 9), (16384, 11, 11), (65536, 13, 13)])
def test_page_sizes_set_max_page_order(page_size: int, max_order: int, pageblock: int) -> None:
    lay = ZoneLayout.rpi4(8 * GIB, page_size=page_size)
    assert lay.max_page_order == max_order and lay.pageblock_order == pageblock
    normal = lay.zone("Normal")
    assert normal.present_pages == 4 * GIB // page_size
    block = page_size << max_order  # 4 MiB, 32 MiB, 512 MiB
    assert normal.buddy.free_blocks_by_order()[max_order] == 4 * GIB // block
    custom = ZoneLayout(GIB, page_size=page_size, max_page_order=5)
    assert custom.zone("DMA32").buddy.max_order == 5


def test_holes_remove_ram_and_can_empty_a_zone() -> None:
    lay = ZoneLayout(4 * GIB, dma_bits=30, holes=[(0, 2 * GIB)])  # RAM starts at 2 GiB
    assert lay.ram_ranges == [(2 * GIB, 4 * GIB)]
    present = [(z.name, z.present_pages) for z in lay.zones]
    assert present == [("DMA", 0), ("DMA32", 2 * GIB >> 12), ("Normal", 2 * GIB >> 12)]
    assert lay.zone("DMA").buddy.alloc(0) is None
    inner = ZoneLayout(GIB, holes=[(100 * MIB, 4 * MIB), (8 * GIB, GIB)])  # the second lies above RAM
    assert inner.ram_ranges == [(0, 100 * MIB), (104 * MIB, GIB - 100 * MIB)]
    runs = inner.zone("DMA32").buddy.free_runs()
    assert runs == [(16 * MIB >> 12, 84 * MIB >> 12), (104 * MIB >> 12, (GIB - 100 * MIB) >> 12)]


def test_layout_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="not a power of two"):
        ZoneLayout(GIB, page_size=3000)
    with pytest.raises(ValueError, match="not a positive multiple"):
        ZoneLayout(GIB + 5)
    with pytest.raises(ValueError, match="page-aligned"):
        ZoneLayout(GIB, holes=[(5, 4096)])
    with pytest.raises(ValueError, match="overlap"):
        ZoneLayout(GIB, holes=[(0, 8192), (4096, 4096)])
    with pytest.raises(ValueError, match="no default MAX_PAGE_ORDER"):
        ZoneLayout(GIB, page_size=8192)
    with pytest.raises(ValueError, match="beyond the end of RAM"):
        ZoneLayout(GIB).zone_of(GIB)


def test_gfp_composites_follow_the_kernel_meaning() -> None:
    assert may_sleep(GFP_KERNEL) and may_sleep(GFP_HIGHUSER_MOVABLE)
    assert not may_sleep(GFP_NOWAIT) and not may_sleep(GFP_ATOMIC) and not may_sleep(GFP_TRANSHUGE_LIGHT)
    assert GFP_ATOMIC & Gfp.HIGH and not GFP_NOWAIT & Gfp.HIGH
    assert GFP_HIGHUSER_MOVABLE & Gfp.MOVABLE and GFP_TRANSHUGE_LIGHT & Gfp.NOWARN
    assert may_sleep(int(GFP_KERNEL | Gfp.ZERO))  # plain ints work too
