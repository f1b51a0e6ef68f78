"""The page allocator that bounce-pool policies allocate from: zones, CMA, migration, counters.

What it models (Documentation/mm/page_allocator, mm/page_alloc.c, mm/cma.c behaviour):

* **Zone fallback.** ``alloc_pages`` tries the highest zone the flags allow, then lower ones
  (NORMAL -> DMA32 -> DMA). An optional inclusive ``limit`` is honoured inside the buddy search, so a
  too-high result is impossible by construction. (The kernel instead allocates by zone and lets the
  caller check and retry, spec §5.4; a kernel-faithful policy passes the zone flag, no ``limit``, and
  checks.) Orders above MAX_PAGE_ORDER fail (spec §1.5 "Derived"). Watermarks, lowmem reserves and
  reclaim are not modelled: memory is either free or held by its owner.
* **CMA.** A :class:`CmaRegion` is set aside at boot inside one zone. Its free pages are *lent* to
  ``__GFP_MOVABLE`` allocations; like the kernel's ``__rmqueue`` the lender takes CMA first when more
  than half of the zone's free pages are CMA, and falls back to CMA otherwise. ``alloc_contig`` takes
  a range from CMA (``cma_alloc``: first fit, aligned to ``min(order, CMA_ALIGNMENT)`` pages),
  migrating lent pages out of it.
* **Migration** moves a movable block to a newly allocated block and tells the owner through the
  hook it registered with :meth:`PageAllocator.set_migration_hook` (the kernel rewrites the owner's
  page tables). Movable pages of an owner without a hook cannot be moved: they behave like
  long-term pinned pages, a known cause of CMA failures. Each migrated page costs
  ``migrate_cost_ns_per_page`` in :attr:`PageAllocator.stats`. Migration may sleep: ``alloc_contig``
  raises :class:`SleepInAtomicContext` for a non-sleeping ``gfp`` (the kernel's
  ``dma_alloc_contiguous`` refuses such callers), and direct compaction (migrating pages out of one
  naturally aligned block when the buddy lists cannot serve an order > 0) runs only for sleeping
  callers. Outside CMA, ``alloc_contig`` first-fits pageblock-aligned windows holding only free or
  movable pages, like ``alloc_contig_pages``.
* **OOM events.** A failed allocation is never an exception. Where the kernel would invoke the OOM
  killer, the model counts an OOM event: a sleeping ``__GFP_FS`` allocation of order <=
  PAGE_ALLOC_COSTLY_ORDER (3) without a zone modifier (no OOM kills for lowmem) or ``limit``.
* **Fault injection** (optional, modelled on ``fail_page_alloc`` defaults: non-sleeping callers,
  order >= 1): with ``fault_rate`` and an explicit ``rng`` such allocations fail at that rate.

Addresses are bytes; ``limit`` is an inclusive last address, like the kernel's ``phys_limit``.
"""

from __future__ import annotations

import re
import threading
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from swiotlb.memory.buddy import BuddyAllocator, BuddyError, DoubleFree
from swiotlb.memory.gfp import (
    GFP_HIGHUSER_MOVABLE,
    GFP_KERNEL,
    ZONE_MODIFIERS,
    Gfp,
    SleepInAtomicContext,
    check_zone_bits,
    may_sleep,
)
from swiotlb.memory.stats import PageStats as PageStats  # re-exported: it lived here
from swiotlb.memory.zones import Zone, ZoneLayout

PAGE_ALLOC_COSTLY_ORDER = 3  # above this the kernel neither retries hard nor invokes the OOM killer
CMA_ALIGNMENT = 8  # CONFIG_CMA_ALIGNMENT default: CMA allocations align to at most 2**8 pages

MigrationHook = Callable[[int, int, int], None]
"""Called as ``hook(old_phys, new_phys, order)`` after a movable block of its owner moved."""

# Per-page kind map, one byte per pfn. CMA pages carry CMA_BIT on top of their kind.
FREE, ABSENT, RESERVED, UNMOVABLE, MOVABLE, PINNED, CONTIG = range(7)
CMA_BIT = 0x80
_MOVABLE_BIT, _NOWARN_BIT, _FS_BIT = int(Gfp.MOVABLE), int(Gfp.NOWARN), int(Gfp.FS)
_ZONE_BITS = int(ZONE_MODIFIERS)
_GFP_MIGRATE = int(GFP_HIGHUSER_MOVABLE)  # migration targets: any zone, CMA allowed
_KIND_NAMES = ("free", "hole", "reserved", "unmovable", "movable", "pinned", "contig")


