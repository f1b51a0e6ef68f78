"""A first-fit allocator of physical address ranges over ``[0, ram)``.

It stands in for memblock at boot (placing the default bounce pool below 4 GiB, spec §1.5) and
for the page allocator afterwards (CPU buffers, grown pools). A later model replaces it with
zones and a buddy allocator behind the same four calls: :meth:`alloc`, :meth:`free`,
:meth:`reserve`, :meth:`largest_free`. All calls are serialised by one lock.
"""

from __future__ import annotations

import bisect
import threading

from swiotlb.memory import intervals


class RangeError(ValueError):
    """A request the allocator cannot honour; the message names the range involved."""


class OutOfMemory(RangeError):
    """No free range satisfies size, alignment and limit."""


class RangeAllocator:
    """Free ranges kept as sorted, coalesced ``[start, end)`` pairs; first fit from low addresses.

    ``limit`` arguments are *inclusive* highest addresses (like the kernel's ``phys_limit``): an
    allocation ``[a, a + size)`` satisfies ``limit`` when ``a + size - 1 <= limit``.
    """

    def __init__(self, ram: int, *, page_size: int = 4096) -> None:
        if ram <= 0:
            raise ValueError(f"RAM size must be positive, got {ram}")
        if page_size <= 0 or page_size & (page_size - 1):
            raise ValueError(f"page size {page_size} is not a power of two")
        self.ram = ram
        self.page_size = page_size
        self._starts: list[int] = [0]
        self._ends: list[int] = [ram]
        self._allocated: dict[int, int] = {}
        self._reserved: dict[int, int] = {}
        self._lock = threading.Lock()

    # -- queries ---------------------------------------------------------------------------
    @property
    def free_bytes(self) -> int:
        with self._lock:
            return sum(e - s for s, e in zip(self._starts, self._ends))

    def allocations(self) -> dict[int, int]:
        """Live allocations, start -> size."""
        with self._lock:
            return dict(self._allocated)

    def largest_free(self, limit: int | None = None, align: int | None = None) -> int:
        """Size of the largest aligned block that :meth:`alloc` could return under ``limit``."""
        align = align or self.page_size
        top = self.ram if limit is None else min(self.ram, limit + 1)
        best = 0
        with self._lock:
            for s, e in zip(self._starts, self._ends):
                a = -(-s // align) * align
                hi = min(e, top)
                if hi > a:
                    best = max(best, hi - a)
        return best

    # -- changes ---------------------------------------------------------------------------
    def alloc(
        self, size: int, align: int | None = None, limit: int | None = None, *, top_down: bool = False
    ) -> int:
        """An ``align``-aligned free ``size``-byte range ending at or below ``limit``.

        The lowest such range, or with ``top_down`` the highest: memblock allocates from the
        top of the allowed range down, which is why boot pools sit just below their limit.
        """
        if size <= 0:
            raise RangeError(f"allocation size must be positive, got {size}")
        align = align or self.page_size
        if align & (align - 1):
            raise RangeError(f"alignment {align:#x} is not a power of two")
        top = self.ram if limit is None else min(self.ram, limit + 1)
        with self._lock:
            if top_down:
                for i in range(len(self._starts) - 1, -1, -1):
                    s, e = self._starts[i], self._ends[i]
                    a = (min(e, top) - size) & ~(align - 1)
                    if a >= s:
                        self._carve(i, a, a + size)
                        self._allocated[a] = size
                        return a
            else:
                for i, (s, e) in enumerate(zip(self._starts, self._ends)):
                    a = -(-s // align) * align
                    if a + size <= min(e, top):
                        self._carve(i, a, a + size)
                        self._allocated[a] = size
                        return a
                    if s >= top:
                        break
        where = "" if limit is None else f" below {limit:#x}"
        raise OutOfMemory(f"no free {size:#x}-byte range aligned to {align:#x}{where}")

    def free(self, addr: int) -> int:
        """Return the allocation starting at ``addr``; gives back its size."""
        with self._lock:
            size = self._allocated.pop(addr, None)
            if size is None:
                raise RangeError(f"{addr:#x} is not the start of a live allocation")
            self._insert(addr, addr + size)
            return size

    def reserve(self, start: int, size: int) -> None:
        """Take ``[start, start + size)`` out of service for good (firmware, kernel image, holes)."""
        if size <= 0 or start < 0 or start + size > self.ram:
            raise RangeError(f"reserved range [{start:#x}, {start + size:#x}) is outside RAM [0, {self.ram:#x})")
        with self._lock:
            i = bisect.bisect_right(self._starts, start) - 1
            if i < 0 or self._ends[i] < start + size:
                raise RangeError(f"range [{start:#x}, {start + size:#x}) is not entirely free")
            self._carve(i, start, start + size)
            self._reserved[start] = size

    # -- free-list maintenance (lock held) -------------------------------------------------
    def _carve(self, i: int, lo: int, hi: int) -> None:
        intervals.carve(self._starts, self._ends, i, lo, hi)

    def _insert(self, lo: int, hi: int) -> None:
        intervals.insert(self._starts, self._ends, lo, hi)

    def __repr__(self) -> str:
        return f"RangeAllocator(ram={self.ram:#x}, free={self.free_bytes:#x}, allocations={len(self._allocated)})"
