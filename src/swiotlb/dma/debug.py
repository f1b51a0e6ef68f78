"""Live-mapping bookkeeping and the checks of CONFIG_DMA_API_DEBUG (kernel/dma/debug.c).

Each device has one :class:`MappingTable`. Every check runs before anything changes, and the
unmap path removes the entry in the same locked step as the check, so two threads unmapping
one address cannot both succeed. Lookups by exact DMA address are one dict access; lookups of
an address *inside* a mapping (partial syncs, device accesses) fall back to a scan of the
device's live mappings, which is fine at the sizes of a device queue.

Sync direction rule (documented choice, after dma-debug's ``check_sync``): a sync must use the
mapping's direction, or the mapping must be BIDIRECTIONAL. Copy semantics of the allowed
combinations follow spec §3.7/§4.2 (e.g. ``sync_for_cpu`` on a TO_DEVICE mapping is a no-op).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Iterator

from swiotlb.dma.errors import (
    DoubleUnmapError,
    SyncDirectionError,
    SyncRangeError,
    UnknownMappingError,
    UnmapMismatchError,
)
from swiotlb.dma.types import DmaDirection

if TYPE_CHECKING:
    from swiotlb.policies.base import BounceMapping

RECENT_UNMAPS = 4096  # how many unmapped addresses are remembered to tell "double" from "unknown"

SINGLE = "single"  # dma_map_single / dma_map_page
SG = "sg"  # one entry of dma_map_sg


class LiveMapping:
    """One streaming mapping: where the device sees it, where the CPU data is, how it was made.

    ``slot`` is the bounce allocation, or None for a direct (non-bounced) mapping. ``sg_nents``
    is the entry count of the ``map_sg`` call for sg entries (0 for single mappings). ``next``
    chains mappings that share a DMA address (a direct buffer mapped twice).
    """

    __slots__ = ("dma_addr", "phys_addr", "size", "dir", "attrs", "kind", "sg_nents", "slot", "next")

    def __init__(
        self,
        dma_addr: int,
        phys_addr: int,
        size: int,
        dir: DmaDirection,
        attrs: int,
        kind: str,
        sg_nents: int,
        slot: BounceMapping | None,
    ) -> None:
        self.dma_addr = dma_addr
        self.phys_addr = phys_addr
        self.size = size
        self.dir = dir
        self.attrs = attrs
        self.kind = kind
        self.sg_nents = sg_nents
        self.slot = slot
        self.next: LiveMapping | None = None

    @property
    def bounced(self) -> bool:
        return self.slot is not None

    def describe(self) -> str:
        how = "bounced" if self.slot is not None else "direct"
        return (
            f"{self.kind} mapping dma {self.dma_addr:#x}+{self.size} dir={self.dir.name} "
            f"({how}, phys {self.phys_addr:#x})"
        )

    def __repr__(self) -> str:
        return f"LiveMapping({self.describe()})"


class MappingTable:
    """The live mappings of one device, keyed by DMA address."""

    __slots__ = ("device", "_live", "_gone", "_lock")

    def __init__(self, device: str) -> None:
        self.device = device
        self._live: dict[int, LiveMapping] = {}
        self._gone: OrderedDict[int, LiveMapping] = OrderedDict()
        self._lock = threading.Lock()

    # -- queries ---------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._lock:
            return sum(1 for _ in self._iter_locked())

    def mappings(self) -> list[LiveMapping]:
        """A snapshot of the live mappings, ordered by DMA address."""
        with self._lock:
            return sorted(self._iter_locked(), key=lambda m: m.dma_addr)

    def _iter_locked(self) -> Iterator[LiveMapping]:
        for head in self._live.values():
            m: LiveMapping | None = head
            while m is not None:
                yield m
                m = m.next

    def _containing_locked(self, addr: int, n: int) -> tuple[LiveMapping | None, LiveMapping | None]:
        """(mapping holding all of [addr, addr+n), mapping holding addr) — either may be None."""
        holder = None
        m: LiveMapping | None = self._live.get(addr)
        while m is not None:
            if n <= m.size:
                return m, m
            holder = holder or m
            m = m.next
        for m in self._iter_locked():
            start = m.dma_addr
            if start <= addr < start + m.size:
                if addr + n <= start + m.size:
                    return m, m
                holder = holder or m
        return None, holder

    def find_containing(self, addr: int, n: int) -> LiveMapping | None:
        """The live mapping that holds all of ``[addr, addr + n)``, or None."""
        with self._lock:
            return self._containing_locked(addr, n)[0]

    # -- changes ---------------------------------------------------------------------------
    def add(self, mapping: LiveMapping) -> None:
        with self._lock:
            prev = self._live.get(mapping.dma_addr)
            if prev is not None:
                mapping.next = prev
            self._live[mapping.dma_addr] = mapping

    def take(self, dma_addr: int, size: int, dir: DmaDirection, kind: str, nents: int = 0) -> LiveMapping:
        """Check an unmap and remove its mapping in one step (or raise and change nothing)."""
        with self._lock:
            m = self._match_locked(dma_addr, size, dir, kind, nents)
            self._unlink_locked(m)
            return m

    def take_many(self, entries: list[tuple[int, int]], dir: DmaDirection, kind: str) -> list[LiveMapping]:
        """``take`` for every (dma_addr, size) of an sg list; all checks pass before any removal."""
        with self._lock:
            found: list[LiveMapping] = []
            for dma_addr, size in entries:
                m = self._match_locked(dma_addr, size, dir, kind, len(entries), exclude=found)
                found.append(m)
            for m in found:
                self._unlink_locked(m)
            return found

    def check_sync(self, dma_addr: int, size: int, dir: DmaDirection, what: str) -> LiveMapping:
        """The mapping a sync of ``[dma_addr, dma_addr + size)`` falls in, after the debug checks."""
        with self._lock:
            m, holder = self._containing_locked(dma_addr, size)
        if m is None:
            if holder is None:
                raise UnknownMappingError(
                    f"{self.device}: {what} of dma {dma_addr:#x}+{size}: the device has no mapping there",
                    device=self.device, dma_addr=dma_addr,
                )
            end = holder.dma_addr + holder.size
            raise SyncRangeError(
                f"{self.device}: {what} of dma {dma_addr:#x}+{size} runs past the end {end:#x} of "
                f"{holder.describe()}",
                device=self.device, dma_addr=dma_addr,
            )
        if dir != m.dir and m.dir is not DmaDirection.BIDIRECTIONAL:
            raise SyncDirectionError(
                f"{self.device}: {what} of dma {dma_addr:#x}+{size} with dir={dir.name} on "
                f"{m.describe()}; the direction must match or the mapping must be BIDIRECTIONAL",
                device=self.device, dma_addr=dma_addr,
            )
        return m

    # -- helpers (lock held) ---------------------------------------------------------------
    def _match_locked(
        self, dma_addr: int, size: int, dir: DmaDirection, kind: str, nents: int,
        exclude: list[LiveMapping] | None = None,
    ) -> LiveMapping:
        head = self._live.get(dma_addr)
        candidates: list[LiveMapping] = []
        m = head
        while m is not None:
            if exclude is None or m not in exclude:
                if m.size == size and m.dir == dir and m.kind == kind and (kind != SG or m.sg_nents == nents):
                    return m
                candidates.append(m)
            m = m.next
        if not candidates:
            gone = self._gone.get(dma_addr)
            if gone is not None:
                raise DoubleUnmapError(
                    f"{self.device}: unmap of dma {dma_addr:#x}+{size}: already unmapped ({gone.describe()})",
                    device=self.device, dma_addr=dma_addr,
                )
            raise UnknownMappingError(
                f"{self.device}: unmap of dma {dma_addr:#x}+{size}: the device never mapped this address",
                device=self.device, dma_addr=dma_addr,
            )
        c = candidates[0]
        if c.kind != kind:
            problem = f"unmapped as {kind} but mapped as {c.kind}"
        elif c.size != size:
            problem = f"unmap size {size} differs from the mapped size {c.size}"
        elif c.dir != dir:
            problem = f"unmap dir={dir.name} differs from the mapped dir={c.dir.name}"
        else:
            problem = f"unmap of {nents} sg entries but the list was mapped with {c.sg_nents}"
        raise UnmapMismatchError(
            f"{self.device}: unmap of dma {dma_addr:#x}: {problem} ({c.describe()})",
            device=self.device, dma_addr=dma_addr,
        )

    def _unlink_locked(self, target: LiveMapping) -> None:
        addr = target.dma_addr
        head = self._live[addr]
        if head is target:
            if target.next is None:
                del self._live[addr]
            else:
                self._live[addr] = target.next
        else:
            m = head
            while m.next is not target:
                assert m.next is not None
                m = m.next
            m.next = target.next
        target.next = None
        gone = self._gone
        gone[addr] = target
        gone.move_to_end(addr)
        if len(gone) > RECENT_UNMAPS:
            gone.popitem(last=False)
