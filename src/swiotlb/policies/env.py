"""What a dynamic policy draws bounce memory from, with the kernel's context rules enforced.

A :class:`PolicyEnv` bundles the page allocator, memory encryption and the time, and offers
``swiotlb_alloc_tlb``-style helpers (spec §5.4) so that every policy gets memory the same way:

* pages come from the zones below the device's (or pool's) address limit;
* in a confidential guest they are made shared (``set_memory_decrypted``) before use and
  encrypted again on release; both may sleep;
* a caller that may not sleep never reaches sleeping work: in a confidential guest it is served
  from the *atomic pool*, memory decrypted once at boot (``dma_alloc_from_pool``), otherwise
  with a non-sleeping page allocation. Anything else raises
  :class:`~swiotlb.memory.SleepInAtomicContext`, which is how the model checks the rule.

The atomic pool is sized like the kernel's DMA atomic pools (kernel/dma/pool.c): 128 KiB per
GiB of RAM, at least 128 KiB, at most MAX_PAGE_ORDER pages.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from swiotlb.core.allocator import IoTlbSteps
from swiotlb.memory import (
    GFP_KERNEL,
    GFP_NOWAIT,
    Gfp,
    MemoryEncryption,
    OutOfMemory,
    PageAllocator,
    RangeAllocator,
    SleepInAtomicContext,
)

GIB = 1 << 30
ATOMIC_POOL_PER_GIB = 128 << 10


def _order(nbytes: int, page_size: int) -> int:
    pages = -(-nbytes // page_size)
    return max(0, (pages - 1).bit_length())


class AtomicPool:
    """Pre-decrypted memory for allocations that cannot sleep (``dma_alloc_from_pool``)."""

    def __init__(self, base: int, size: int, page_size: int) -> None:
        self.base = base
        self.size = size
        self._ranges = RangeAllocator(size, page_size=page_size)

    def alloc(self, nbytes: int) -> int | None:
        try:
            return self.base + self._ranges.alloc(nbytes)
        except OutOfMemory:
            return None

    def free(self, phys: int) -> None:
        self._ranges.free(phys - self.base)

    def owns(self, phys: int) -> bool:
        return self.base <= phys < self.base + self.size


@dataclass
class EnvStats:
    """What a policy's memory traffic cost; the simulator prices these counts."""

    pages_allocated: int = 0  # page-allocator calls that succeeded
    pages_failed: int = 0
    bytes_allocated: int = 0
    atomic_pool_allocs: int = 0
    atomic_pool_failures: int = 0
    page_allocs: int = 0  # allocations counted by count_page_alloc (buddy and contiguous)
    page_alloc_pages: int = 0  # their sizes in pages, each rounded up to 2**order
    by_owner: Counter[str] = field(default_factory=Counter)


