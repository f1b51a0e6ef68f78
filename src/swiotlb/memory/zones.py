"""Memory zones: which physical addresses an allocation with a given address limit may use.

Linux splits RAM into ZONE_DMA (below ``2**zone_dma_bits``: 16 MiB on x86 for ISA devices, 1 GiB
on the Raspberry Pi 4 whose vc4/PCIe see only 30 address bits), ZONE_DMA32 (below 4 GiB) and
ZONE_NORMAL (the rest; no highmem on 64-bit). ``__GFP_DMA``/``__GFP_DMA32`` cap the highest zone
an allocation may use (Documentation/mm/physical_memory.rst). Dynamic SWIOTLB chooses these flags
from the device limit (spec §5.4), so the zone boundaries decide where a grown pool can land.

Layout: ``ram_bytes`` of RAM is laid out from address 0 upwards and skips each hole, so holes
move RAM up (an x86 box with 8 GiB and the 3-4 GiB PCI hole has RAM up to 9 GiB); holes above the
end of RAM have no effect. Each zone owns a :class:`~swiotlb.memory.buddy.BuddyAllocator` over its
span, holding only the zone's RAM pages. Zones keep their place even when empty.

MAX_PAGE_ORDER per page size (the arm64 ``ARCH_FORCE_MAX_ORDER`` defaults; x86 uses 10):
4 KiB -> 10 (4 MiB blocks), 16 KiB -> 11 (32 MiB), 64 KiB -> 13 (512 MiB; spec §5.4 derives the
growth cap ``32 << 13`` slots from it). ``pageblock_order`` = min(PMD order, MAX_PAGE_ORDER):
9, 11 and 13 (a PMD maps ``page_size / 8`` pages).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from swiotlb.memory.buddy import BuddyAllocator
from swiotlb.memory.gfp import Gfp, check_zone_bits

_ZONE_BITS = int(Gfp.DMA | Gfp.DMA32)

GIB = 1 << 30
FOUR_GIB = 4 * GIB

ZONE_DMA = "DMA"
ZONE_DMA32 = "DMA32"
ZONE_NORMAL = "Normal"

DEFAULT_MAX_PAGE_ORDER = {4096: 10, 16384: 11, 65536: 13}


@dataclass(eq=False)
class Zone:
    """One zone: its pfn span ``[start_pfn, end_pfn)``, RAM pages in it, and their allocator."""

    name: str
    index: int  # 0 for the lowest zone; higher zones have larger indices
    start_pfn: int
    end_pfn: int
    present_pages: int
    buddy: BuddyAllocator
    page_shift: int

    @property
    def start(self) -> int:
        return self.start_pfn << self.page_shift

    @property
    def end(self) -> int:
        """First address past the zone."""
        return self.end_pfn << self.page_shift

    def __repr__(self) -> str:
        return f"Zone({self.name}, [{self.start:#x}, {self.end:#x}), present={self.present_pages} pages)"


class ZoneLayout:
    """RAM ranges, holes and zones of one machine.

    ``dma_bits``: size of ZONE_DMA in address bits (24 on x86, 30 on the Raspberry Pi 4, None for
    no ZONE_DMA). ``dma32``: whether ZONE_DMA32 exists (it spans ``[2**dma_bits, 4 GiB)``).
    ``holes``: ``(start, size)`` byte ranges that hold no RAM.
    """

    def __init__(
        self,
        ram_bytes: int,
        *,
        page_size: int = 4096,
        dma_bits: int | None = 24,
        dma32: bool = True,
        holes: Iterable[tuple[int, int]] = (),
        max_page_order: int | None = None,
    ) -> None:
        if page_size <= 0 or page_size & (page_size - 1):
            raise ValueError(f"page size {page_size} is not a power of two")
        if ram_bytes <= 0 or ram_bytes % page_size:
            raise ValueError(f"RAM size {ram_bytes:#x} is not a positive multiple of the page size {page_size:#x}")
        if dma_bits is not None and not page_size.bit_length() - 1 <= dma_bits <= 32:
            raise ValueError(f"ZONE_DMA of {dma_bits} address bits is outside [page shift, 32]")
        if max_page_order is None:
            if page_size not in DEFAULT_MAX_PAGE_ORDER:
                raise ValueError(f"no default MAX_PAGE_ORDER for {page_size}-byte pages; pass max_page_order")
            max_page_order = DEFAULT_MAX_PAGE_ORDER[page_size]
        self.page_size = page_size
        self.page_shift = page_size.bit_length() - 1
        self.max_page_order = max_page_order
        self.pageblock_order = min(self.page_shift - 3, max_page_order)
        self.dma_bits = dma_bits
        self.ram_bytes = ram_bytes
        self.holes = _check_holes(holes, page_size)
        self.ram_ranges = _lay_out(ram_bytes, self.holes)
        self.end = self.ram_ranges[-1][0] + self.ram_ranges[-1][1]
        self.end_pfn = self.end >> self.page_shift

        bounds: list[tuple[str, int]] = []  # (name, end address) from low to high
        if dma_bits is not None:
            bounds.append((ZONE_DMA, 1 << dma_bits))
        if dma32:
            bounds.append((ZONE_DMA32, FOUR_GIB))
        zones: list[Zone] = []
        lo = 0
        for name, hi in [*bounds, (ZONE_NORMAL, max(self.end, FOUR_GIB))]:
            hi = max(lo, min(hi, self.end))
            zones.append(self._make_zone(name, len(zones), lo, hi))
            lo = hi
        self.zones: tuple[Zone, ...] = tuple(zones)
        self._starts = [z.start_pfn for z in zones]
        self._claimed = False
        self._zonelists: dict[int, list[Zone]] = {}
        for bits, wanted in ((0, ZONE_NORMAL), (int(Gfp.DMA), ZONE_DMA), (int(Gfp.DMA32), ZONE_DMA32)):
            names = [ZONE_DMA, ZONE_DMA32, ZONE_NORMAL]
            top = min((z for z in zones if z.name in names[names.index(wanted) :]), key=lambda z: z.index)
            self._zonelists[bits] = [zones[i] for i in range(top.index, -1, -1)]

    # -- presets ---------------------------------------------------------------------------
    @classmethod
    def x86_64(cls, ram_bytes: int, *, pci_hole: bool = False) -> ZoneLayout:
        """x86-64: 4 KiB pages, 16 MiB ZONE_DMA, ZONE_DMA32, optionally the 1 GiB PCI hole at 3 GiB."""
        holes = [(3 * GIB, GIB)] if pci_hole else []
        return cls(ram_bytes, dma_bits=24, dma32=True, holes=holes)

    @classmethod
    def rpi4(cls, ram_bytes: int = 8 * GIB, *, page_size: int = 4096) -> ZoneLayout:
        """Raspberry Pi 4 (arm64): ZONE_DMA is the first 1 GiB (30-bit devices), then ZONE_DMA32."""
        return cls(ram_bytes, page_size=page_size, dma_bits=30, dma32=True)

    # -- queries ---------------------------------------------------------------------------
    def claim(self) -> None:
        """Mark the zones' buddy lists as owned by one page allocator (they hold mutable state)."""
        if self._claimed:
            raise ValueError("this ZoneLayout already backs a PageAllocator; build a new layout")
        self._claimed = True

    def zone(self, name: str) -> Zone:
        for z in self.zones:
            if z.name == name:
                return z
        raise KeyError(f"no zone {name!r} in this layout (zones: {[z.name for z in self.zones]})")

    def has_zone(self, name: str) -> bool:
        return any(z.name == name for z in self.zones)

    def zone_of(self, phys: int) -> Zone:
        """The zone whose span holds ``phys`` (holes inside a span belong to it)."""
        pfn = phys >> self.page_shift
        if not 0 <= pfn < self.end_pfn:
            raise ValueError(f"address {phys:#x} is beyond the end of RAM {self.end:#x}")
        i = bisect.bisect_right(self._starts, pfn) - 1
        while self.zones[i].end_pfn <= pfn:  # skip empty zones sharing a start
            i += 1
        return self.zones[i]

    def is_ram(self, phys: int) -> bool:
        return any(s <= phys < s + n for s, n in self.ram_ranges)

    @property
    def zone_dma_limit(self) -> int | None:
        """Last address of ZONE_DMA (the kernel's ``zone_dma_limit``), None without ZONE_DMA."""
        return None if self.dma_bits is None else (1 << self.dma_bits) - 1

    def highest_zone(self, gfp: Gfp | int) -> Zone:
        """Highest zone an allocation with these flags may use (the kernel's ``gfp_zone``).
        A zone modifier for a zone this layout lacks falls through to the next zone up, as in
        kernels built without that zone."""
        return self.zonelist(gfp)[0]

    def zonelist(self, gfp: Gfp | int) -> list[Zone]:
        """Zones to try, from the highest allowed down (NORMAL -> DMA32 -> DMA)."""
        zl = self._zonelists.get(int(gfp) & _ZONE_BITS)
        if zl is None:
            check_zone_bits(gfp)
            raise AssertionError("unreachable")  # pragma: no cover
        return zl

    def zone_flags_for_limit(self, limit: int) -> Gfp:
        """Zone modifier for an inclusive address ``limit`` as dynamic SWIOTLB picks it (spec §5.4):
        ``__GFP_DMA`` up to zone_dma_limit, ``__GFP_DMA32`` up to 4 GiB - 1, else none."""
        dma_limit = self.zone_dma_limit
        if dma_limit is not None and limit <= dma_limit:
            return Gfp.DMA
        if self.has_zone(ZONE_DMA32) and limit <= FOUR_GIB - 1:
            return Gfp.DMA32
        return Gfp.NONE

    def _make_zone(self, name: str, index: int, lo: int, hi: int) -> Zone:
        shift = self.page_shift
        buddy = BuddyAllocator(lo >> shift, (hi - lo) >> shift, self.max_page_order, populate=False)
        present = 0
        for s, n in self.ram_ranges:
            a, b = max(s, lo), min(s + n, hi)
            if a < b:
                buddy.release_range(a >> shift, (b - a) >> shift)
                present += (b - a) >> shift
        return Zone(name, index, lo >> shift, hi >> shift, present, buddy, shift)

    def __repr__(self) -> str:
        zones = ", ".join(f"{z.name} [{z.start:#x}, {z.end:#x})" for z in self.zones)
        return f"ZoneLayout(ram={self.ram_bytes:#x}, page_size={self.page_size}, {zones})"


def _check_holes(holes: Iterable[tuple[int, int]], page_size: int) -> tuple[tuple[int, int], ...]:
    out = sorted((int(s), int(n)) for s, n in holes)
    for s, n in out:
        if s < 0 or n <= 0 or s % page_size or n % page_size:
            raise ValueError(f"hole [{s:#x}, +{n:#x}) is not a non-empty page-aligned range")
    for (s1, n1), (s2, _) in zip(out, out[1:]):
        if s1 + n1 > s2:
            raise ValueError(f"holes at {s1:#x} and {s2:#x} overlap")
    return tuple(out)


def _lay_out(ram: int, holes: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """RAM ranges ``(start, size)`` holding ``ram`` bytes from address 0, skipping the holes."""
    ranges: list[tuple[int, int]] = []
    pos, left = 0, ram
    for hs, hn in holes:
        if hs >= pos + left:
            break
        if hs > pos:
            ranges.append((pos, hs - pos))
            left -= hs - pos
        pos = max(pos, hs + hn)
    ranges.append((pos, left))
    return ranges
