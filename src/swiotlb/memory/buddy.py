"""A binary buddy allocator over a range of page frame numbers.

The kernel hands out physically contiguous memory in blocks of ``2**order`` pages aligned to
their own size, splits a larger block when no block of the wanted order is free, and merges a
freed block with its *buddy* (the other half of the parent, ``pfn ^ (1 << order)``) whenever both
are free, up to ``MAX_PAGE_ORDER`` (Documentation/mm/page_allocator and the "buddy system" of
Knuth, TAOCP vol. 1 §2.5). Dynamic SWIOTLB pools come from it, so its contiguity limits and its
fragmentation decide whether a pool can grow (spec §5.4: orders above MAX_PAGE_ORDER always fail).

Model choices: among the free blocks of the smallest order that fits, the lowest address is
taken, so runs are deterministic (the kernel takes the head of a per-order list, whose order
depends on history). Pages that are not RAM (holes, reservations) are simply never released into
the allocator. Alignment is absolute (``pfn % 2**order == 0``), as in the kernel.

Data layout: three ``bytearray`` maps with one byte per page (free page; order + 1 of a free block
starting here; order + 1 of an allocated block starting here) and one lazily cleaned min-heap of
block starts per order. ``alloc`` and ``free`` cost O(max_order) Python steps plus a heap
operation; range checks use C-level ``bytearray.find``/``re``. A 16 GiB guest (4 Mi pages) costs
12 MiB of maps and is seeded with maximal aligned blocks, not page by page.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterator

_NONZERO = re.compile(rb"[^\x00]")


class BuddyError(ValueError):
    """A request the allocator cannot honour as asked; the message names the pfn and order."""


class DoubleFree(BuddyError):
    """A block (or range) was given back while its pages were already free."""


def aligned_blocks(pfn: int, npages: int, max_order: int) -> Iterator[tuple[int, int]]:
    """Split ``[pfn, pfn + npages)`` into the fewest naturally aligned blocks of order <= max_order.

    Greedy from the left: at each start take the largest aligned block that still fits. Two
    consecutive blocks are never buddies unless both have ``max_order``.
    """
    p, end = pfn, pfn + npages
    while p < end:
        k = max_order if p == 0 else min(max_order, (p & -p).bit_length() - 1)
        while p + (1 << k) > end:
            k -= 1
        yield p, k
        p += 1 << k


class BuddyAllocator:
    """Blocks of ``2**order`` pages (``0 <= order <= max_order``) over ``[base_pfn, base_pfn + npages)``.

    With ``populate`` (the default) every page starts free; otherwise the allocator starts empty
    and :meth:`release_range` hands it the RAM ranges, as boot code frees memblock memory into the
    buddy lists.
    """

    __slots__ = (
        "base_pfn",
        "npages",
        "end_pfn",
        "max_order",
        "_free",
        "_fhead",
        "_ahead",
        "_heaps",
        "_nfree",
        "_free_pages",
        "_zeros",
        "_ones",
    )

    def __init__(self, base_pfn: int, npages: int, max_order: int, *, populate: bool = True) -> None:
        if base_pfn < 0 or npages < 0:
            raise BuddyError(f"invalid pfn range: base {base_pfn:#x}, {npages} pages")
        if not 0 <= max_order <= 63:
            raise BuddyError(f"max_order {max_order} is outside 0..63")
        self.base_pfn = base_pfn
        self.npages = npages
        self.end_pfn = base_pfn + npages
        self.max_order = max_order
        self._free = bytearray(npages)  # 1 = page is free
        self._fhead = bytearray(npages)  # order + 1 where a free block starts
        self._ahead = bytearray(npages)  # order + 1 where an allocated block starts
        self._heaps: list[list[int]] = [[] for _ in range(max_order + 1)]
        self._nfree = [0] * (max_order + 1)
        self._free_pages = 0
        self._zeros = [bytes(1 << k) for k in range(max_order + 1)]
        self._ones = [b"\x01" * (1 << k) for k in range(max_order + 1)]
        if populate and npages:
            self.release_range(base_pfn, npages)

    # -- queries ---------------------------------------------------------------------------
    @property
    def free_pages(self) -> int:
        return self._free_pages

    def free_blocks_by_order(self) -> list[int]:
        """Number of free blocks at each order, index = order (``/proc/buddyinfo`` for one zone)."""
        return list(self._nfree)

    def largest_free_order(self, *, below: int | None = None) -> int | None:
        """Highest order with a free block (ending at or before pfn ``below``), or None."""
        for k in range(self.max_order, -1, -1):
            if self._nfree[k] and (below is None or self._lowest(k) + (1 << k) <= below):
                return k
        return None

    def free_blocks(self) -> list[tuple[int, int]]:
        """All free blocks as sorted ``(pfn, order)`` pairs."""
        fh = self._fhead
        return [(self.base_pfn + m.start(), fh[m.start()] - 1) for m in _NONZERO.finditer(fh)]

    def free_runs(self, lo: int | None = None, hi: int | None = None) -> list[tuple[int, int]]:
        """Maximal runs of free pages in ``[lo, hi)`` as ``(pfn, npages)``, ignoring block edges."""
        b = self.base_pfn
        i = 0 if lo is None else max(0, lo - b)
        j = self.npages if hi is None else min(self.npages, hi - b)
        runs: list[tuple[int, int]] = []
        f = self._free
        while i < j:
            s = f.find(1, i, j)
            if s < 0:
                break
            e = f.find(0, s, j)
            e = j if e < 0 else e
            runs.append((b + s, e - s))
            i = e
        return runs

    def longest_free_run(self, lo: int, hi: int) -> int:
        """Length in pages of the longest run of free pages inside ``[lo, hi)``.

        Each step looks for a run longer than the best so far with ``bytearray.find``, so a
        fragmented range costs C-level scans, not one Python step per run."""
        i, j = max(0, lo - self.base_pfn), min(self.npages, hi - self.base_pfn)
        best = 0
        if i == 0 and j > 0:  # the largest free block below hi is a lower bound
            k = self.largest_free_order(below=self.base_pfn + j)
            best = 0 if k is None else 1 << k
        f = self._free
        while i < j:
            s = f.find(b"\x01" * (best + 1), i, j)
            if s < 0:
                break
            e = f.find(0, s, j)
            e = j if e < 0 else e
            best, i = e - s, e
        return best

    def free_pages_in(self, lo: int, hi: int) -> int:
        """Free pages with pfn in ``[lo, hi)``."""
        i, j = max(0, lo - self.base_pfn), min(self.npages, hi - self.base_pfn)
        return self._free.count(1, i, j) if i < j else 0

    def is_free(self, pfn: int) -> bool:
        i = pfn - self.base_pfn
        return 0 <= i < self.npages and self._free[i] == 1

    def allocated_block(self, pfn: int) -> tuple[int, int] | None:
        """``(head_pfn, order)`` of the allocated block holding ``pfn``, or None."""
        b, ah = self.base_pfn, self._ahead
        for k in range(self.max_order + 1):
            h = pfn & ~((1 << k) - 1)
            if b <= h < self.end_pfn and ah[h - b] == k + 1:
                return h, k
        return None

    def allocated_blocks(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """Allocated blocks (from :meth:`alloc`) overlapping ``[lo, hi)``, sorted by pfn."""
        b, ah = self.base_pfn, self._ahead
        i, j = max(0, lo - b), min(self.npages, hi - b)
        out: list[tuple[int, int]] = []
        first = self.allocated_block(lo)
        if first is not None and first[0] < lo:
            out.append(first)
        out.extend((b + m.start(), ah[m.start()] - 1) for m in _NONZERO.finditer(ah, i, max(i, j)))
        return out

    def unusable_index(self, order: int) -> float:
        """Share of free memory unusable for an ``order`` allocation (the kernel's debugfs
        ``unusable_index``, mm/vmstat.c): ``(free - free_in_blocks_of_order>=k) / free``."""
        self._check_order(order)
        if self._free_pages == 0:
            return 0.0
        suitable = sum(self._nfree[k] << k for k in range(order, self.max_order + 1))
        return (self._free_pages - suitable) / self._free_pages

    # -- allocation ------------------------------------------------------------------------
    def alloc(self, order: int, *, below: int | None = None) -> int | None:
        """Allocate ``2**order`` pages; returns the first pfn or None.

        The lowest free block of the smallest order that fits is split down to ``order``; the
        lower half is kept at each split. With ``below``, the block must end at or before that
        pfn (for callers with an address limit); larger orders are tried when the lowest block
        of a smaller order lies too high.
        """
        self._check_order(order)
        size = 1 << order
        for k in range(order, self.max_order + 1):
            if not self._nfree[k]:
                continue
            p = self._lowest(k)
            if below is not None and p + size > below:
                continue
            heapq.heappop(self._heaps[k])
            i = p - self.base_pfn
            self._fhead[i] = 0
            self._nfree[k] -= 1
            for j in range(k - 1, order - 1, -1):  # give back the upper halves
                self._push(p + (1 << j), j)
            self._ahead[i] = order + 1
            if order:
                self._free[i : i + size] = self._zeros[order]
            else:
                self._free[i] = 0
            self._free_pages -= size
            return p
        return None

    def free(self, pfn: int, order: int) -> None:
        """Give back a block from :meth:`alloc`, merging it with its free buddies."""
        self._check_order(order)
        i = pfn - self.base_pfn
        if not 0 <= i < self.npages:
            raise BuddyError(f"pfn {pfn:#x} is outside [{self.base_pfn:#x}, {self.end_pfn:#x})")
        got = self._ahead[i]
        if got != order + 1:
            self._bad_free(pfn, order, got)
        self._ahead[i] = 0
        size = 1 << order
        if order:
            self._free[i : i + size] = self._ones[order]
        else:
            self._free[i] = 1
        self._free_pages += size
        self._merge_in(pfn, order)

    def claim(self, pfn: int, order: int) -> None:
        """Turn taken pages ``[pfn, pfn + 2**order)`` (see :meth:`take_range`) into a block that
        :meth:`free` accepts, e.g. after compaction emptied that block."""
        self._check_order(order)
        if pfn & ((1 << order) - 1):
            raise BuddyError(f"pfn {pfn:#x} is not aligned to order {order}")
        i = self._index_range(pfn, 1 << order)
        if self._free.find(1, i, i + (1 << order)) >= 0 or _NONZERO.search(self._ahead, i, i + (1 << order)):
            raise BuddyError(f"order-{order} block at pfn {pfn:#x} is not entirely taken")
        self._ahead[i] = order + 1

    # -- ranges ----------------------------------------------------------------------------
    def take_range(self, pfn: int, npages: int) -> None:
        """Remove the free pages ``[pfn, pfn + npages)`` from the free lists (isolation for a
        contiguous allocation, or a reservation). Every page must be free."""
        i = self._index_range(pfn, npages)
        busy = self._free.find(0, i, i + npages)
        if busy >= 0:
            raise BuddyError(f"cannot take [{pfn:#x}, {pfn + npages:#x}): pfn {self.base_pfn + busy:#x} is not free")
        for q, k in aligned_blocks(pfn, npages, self.max_order):
            self._take_block(q, k)
        self._free[i : i + npages] = bytes(npages)
        self._free_pages -= npages

    def release_range(self, pfn: int, npages: int) -> None:
        """Give pages ``[pfn, pfn + npages)`` to the allocator: RAM at boot, or a range taken with
        :meth:`take_range`. No page may be free already and no block from :meth:`alloc` may
        overlap the range (those go back with :meth:`free`)."""
        i = self._index_range(pfn, npages)
        free = self._free.find(1, i, i + npages)
        if free >= 0:
            raise DoubleFree(
                f"cannot release [{pfn:#x}, {pfn + npages:#x}): pfn {self.base_pfn + free:#x} is already free"
            )
        head = _NONZERO.search(self._ahead, i, i + npages)
        over = (self.base_pfn + head.start(), self._ahead[head.start()] - 1) if head else self.allocated_block(pfn)
        if over is not None:
            raise BuddyError(
                f"cannot release [{pfn:#x}, {pfn + npages:#x}): the order-{over[1]} block at pfn "
                f"{over[0]:#x} is allocated; free it with free()"
            )
        self._free[i : i + npages] = b"\x01" * npages
        self._free_pages += npages
        for q, k in aligned_blocks(pfn, npages, self.max_order):
            self._merge_in(q, k)

    # -- self-check ------------------------------------------------------------------------
    def check(self) -> None:
        """Raise AssertionError if the maps, counts and heaps disagree (tests and debugging)."""
        blocks = self.free_blocks()
        counts = [0] * (self.max_order + 1)
        pages = 0
        for p, k in blocks:
            counts[k] += 1
            pages += 1 << k
            i = p - self.base_pfn
            assert p % (1 << k) == 0 and p + (1 << k) <= self.end_pfn, (p, k)
            assert self._free.find(0, i, i + (1 << k)) < 0, f"free block {p:#x}/{k} has busy pages"
            if k < self.max_order:
                bud = p ^ (1 << k)
                j = bud - self.base_pfn
                assert not (0 <= j < self.npages and self._fhead[j] == k + 1), f"unmerged buddies at {p:#x}/{k}"
        assert counts == self._nfree, (counts, self._nfree)
        assert pages == self._free_pages == self._free.count(1), (pages, self._free_pages)
        for k in range(self.max_order + 1):
            live = {p for p in self._heaps[k] if self._fhead[p - self.base_pfn] == k + 1}
            assert len(live) == counts[k], f"heap {k} lost blocks"

    # -- internals -------------------------------------------------------------------------
    def _check_order(self, order: int) -> None:
        if not 0 <= order <= self.max_order:
            raise BuddyError(f"order {order} is outside 0..{self.max_order}")

    def _index_range(self, pfn: int, npages: int) -> int:
        if npages <= 0 or pfn < self.base_pfn or pfn + npages > self.end_pfn:
            raise BuddyError(
                f"range [{pfn:#x}, {pfn + max(npages, 0):#x}) is not a non-empty part of "
                f"[{self.base_pfn:#x}, {self.end_pfn:#x})"
            )
        return pfn - self.base_pfn

    def _bad_free(self, pfn: int, order: int, got: int) -> None:
        if got:
            raise BuddyError(f"pfn {pfn:#x} was allocated with order {got - 1} but freed with order {order}")
        if self._free[pfn - self.base_pfn]:
            raise DoubleFree(f"double free of pfn {pfn:#x} (order {order}): the page is already free")
        inside = self.allocated_block(pfn)
        where = f" (it lies inside the order-{inside[1]} block at pfn {inside[0]:#x})" if inside else ""
        raise BuddyError(f"pfn {pfn:#x} is not the start of an allocated block{where}")

    def _lowest(self, k: int) -> int:
        """Lowest free block start of order ``k`` (caller checked ``_nfree[k]``); drops stale entries."""
        heap, fh, b, tag = self._heaps[k], self._fhead, self.base_pfn, k + 1
        while fh[heap[0] - b] != tag:
            heapq.heappop(heap)
        return heap[0]

    def _push(self, p: int, k: int) -> None:
        self._fhead[p - self.base_pfn] = k + 1
        self._nfree[k] += 1
        heap = self._heaps[k]
        heapq.heappush(heap, p)
        if len(heap) > 2 * self._nfree[k] + 64:  # too many stale entries: rebuild
            fh, b, tag = self._fhead, self.base_pfn, k + 1
            heap[:] = sorted({q for q in heap if fh[q - b] == tag})

    def _unlink(self, p: int, k: int) -> None:
        """Drop a free block from its list (its heap entry goes stale)."""
        self._fhead[p - self.base_pfn] = 0
        self._nfree[k] -= 1

    def _merge_in(self, p: int, k: int) -> None:
        """Insert free block ``(p, k)``, merging with free buddies (pages already marked free)."""
        b, n, fh = self.base_pfn, self.npages, self._fhead
        while k < self.max_order:
            j = (p ^ (1 << k)) - b
            if not (0 <= j < n and fh[j] == k + 1):
                break
            self._unlink(b + j, k)
            p &= ~(1 << k)
            k += 1
        self._push(p, k)

    def _take_block(self, q: int, k: int) -> None:
        """Remove the fully free aligned block ``(q, k)`` from the free lists, splitting the free
        block that contains it. Free buddies are always merged, so that block exists."""
        b, fh = self.base_pfn, self._fhead
        for o in range(k, self.max_order + 1):
            h = q & ~((1 << o) - 1)
            if h >= b and fh[h - b] == o + 1:
                break
        else:  # pragma: no cover - guarded by the caller's all-free check
            raise AssertionError(f"free pages at pfn {q:#x} belong to no free block")
        self._unlink(h, o)
        while o > k:
            o -= 1
            mid = h + (1 << o)
            if q >= mid:
                self._push(h, o)
                h = mid
            else:
                self._push(mid, o)

    def __repr__(self) -> str:
        return (
            f"BuddyAllocator(pfns [{self.base_pfn:#x}, {self.end_pfn:#x}), max_order={self.max_order}, "
            f"free={self._free_pages} pages, blocks={self._nfree})"
        )