class PolicyEnv:
    """The memory a policy grows into, and the clock it reads (``now_ns``)."""

    def __init__(
        self,
        pages: PageAllocator,
        encryption: MemoryEncryption | None = None,
        *,
        clock: Callable[[], int] | None = None,
        atomic_pool_size: int | None = None,
    ) -> None:
        self.pages = pages
        self.page_size = pages.page_size
        self.encryption = encryption or MemoryEncryption(False, page_size=pages.page_size)
        self.coco = self.encryption.enabled
        self.clock: Callable[[], int] = clock or (lambda: 0)
        self.stats = EnvStats()
        self.steps: IoTlbSteps | None = None  # a simulator's step tally (page_alloc_order_<k>)
        self._lock = threading.Lock()
        self._enc_lock = threading.Lock()  # MemoryEncryption keeps no lock of its own
        self.atomic_pool: AtomicPool | None = None
        if self.coco:
            size = atomic_pool_size if atomic_pool_size is not None else self.default_atomic_pool_size()
            base = pages.alloc_contig(size, gfp=GFP_KERNEL, owner="atomic-pool") if size else None
            if base is not None:
                self.encryption.set_decrypted(base, size // self.page_size, may_sleep=True)
                self.atomic_pool = AtomicPool(base, size, self.page_size)

    def default_atomic_pool_size(self) -> int:
        """128 KiB per GiB of RAM, clamped to [128 KiB, MAX_PAGE_ORDER pages]."""
        ram = self.pages.total_bytes
        size = (ram // GIB) * ATOMIC_POOL_PER_GIB
        return max(ATOMIC_POOL_PER_GIB, min(size, self.page_size << self.pages.max_order))

    def now(self) -> int:
        return self.clock()

    def count_page_alloc(self, nbytes: int) -> None:
        """Count one page allocation of ``nbytes``: in :attr:`stats` (count and ``2**order``
        pages, the two terms a cost model prices) and, if tallied, in :attr:`steps` by order."""
        order = _order(nbytes, self.page_size)
        with self._lock:
            self.stats.page_allocs += 1
            self.stats.page_alloc_pages += 1 << order
        steps = self.steps
        if steps is not None:
            steps[f"page_alloc_order_{order}"] += 1

    # -- bounce memory ---------------------------------------------------------------------
    def alloc_bounce(self, nbytes: int, *, limit: int | None, may_sleep: bool, owner: str) -> int | None:
        """``swiotlb_alloc_tlb`` (spec §5.4): shared memory below ``limit``, or None.

        Up to MAX_PAGE_ORDER pages come from the buddy allocator; larger buffers need a sleeping
        caller and come from CMA (``dma_alloc_contiguous``). In a confidential guest a caller
        that cannot sleep is served from the atomic pool only.
        """
        if self.coco and not may_sleep:
            pool = self.atomic_pool
            phys = pool.alloc(nbytes) if pool is not None and (limit is None or pool.base + pool.size - 1 <= limit) else None
            with self._lock:
                if phys is None:
                    self.stats.atomic_pool_failures += 1
                else:
                    self.stats.atomic_pool_allocs += 1
            return phys
        gfp = (GFP_KERNEL if may_sleep else GFP_NOWAIT) | Gfp.NOWARN
        order = _order(nbytes, self.page_size)
        if order <= self.pages.max_order:
            phys = self.pages.alloc_pages(order, gfp, limit=limit, owner=owner)
        elif may_sleep:
            phys = self.pages.alloc_contig(nbytes, limit=limit, gfp=gfp, owner=owner)
        else:
            phys = None  # above MAX_PAGE_ORDER only CMA can help, and CMA may sleep
        with self._lock:
            if phys is None:
                self.stats.pages_failed += 1
                return None
            self.stats.pages_allocated += 1
            self.stats.bytes_allocated += nbytes
            self.stats.by_owner[owner] += nbytes
        self.count_page_alloc(nbytes)
        if self.coco:
            with self._enc_lock:
                self.encryption.set_decrypted(phys, -(-nbytes // self.page_size), may_sleep=may_sleep)
        return phys

    def free_boot_pool(self, phys: int, nbytes: int) -> None:
        """A boot-time pool's memory back to the page allocator (process context): encrypted
        again in a confidential guest, then freed like any memory reserved at boot."""
        if self.coco:
            with self._enc_lock:
                self.encryption.set_encrypted(phys, nbytes // self.page_size, may_sleep=True)
        self.pages.free_reserved(phys, nbytes)

    def free_bounce(self, phys: int, nbytes: int, *, may_sleep: bool, owner: str) -> None:
        """``swiotlb_free_tlb``: back to the atomic pool, or encrypted again and freed."""
        if self.atomic_pool is not None and self.atomic_pool.owns(phys):
            self.atomic_pool.free(phys)
            return
        if self.coco:
            if not may_sleep:
                raise SleepInAtomicContext(
                    f"re-encrypting {nbytes} bytes at {phys:#x} may sleep; defer the free to a worker"
                )
            with self._enc_lock:
                self.encryption.set_encrypted(phys, -(-nbytes // self.page_size), may_sleep=True)
        order = _order(nbytes, self.page_size)
        if order <= self.pages.max_order:
            self.pages.free_pages(phys, order)
        else:
            self.pages.free_contig(phys)
        with self._lock:
            self.stats.by_owner[owner] -= nbytes