class PageError(BuddyError):
    """A free or query that names memory the allocator did not hand out that way."""


class RandomSource(Protocol):
    """``random.Random`` or ``numpy.random.Generator``: anything with ``random() -> float``."""

    def random(self) -> float: ...


@dataclass(frozen=True)
class CmaRegion:
    """A contiguous-memory area reserved at boot: ``[start, start + size)`` bytes, inside one zone."""

    start: int
    size: int
    name: str = "cma"


class _Area:
    """One set of buddy lists: a zone's ordinary pages, or one CMA region."""

    __slots__ = ("name", "zone", "buddy", "tag", "bad")

    def __init__(self, name: str, zone: Zone, buddy: BuddyAllocator, tag: int) -> None:
        self.name = name
        self.zone = zone
        self.buddy = buddy
        self.tag = tag  # CMA_BIT for CMA regions, 0 otherwise
        # pages that cannot be part of a contiguous window: anything but free or movable here
        self.bad = re.compile(b"[^" + re.escape(bytes([tag | FREE, tag | MOVABLE])) + b"]")

    @property
    def is_cma(self) -> bool:
        return bool(self.tag)


class PageAllocator:
    """Zones, CMA regions and the allocation policies built on them; see the module docstring."""

    def __init__(
        self,
        layout: ZoneLayout,
        *,
        cma: Iterable[CmaRegion] = (),
        reserved: Iterable[tuple[int, int]] = (),
        rng: RandomSource | None = None,
        migrate_cost_ns_per_page: int = 2_000,
        compaction: bool = True,
        lend_cma: bool = True,
        fault_rate: float = 0.0,
    ) -> None:
        if not 0.0 <= fault_rate <= 1.0 or (fault_rate and rng is None):
            raise ValueError(f"fault_rate {fault_rate} needs to be in [0, 1] and comes with an explicit rng")
        layout.claim()
        self.layout = layout
        self.page_shift = layout.page_shift
        self.page_size = layout.page_size
        self.max_order = layout.max_page_order
        self.end_pfn = layout.end_pfn
        self.migrate_cost_ns_per_page = migrate_cost_ns_per_page
        self.compaction = compaction
        self.lend_cma = lend_cma
        self.fault_rate = fault_rate
        self.stats = PageStats()
        self._rng = rng
        self._lock = threading.RLock()
        self._kind = bytearray([ABSENT]) * self.end_pfn
        for start, size in layout.ram_ranges:
            s = start >> self.page_shift
            self._kind[s : s + (size >> self.page_shift)] = bytes(size >> self.page_shift)
        self._owner = array("H", bytes(2 * self.end_pfn))  # owner id at each block's head page
        self._owner_names: list[str] = [""]
        self._owner_ids: dict[str, int] = {"": 0}
        self._hooks: dict[str, MigrationHook] = {}
        self._held: Counter[str] = Counter()
        self._contig: dict[int, tuple[int, _Area]] = {}  # head pfn -> (pages, area)
        self._main = [_Area(z.name, z, z.buddy, 0) for z in layout.zones]
        self._cma_by_zone: list[list[_Area]] = [[] for _ in layout.zones]
        self._cma: list[_Area] = []
        self._areas = list(self._main)  # indexed by the per-page area map below
        self._area_idx = bytearray(self.end_pfn)
        self._movable_zonelist = layout.zonelist(GFP_HIGHUSER_MOVABLE)
        for z in layout.zones:
            self._area_idx[z.start_pfn : z.end_pfn] = bytes([z.index]) * (z.end_pfn - z.start_pfn)
        for start, size in reserved:
            self._reserve(start, size)
        for region in sorted(cma, key=lambda r: r.start):
            self._add_cma(region)

    # -- owners ----------------------------------------------------------------------------
    def set_migration_hook(self, owner: str, hook: MigrationHook) -> None:
        """Let ``owner``'s future movable allocations be migrated; ``hook`` learns each move."""
        with self._lock:
            self._hooks[owner] = hook
            self._owner_id(owner)

    def bytes_by_owner(self) -> dict[str, int]:
        """Bytes currently held per owner (contiguous allocations included)."""
        with self._lock:
            return {k: v for k, v in self._held.items() if v}

    # -- allocation ------------------------------------------------------------------------
    def alloc_pages(
        self, order: int, gfp: Gfp | int = GFP_KERNEL, *, limit: int | None = None, owner: str = ""
    ) -> int | None:
        """``2**order`` contiguous pages at a naturally aligned address, or None (counted)."""
        gfp = int(gfp)
        if order < 0:
            raise ValueError(f"negative order {order}")
        zonelist = self.layout.zonelist(gfp)
        top = zonelist[0]
        with self._lock:
            if order > self.max_order:
                self._fail(top, order, gfp, limit, owner)
                return None
            if self.fault_rate and not may_sleep(gfp) and order >= 1 and self._rng is not None:
                if self._rng.random() < self.fault_rate:
                    self.stats.injected_failures += 1
                    self._fail(top, order, gfp, limit, owner)
                    return None
            below = None if limit is None else (limit + 1) >> self.page_shift
            got = self._rmqueue(order, gfp, below, zonelist)
            if got is None and order > 0 and self.compaction and may_sleep(gfp):
                got = self._compact(order, zonelist, below)
            if got is None:
                self._fail(top, order, gfp, limit, owner)
                return None
            pfn, area = got
            if gfp & _MOVABLE_BIT:
                kind = MOVABLE if owner in self._hooks else PINNED
            else:
                kind = UNMOVABLE
            self._set_kind(pfn, 1 << order, area.tag | kind)
            self._owner[pfn] = self._owner_id(owner)
            self._held[owner] += self.page_size << order
            self.stats.allocations[(area.zone.name, order)] += 1
            if area.is_cma:
                self.stats.cma_lent += 1
            return pfn << self.page_shift

    def free_pages(self, phys: int, order: int) -> None:
        """Give back a block from :meth:`alloc_pages`; errors name the address and order."""
        with self._lock:
            pfn = self._pfn(phys)
            kind = self._kind[pfn] & ~CMA_BIT
            if kind == CONTIG:
                raise PageError(f"{phys:#x} belongs to a contiguous allocation; free it with free_contig()")
            if kind == FREE:
                raise DoubleFree(f"double free of {phys:#x} (order {order}): the page is already free")
            if kind not in (UNMOVABLE, MOVABLE, PINNED):
                raise PageError(f"{phys:#x} is {_KIND_NAMES[kind]} memory, never allocated")
            area = self._area_of(pfn)
            try:
                area.buddy.free(pfn, order)
            except BuddyError as exc:
                raise type(exc)(f"free_pages({phys:#x}, order {order}): {exc}") from None
            self._set_kind(pfn, 1 << order, area.tag | FREE)
            self._held[self._owner_names[self._owner[pfn]]] -= self.page_size << order
            self.stats.frees += 1

    def alloc_contig(
        self,
        nbytes: int,
        *,
        limit: int | None = None,
        gfp: Gfp | int = GFP_KERNEL,
        owner: str = "",
        cma_only: bool = False,
    ) -> int | None:
        """A physically contiguous, page-aligned buffer of any size (beyond MAX_PAGE_ORDER too).

        CMA regions are tried first (lowest first); then, unless ``cma_only``, pageblock-aligned
        windows in the allowed zones, migrating movable pages out. Requires a sleeping ``gfp``.
        """
        if nbytes <= 0:
            raise ValueError(f"contiguous allocation size must be positive, got {nbytes}")
        check_zone_bits(gfp)
        if not may_sleep(gfp):
            raise SleepInAtomicContext(
                f"alloc_contig({nbytes:#x}) may migrate pages and sleep, but gfp {Gfp(gfp)!r} cannot sleep"
            )
        npages = -(-nbytes // self.page_size)
        order = (npages - 1).bit_length()
        below = None if limit is None else (limit + 1) >> self.page_shift
        with self._lock:
            top = self.layout.highest_zone(gfp).index
            tries: list[tuple[_Area, int]] = [
                (a, 1 << min(order, CMA_ALIGNMENT)) for a in self._cma if a.zone.index <= top
            ]
            if not cma_only:
                step = 1 << min(order, self.layout.pageblock_order)
                tries += [(self._main[z.index], step) for z in self.layout.zonelist(gfp)]
            for area, align in tries:
                pfn = self._find_and_evacuate(area, npages, align, below)
                if pfn is not None:
                    self._set_kind(pfn, npages, area.tag | CONTIG)
                    self._owner[pfn] = self._owner_id(owner)
                    self._contig[pfn] = (npages, area)
                    self._held[owner] += npages << self.page_shift
                    self.stats.contig_allocations += 1
                    return pfn << self.page_shift
            self.stats.contig_failures += 1
            return None

    def free_contig(self, phys: int) -> None:
        """Give back a buffer from :meth:`alloc_contig`."""
        with self._lock:
            pfn = self._pfn(phys)
            rec = self._contig.pop(pfn, None)
            if rec is None:
                raise PageError(f"{phys:#x} is not the start of a contiguous allocation")
            npages, area = rec
            area.buddy.release_range(pfn, npages)
            self._set_kind(pfn, npages, area.tag | FREE)
            self._held[self._owner_names[self._owner[pfn]]] -= npages << self.page_shift
            self.stats.frees += 1

    # -- queries ---------------------------------------------------------------------------
    def free_bytes(self, limit: int | None = None, *, include_cma: bool = True) -> int:
        """Free bytes below an inclusive ``limit`` (CMA pages count: they are free, if lent out)."""
        below = self.end_pfn if limit is None else (limit + 1) >> self.page_shift
        with self._lock:
            areas = self._main + (self._cma if include_cma else [])
            pages = sum(a.buddy.free_pages_in(a.buddy.base_pfn, below) for a in areas)
        return pages << self.page_shift

    def largest_contiguous(self, limit: int | None = None, *, include_cma: bool = True) -> int:
        """Bytes in the longest run of free pages inside one zone or CMA region below ``limit``."""
        below = self.end_pfn if limit is None else (limit + 1) >> self.page_shift
        with self._lock:
            areas = self._main + (self._cma if include_cma else [])
            best = max((a.buddy.longest_free_run(a.buddy.base_pfn, below) for a in areas), default=0)
        return best << self.page_shift

    def largest_free_order(self, limit: int | None = None) -> int | None:
        """Highest order ``alloc_pages`` could serve from free lists now (no CMA, no compaction)."""
        below = None if limit is None else (limit + 1) >> self.page_shift
        with self._lock:
            orders = [a.buddy.largest_free_order(below=below) for a in self._main]
        return max((o for o in orders if o is not None), default=None)

    def buddyinfo(self) -> dict[str, list[int]]:
        """Free blocks per order for each zone and CMA region (``/proc/buddyinfo``)."""
        with self._lock:
            return {a.name: a.buddy.free_blocks_by_order() for a in self._main + self._cma}

    def page_kind(self, phys: int) -> str:
        """What the page at ``phys`` is: free, hole, reserved, unmovable, movable, pinned, contig."""
        return _KIND_NAMES[self._kind[self._pfn(phys, aligned=False)] & ~CMA_BIT]

    def in_cma(self, phys: int) -> bool:
        return bool(self._kind[self._pfn(phys, aligned=False)] & CMA_BIT)

    @property
    def total_bytes(self) -> int:
        return self.layout.ram_bytes

    def check(self) -> None:
        """Raise AssertionError unless the buddy lists, the page-kind map and the per-owner
        byte counts agree (tests and debugging)."""
        with self._lock:
            for a in self._areas:
                a.buddy.check()
                lo, hi = a.buddy.base_pfn, a.buddy.end_pfn
                assert self._kind.count(a.tag | FREE, lo, hi) == a.buddy.free_pages, f"{a.name}: kind map disagrees"
            ram_pages = self.layout.ram_bytes >> self.page_shift
            free = sum(a.buddy.free_pages for a in self._areas)
            held = ram_pages - free - self._kind.count(RESERVED)
            assert sum(self._held.values()) == held << self.page_shift, "owner byte counts disagree"

    # -- internals -------------------------------------------------------------------------
    def _pfn(self, phys: int, *, aligned: bool = True) -> int:
        if phys < 0 or phys >> self.page_shift >= self.end_pfn:
            raise PageError(f"address {phys:#x} is outside RAM [0, {self.end_pfn << self.page_shift:#x})")
        if aligned and phys & (self.page_size - 1):
            raise PageError(f"address {phys:#x} is not page aligned")
        return phys >> self.page_shift

    def _owner_id(self, owner: str) -> int:
        oid = self._owner_ids.get(owner)
        if oid is None:
            if len(self._owner_names) >= 1 << 16:
                raise ValueError("more than 65535 distinct allocation owners")
            oid = self._owner_ids[owner] = len(self._owner_names)
            self._owner_names.append(owner)
        return oid

    def _set_kind(self, pfn: int, n: int, value: int) -> None:
        if n == 1:
            self._kind[pfn] = value
        else:
            self._kind[pfn : pfn + n] = bytes([value]) * n

    def _area_of(self, pfn: int) -> _Area:
        return self._areas[self._area_idx[pfn]]

    def _candidates(self, zone: Zone, movable: bool) -> Sequence[_Area]:
        main = self._main[zone.index]
        cmas = self._cma_by_zone[zone.index]
        if not (movable and self.lend_cma and cmas):
            return (main,)
        cma_free = sum(a.buddy.free_pages for a in cmas)
        if 2 * cma_free > cma_free + main.buddy.free_pages:
            return (*cmas, main)
        return (main, *cmas)

    def _rmqueue(self, order: int, gfp: int, below: int | None, zonelist: Sequence[Zone]) -> tuple[int, _Area] | None:
        movable = bool(gfp & _MOVABLE_BIT)
        for zone in zonelist:
            if below is not None and zone.start_pfn + (1 << order) > below:
                continue
            for area in self._candidates(zone, movable):
                pfn = area.buddy.alloc(order, below=below)
                if pfn is not None:
                    return pfn, area
        return None

    def _fail(self, top: Zone, order: int, gfp: Gfp | int, limit: int | None, owner: str) -> None:
        self.stats.failures[(top.name, order)] += 1
        if not int(gfp) & _NOWARN_BIT:
            self.stats.warnings += 1
        g = int(gfp)
        if may_sleep(g) and g & _FS_BIT and order <= PAGE_ALLOC_COSTLY_ORDER and not g & _ZONE_BITS and limit is None:
            self.stats.oom_events += 1
            self.stats.oom_by_owner[owner] += 1

    def _compact(self, order: int, zonelist: Sequence[Zone], below: int | None) -> tuple[int, _Area] | None:
        """Direct compaction: empty one naturally aligned block by migrating movable pages."""
        self.stats.compactions += 1
        n = 1 << order
        for zone in zonelist:
            area = self._main[zone.index]
            pfn = self._find_and_evacuate(area, n, n, below)
            if pfn is not None:
                area.buddy.claim(pfn, order)
                self.stats.compaction_successes += 1
                return pfn, area
        return None

    def _find_and_evacuate(self, area: _Area, npages: int, align: int, below: int | None) -> int | None:
        """First ``align``-aligned window of ``npages`` free-or-movable pages in ``area`` that
        can be emptied; on success its pages are taken out of the buddy lists."""
        lo, hi = area.buddy.base_pfn, area.buddy.end_pfn
        if below is not None:
            hi = min(hi, below)
        if hi - lo < npages:
            return None
        usable = area.buddy.free_pages_in(lo, hi) + self._kind.count(area.tag | MOVABLE, lo, hi)
        if usable < npages:
            return None
        s = -(-lo // align) * align
        while s + npages <= hi:
            m = area.bad.search(self._kind, s, s + npages)
            if m is not None:
                s = (m.start() // align + 1) * align
                continue
            if self._evacuate(area, s, npages):
                return s
            return None  # no room left for migration targets: other windows would fail alike
        return None

    def _evacuate(self, area: _Area, start: int, npages: int) -> bool:
        """Take the free pages of ``[start, start + npages)`` and migrate its movable blocks away."""
        buddy, end = area.buddy, start + npages
        taken: list[tuple[int, int]] = []
        moved: list[tuple[MigrationHook, int, int, int]] = []
        try:
            for p, n in buddy.free_runs(start, end):
                buddy.take_range(p, n)
                taken.append((p, n))
            for head, order in buddy.allocated_blocks(start, end):
                dst = self._rmqueue(order, _GFP_MIGRATE, None, self._movable_zonelist)
                if dst is None:
                    for p, n in taken:
                        buddy.release_range(p, n)
                    return False
                moved.append(self._migrate(area, head, order, *dst))
                a, b = max(head, start), min(head + (1 << order), end)
                buddy.take_range(a, b - a)
                taken.append((a, b - a))
            return True
        finally:  # owners learn of moves only once the window is settled
            for hook, old, new, order in moved:
                hook(old, new, order)

    def _migrate(
        self, area: _Area, head: int, order: int, dst: int, dst_area: _Area
    ) -> tuple[MigrationHook, int, int, int]:
        """Move one movable block; returns the owner's hook call to make afterwards."""
        n = 1 << order
        oid = self._owner[head]
        area.buddy.free(head, order)
        self._set_kind(head, n, area.tag | FREE)
        self._set_kind(dst, n, dst_area.tag | MOVABLE)
        self._owner[dst] = oid
        if dst_area.is_cma:
            self.stats.cma_lent += 1
        self.stats.migrated_pages += n
        self.stats.migration_cost_ns += n * self.migrate_cost_ns_per_page
        return self._hooks[self._owner_names[oid]], head << self.page_shift, dst << self.page_shift, order

    def free_reserved(self, start: int, size: int) -> None:
        """Give a range reserved at boot to the buddy allocator (``free_reserved_area``): how a
        boot-time bounce pool's memory returns when it is no longer wanted. Every page must
        be reserved; the error names the first that is not."""
        if size <= 0 or start < 0 or start % self.page_size or size % self.page_size:
            raise ValueError(f"reserved range [{start:#x}, +{size:#x}) is empty or not page-aligned")
        lo, hi = start >> self.page_shift, (start + size) >> self.page_shift
        with self._lock:
            if hi > self.end_pfn:
                raise PageError(f"[{start:#x}, {start + size:#x}) extends past the end of RAM")
            for pfn in range(lo, hi):
                if self._kind[pfn] != RESERVED:
                    raise PageError(f"{pfn << self.page_shift:#x} is {_KIND_NAMES[self._kind[pfn] & ~CMA_BIT]} "
                                    "memory, not reserved at boot")
            for area in self._main:
                a, b = max(lo, area.zone.start_pfn), min(hi, area.zone.end_pfn)
                if a < b:
                    area.buddy.release_range(a, b - a)
                    self._set_kind(a, b - a, area.tag | FREE)

    def _reserve(self, start: int, size: int) -> None:
        if size <= 0 or start < 0:
            raise ValueError(f"reserved range [{start:#x}, +{size:#x}) is empty or negative")
        lo = start >> self.page_shift
        hi = min(self.end_pfn, -(-(start + size) // self.page_size))
        for area in self._main:
            for p, n in area.buddy.free_runs(lo, hi):
                area.buddy.take_range(p, n)
                self._set_kind(p, n, RESERVED)

    def _add_cma(self, region: CmaRegion) -> None:
        start, size, ps = region.start, region.size, self.page_size
        if size <= 0 or start < 0 or start % ps or size % ps:
            raise ValueError(f"CMA region {region.name} [{start:#x}, +{size:#x}) is not a non-empty page-aligned range")
        lo, n = start >> self.page_shift, size >> self.page_shift
        if lo + n > self.end_pfn:
            raise ValueError(f"CMA region {region.name} [{start:#x}, {start + size:#x}) extends beyond RAM")
        zone = self.layout.zone_of(start)
        where = f"CMA region {region.name} [{start:#x}, {start + size:#x})"
        if lo + n > zone.end_pfn:
            raise ValueError(f"{where} spans {zone.name} and the next zone")
        try:
            zone.buddy.take_range(lo, n)
        except BuddyError as exc:
            raise ValueError(f"{where} is not free RAM: {exc}") from None
        area = _Area(f"{region.name}@{start:#x}", zone, BuddyAllocator(lo, n, self.max_order), CMA_BIT)
        self._set_kind(lo, n, CMA_BIT | FREE)
        self._cma.append(area)
        self._cma_by_zone[zone.index].append(area)
        self._area_idx[lo : lo + n] = bytes([len(self._areas)]) * n
        self._areas.append(area)

    def __repr__(self) -> str:
        return (
            f"PageAllocator(ram={self.layout.ram_bytes:#x}, free={self.free_bytes():#x}, "
            f"zones={[z.name for z in self.layout.zones]}, cma={len(self._cma)})"
        )
