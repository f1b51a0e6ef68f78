"""A DMA-capable device: its addressing limits, its live mappings and the streaming DMA API.

The limits are the ``struct device`` fields dma-direct and swiotlb read (spec §2.5, §4.3):
``dma_mask`` and ``bus_dma_limit`` (their ``min_not_zero`` is the highest reachable address),
``min_align_mask`` and ``seg_boundary_mask`` (the core allocator's device protocol, spec §1.2).
The default ``seg_boundary_mask`` is 0xFFFFFFFF, what PCI devices carry (a device without
``dma_parms`` would report ULONG_MAX); with 2 KiB slots and 128-slot segments it never changes
a slot choice inside a pool that does not straddle a 4 GiB line.

The methods are the driver-facing API; they delegate to the machine's
:class:`~swiotlb.dma.direct.DmaDirect`, which holds memory, policy and event bus.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable

from swiotlb.dma.debug import LiveMapping, MappingTable
from swiotlb.dma.errors import DeviceRemovedError
from swiotlb.dma.types import (
    SIZE_MAX,
    DeferredMap,
    DmaDirection,
    DmaSegment,
    HasPhysAddr,
    dma_bit_mask,
    min_not_zero,
)

if TYPE_CHECKING:
    from swiotlb.dma.direct import DmaDirect

PCI_SEG_BOUNDARY_MASK = 0xFFFFFFFF
DEFAULT_MAX_SEGMENT_SIZE = 65536  # dma_get_max_seg_size() without dma_parms (SZ_64K)


def _phys(target: HasPhysAddr | int) -> int:
    return target if isinstance(target, int) else target.phys_addr


class Device:
    """One device. ``dma_limit`` is kept equal to ``min_not_zero(dma_mask, bus_dma_limit)``."""

    __slots__ = (
        "name",
        "min_align_mask",
        "seg_boundary_mask",
        "coherent",
        "max_segment_size",
        "table",
        "removed",
        "dma_limit",
        "_dma_mask",
        "_bus_dma_limit",
        "_engine",
        "_on_remove",
    )

    def __init__(
        self,
        name: str,
        *,
        dma_mask: int = dma_bit_mask(64),
        bus_dma_limit: int = 0,
        min_align_mask: int = 0,
        seg_boundary_mask: int = PCI_SEG_BOUNDARY_MASK,
        coherent: bool = True,
        max_segment_size: int = DEFAULT_MAX_SEGMENT_SIZE,
        engine: DmaDirect | None = None,
        on_remove: Callable[[Device], None] | None = None,
    ) -> None:
        if seg_boundary_mask & (seg_boundary_mask + 1):
            raise ValueError(f"{name}: seg_boundary_mask {seg_boundary_mask:#x} is not of the form 2**k - 1")
        if not 0 <= min_align_mask <= 0xFFFFFFFF:
            raise ValueError(f"{name}: min_align_mask {min_align_mask:#x} is not an unsigned 32-bit mask")
        self.name = name
        self._dma_mask = dma_mask
        self._bus_dma_limit = bus_dma_limit
        self.dma_limit = min_not_zero(dma_mask, bus_dma_limit)
        self.min_align_mask = min_align_mask
        self.seg_boundary_mask = seg_boundary_mask
        self.coherent = coherent
        self.max_segment_size = max_segment_size
        self.table = MappingTable(name)
        self.removed = False
        self._engine = engine
        self._on_remove = on_remove

    # -- limits ----------------------------------------------------------------------------
    @property
    def dma_mask(self) -> int:
        return self._dma_mask

    @dma_mask.setter
    def dma_mask(self, value: int) -> None:
        """``dma_set_mask``."""
        self._dma_mask = value
        self.dma_limit = min_not_zero(value, self._bus_dma_limit)

    @property
    def bus_dma_limit(self) -> int:
        return self._bus_dma_limit

    @bus_dma_limit.setter
    def bus_dma_limit(self, value: int) -> None:
        self._bus_dma_limit = value
        self.dma_limit = min_not_zero(self._dma_mask, value)

    @property
    def max_mapping_size(self) -> int:
        """``dma_max_mapping_size`` (spec §1.6): 256 KiB-ish when swiotlb may bounce, else SIZE_MAX."""
        return self._dma().max_mapping_size(self) if self._engine is not None else SIZE_MAX

    def _dma(self) -> DmaDirect:
        if self.removed:
            raise DeviceRemovedError(f"{self.name}: the device was removed", device=self.name)
        if self._engine is None:
            raise RuntimeError(f"{self.name}: device is not attached to a machine")
        return self._engine

    # -- streaming API ---------------------------------------------------------------------
    def map_single(
        self, target: HasPhysAddr | int, size: int, dir: DmaDirection | int, *,
        attrs: int = 0, cpu: int = 0, may_sleep: bool = False,
    ) -> int:
        """``dma_map_single``: map ``size`` bytes at a CPU buffer or physical address; returns the DMA address."""
        return self._dma().map_page(self, _phys(target), size, dir, attrs, cpu, may_sleep)

    def map_single_deferred(
        self, target: HasPhysAddr | int, size: int, dir: DmaDirection | int,
        callback: Callable[[DeferredMap], None], *, attrs: int = 0, cpu: int = 0, may_sleep: bool = True,
    ) -> DeferredMap:
        """``map_single`` that may wait for bounce room instead of failing (FreeBSD's
        ``bus_dmamap_load`` returning EINPROGRESS). ``callback(ticket)`` runs once the map is
        done: before this returns when it maps at once, or later, in FIFO order, from the
        machine's deferred work. Atomic callers (``may_sleep=False``) are never queued."""
        return self._dma().map_page_deferred(self, _phys(target), size, dir, callback, attrs, cpu, may_sleep)

    def map_page(
        self, page: HasPhysAddr | int, offset: int, size: int, dir: DmaDirection | int, *,
        attrs: int = 0, cpu: int = 0, may_sleep: bool = False,
        alloc_size: int | None = None, alloc_align_mask: int = 0,
    ) -> int:
        """``dma_map_page``: ``offset`` bytes into ``page``. ``alloc_size``/``alloc_align_mask``
        are the bounce-path arguments an IOMMU caller passes (spec §3.1)."""
        return self._dma().map_page(
            self, _phys(page) + offset, size, dir, attrs, cpu, may_sleep, alloc_size, alloc_align_mask
        )

    def unmap(self, dma_addr: int, size: int, dir: DmaDirection | int, *, attrs: int = 0, cpu: int = 0) -> None:
        """``dma_unmap_single``/``dma_unmap_page``."""
        self._dma().unmap_page(self, dma_addr, size, dir, attrs, cpu)

    unmap_single = unmap
    unmap_page = unmap

    def map_sg(
        self, entries: Iterable[tuple[int, int] | tuple[HasPhysAddr, int]], dir: DmaDirection | int, *,
        attrs: int = 0, cpu: int = 0, may_sleep: bool = False,
    ) -> list[DmaSegment]:
        """``dma_map_sg``: map each (phys or buffer, length) entry; all or nothing."""
        return self._dma().map_sg(self, [(_phys(p), n) for p, n in entries], dir, attrs, cpu, may_sleep)

    def unmap_sg(
        self, segments: Iterable[DmaSegment | tuple[int, int]], dir: DmaDirection | int, *,
        attrs: int = 0, cpu: int = 0,
    ) -> None:
        """``dma_unmap_sg`` of the segments :meth:`map_sg` returned."""
        self._dma().unmap_sg(self, [(s[0], s[1]) for s in segments], dir, attrs, cpu)

    def sync_for_cpu(self, dma_addr: int, size: int, dir: DmaDirection | int, *, cpu: int = 0) -> None:
        """``dma_sync_single_for_cpu``; any sub-range of a mapping."""
        self._dma().sync_single(self, dma_addr, size, dir, cpu, for_device=False)

    def sync_for_device(self, dma_addr: int, size: int, dir: DmaDirection | int, *, cpu: int = 0) -> None:
        """``dma_sync_single_for_device``; any sub-range of a mapping."""
        self._dma().sync_single(self, dma_addr, size, dir, cpu, for_device=True)

    # -- the device side -------------------------------------------------------------------
    def dma_read(self, dma_addr: int, n: int) -> bytes:
        """What the device reads at ``dma_addr`` (must lie inside one of its live mappings)."""
        return self._dma().device_read(self, dma_addr, n)

    def dma_write(self, dma_addr: int, data: bytes | bytearray | memoryview) -> None:
        """The device writes ``data`` at ``dma_addr`` (must lie inside one of its live mappings)."""
        self._dma().device_write(self, dma_addr, data)

    # -- lifetime --------------------------------------------------------------------------
    def live_mappings(self) -> list[LiveMapping]:
        return self.table.mappings()

    def remove(self) -> None:
        """Unbind the device; refused with :class:`~swiotlb.dma.errors.MappingsLeakedError`
        (and nothing changed) while mappings are live."""
        engine = self._dma()
        engine.detach(self)
        self.removed = True
        if self._on_remove is not None:
            self._on_remove(self)

    def __repr__(self) -> str:
        return (
            f"Device({self.name!r}, dma_mask={self._dma_mask:#x}, bus_dma_limit={self._bus_dma_limit:#x}, "
            f"min_align_mask={self.min_align_mask:#x}{', removed' if self.removed else ''})"
        )
