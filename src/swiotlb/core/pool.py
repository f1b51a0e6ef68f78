"""Slots, areas and pools: the kernel's ``io_tlb_slot``, ``io_tlb_area`` and ``io_tlb_pool``.

Slot state is kept column-wise (spec §2.1) because the hot paths touch runs of slots:

* ``list`` is a ``bytearray``: the free-run length of each slot inside its 128-slot segment
  (0 = in use). Values never exceed 128, so a byte holds them and C-level slice assignment,
  ``rfind`` and ``re`` searches work on it directly.
* The kernel writes ``orig_addr`` and ``alloc_size`` into every slot of an allocation, but
  those values are an arithmetic function of the allocation's first slot (slot ``k`` holds
  ``orig + 2048*k`` and ``alloc_size - 2048*k``). We store them once, at the allocation's
  first slot (``head_*``), mark that slot in ``heads``, and derive the per-slot values on
  demand (:meth:`IoTlbPool.slot_orig_addr`, :meth:`IoTlbPool.slot_alloc_size`). Allocations
  never cross a segment, so the first slot of any in-use slot is one ``rfind`` away. This
  keeps map and unmap O(1) in Python objects whatever the mapping size.
* ``pad_slots`` is kept as the kernel keeps it: on the first data slot of an allocation.

Each area also keeps a two-level *upper-bound index* over its segments (the largest free run a
segment, or a block of 64 segments, may hold). It never changes a decision; it only lets a
search skip segments that cannot hold the request (see :mod:`swiotlb.core.search`).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

from swiotlb.core.constants import (
    INVALID_PHYS_ADDR,
    IO_TLB_SEGSIZE,
    IO_TLB_SHIFT,
    IO_TLB_SIZE,
    is_power_of_two,
)

SEGS_PER_BLOCK = 64
_BUSY_SEGMENTS = re.compile(rb"[^\x80]+")  # consecutive segments not wholly free (first slot not 128)
_SEGMENT_RUN = bytes(range(IO_TLB_SEGSIZE, 0, -1))  # a free segment's list: 128, 127, ..., 1


class PoolLayoutError(ValueError):
    """A pool or area layout the kernel could not produce."""


@dataclass(eq=False, slots=True)
class IoTlbArea:
    """One area: a next-fit cursor, a used count and a lock (spec §2.2).

    Slotted: the map and unmap paths read and write these fields on every call.
    """

    index: int = 0
    used: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    segub: bytearray = field(default_factory=bytearray, repr=False)
    blkub: bytearray = field(default_factory=bytearray, repr=False)


class IoTlbPool:
    """A contiguous run of slots with its areas (spec §2.3, §2.6).

    ``start`` is the physical (and, in this model, DMA) address of slot 0; it must be page
    aligned. ``list_capped`` selects the >= 6.7 initialisation that caps free runs at the pool
    end (only visible in pools whose size is not a multiple of 128 slots).
    """

    __slots__ = (
        "start",
        "end",
        "nslabs",
        "nareas",
        "area_nslabs",
        "areas",
        "list",
        "view",
        "heads",
        "head_orig_addr",
        "head_alloc_size",
        "head_pad",
        "head_nslots",
        "pad_slots",
        "late_alloc",
        "transient",
        "dead",
        "list_capped",
        "name",
    )

    def __init__(
        self,
        start: int,
        nslabs: int,
        nareas: int = 1,
        *,
        late_alloc: bool = False,
        transient: bool = False,
        list_capped: bool = True,
        name: str = "",
    ) -> None:
        if start < 0 or start % 4096:
            raise PoolLayoutError(f"pool start {start:#x} is not a page-aligned address")
        if nslabs <= 0:
            raise PoolLayoutError(f"pool needs at least one slot, got nslabs={nslabs}")
        if not is_power_of_two(nareas):
            raise PoolLayoutError(f"nareas={nareas} is not a power of two")
        if nslabs % nareas:
            raise PoolLayoutError(f"nslabs={nslabs} is not divisible by nareas={nareas}")
        if nareas > 1 and (nslabs // nareas) % IO_TLB_SEGSIZE:
            raise PoolLayoutError(
                f"area size {nslabs // nareas} slots is not a multiple of {IO_TLB_SEGSIZE}: "
                "a segment would straddle two areas"
            )
        self.start = start
        self.nslabs = nslabs
        self.end = start + nslabs * IO_TLB_SIZE
        self.nareas = nareas
        self.area_nslabs = nslabs // nareas
        self.late_alloc = late_alloc
        self.transient = transient
        self.dead = False  # set under every area lock when the pool leaves its allocator
        self.list_capped = list_capped
        self.name = name
        self.list = self._initial_list(nslabs)
        self.view = memoryview(self.list)  # same bytes; slice stores through it are cheaper
        self.heads = bytearray(nslabs)  # 1 at the first slot of every live allocation
        self.head_orig_addr = [INVALID_PHYS_ADDR] * nslabs  # orig_addr of the first data slot
        self.head_alloc_size = [0] * nslabs  # alloc_size of the first (pad or data) slot
        self.head_pad = bytearray(nslabs)  # padding slots in front of the data
        self.head_nslots = bytearray(nslabs)  # slots held (<= 128)
        self.pad_slots = [0] * nslabs
        self.areas = [IoTlbArea() for _ in range(nareas)]
        for a, area in enumerate(self.areas):
            self._reset_index(a, area)

    def _initial_list(self, nslabs: int) -> bytearray:
        """Every segment one free run: 128, 127, ..., 1, built from whole-segment byte copies.

        A trailing partial segment of ``t`` slots counts down from 128 (the kernel before 6.7)
        or, capped at the pool end, from ``t``.
        """
        full, tail = divmod(nslabs, IO_TLB_SEGSIZE)
        lst = bytearray(_SEGMENT_RUN * full)
        if tail:
            lst += _SEGMENT_RUN[IO_TLB_SEGSIZE - tail :] if self.list_capped else _SEGMENT_RUN[:tail]
        return lst

    def _reset_index(self, a: int, area: IoTlbArea) -> None:
        base = a * self.area_nslabs
        nsegs = -(-self.area_nslabs // IO_TLB_SEGSIZE)
        lst = self.list
        area.segub = bytearray(
            max(lst[base + (s << 7) : base + min((s + 1) << 7, self.area_nslabs)])
            for s in range(nsegs)
        )
        nblocks = -(-nsegs // SEGS_PER_BLOCK)
        area.blkub = bytearray(
            max(area.segub[b * SEGS_PER_BLOCK : (b + 1) * SEGS_PER_BLOCK]) for b in range(nblocks)
        )

    # -- addresses -------------------------------------------------------------------------
    def contains(self, paddr: int) -> bool:
        return self.start <= paddr < self.end

    def slot_addr(self, index: int) -> int:
        return self.start + (index << IO_TLB_SHIFT)

    def area_of(self, index: int) -> int:
        return index // self.area_nslabs

    # -- per-slot kernel fields, derived from the allocation's first slot ------------------
    def allocation_start(self, index: int) -> int:
        """First slot of the live allocation holding slot ``index``, or -1 if it is free."""
        if self.list[index]:
            return -1
        return self.heads.rfind(1, index & -IO_TLB_SEGSIZE, index + 1)

    def slot_alloc_size(self, index: int) -> int:
        """``slots[index].alloc_size`` as the kernel has it (0 for a free slot)."""
        head = self.allocation_start(index)
        if head < 0:
            return 0
        return self.head_alloc_size[head] - ((index - head) << IO_TLB_SHIFT)

    def slot_orig_addr(self, index: int) -> int:
        """``slots[index].orig_addr`` (INVALID_PHYS_ADDR for free and padding slots)."""
        head = self.allocation_start(index)
        if head < 0:
            return INVALID_PHYS_ADDR
        data = head + self.head_pad[head]
        orig = self.head_orig_addr[head]
        if index < data or orig == INVALID_PHYS_ADDR:
            return INVALID_PHYS_ADDR
        return orig + ((index - data) << IO_TLB_SHIFT)

    @property
    def used(self) -> int:
        """Slots in use over all areas (unlocked sum, like the kernel's ``mem_used``)."""
        return sum(a.used for a in self.areas)

    # -- observation -----------------------------------------------------------------------
    def used_between(self, lo: int, hi: int) -> int:
        """Slots in use among slots ``[lo, hi)``: a picture of where in the pool the mappings lie."""
        return self.list.count(0, lo, hi)

    def free_run_stats(self) -> tuple[int, int]:
        """``(free runs, slots in the longest free run)``, as the allocator sees them.

        Runs are counted within segments, because no allocation crosses one: two free segments
        side by side are two runs of 128. Fragmentation shows as many runs and a short longest
        run. Both come from C-level scans of ``list`` (a run's last slot holds 1, and a run of
        ``k`` slots holds every count from ``k`` down to 1), so a simulator can sample them often.
        A wholly free segment (first slot 128) is one run, so only the spans of other segments
        are scanned: a 1 GiB pool that is mostly free costs little.
        """
        lst, n = self.list, self.nslabs
        cut = n if self.list_capped else n - n % IO_TLB_SEGSIZE  # an uncapped tail counts past the end
        firsts = lst[0:cut:IO_TLB_SEGSIZE]
        runs = firsts.count(IO_TLB_SEGSIZE)
        for m in _BUSY_SEGMENTS.finditer(firsts):
            runs += lst.count(1, m.start() * IO_TLB_SEGSIZE, min(m.end() * IO_TLB_SEGSIZE, cut))
        longest, hi = 0, IO_TLB_SEGSIZE
        while longest < hi:  # the largest count present: presence is monotone in the count
            mid = (longest + hi + 1) >> 1
            if lst.find(mid, 0, cut) >= 0:
                longest = mid
            else:
                hi = mid - 1
        run = 0
        for i in range(cut, n):  # the uncapped tail, slot by slot (fewer than 128 slots)
            run = run + 1 if lst[i] else 0
            runs += run == 1
            longest = max(longest, run)
        return runs, longest

    # -- checks ----------------------------------------------------------------------------
    def free_run_errors(self) -> list[str]:
        """Where the ``list`` encoding breaks the invariant of spec §2.1 (empty when sound)."""
        errors: list[str] = []
        lst = self.list
        n = self.nslabs
        seg = IO_TLB_SEGSIZE
        for i in range(n - 1, -1, -1):
            if lst[i] == 0:
                continue
            last_in_seg = (i % seg) == seg - 1 or i == n - 1
            nxt = 0 if last_in_seg else lst[i + 1]
            if not self.list_capped and i == n - 1 and (i % seg) != seg - 1:
                nxt = lst[i] - 1  # uncapped tail of a partial segment: accept the kernel's value
            if lst[i] != nxt + 1:
                errors.append(f"slot {i}: list={lst[i]} but next free run is {nxt}")
                if len(errors) > 10:
                    break
        for a, area in enumerate(self.areas):
            base = a * self.area_nslabs
            in_use = lst.count(0, base, base + self.area_nslabs)  # the slots whose free run is 0
            if in_use != area.used:
                errors.append(f"area {a}: used={area.used} but {in_use} slots are in use")
            segub = area.segub
            for s in range(len(segub)):  # not enumerate(segub): mypyc cannot iterate a bytearray
                ub = segub[s]
                lo = base + (s << 7)
                hi = base + min((s + 1) << 7, self.area_nslabs)
                if max(lst[lo:hi]) > ub:
                    errors.append(f"area {a} segment {s}: index bound {ub} below a free run")
        return errors

    def __repr__(self) -> str:
        return (
            f"IoTlbPool(start={self.start:#x}, nslabs={self.nslabs}, nareas={self.nareas}"
            f"{', transient' if self.transient else ''})"
        )
