"""``rfc-v1``: Petr Tesarik's first dynamic-SWIOTLB RFC (2023-03-20), per-mapping buffers (spec §7.3).

With ``swiotlb=dynamic`` (``io_tlb_mem.allow_dyn``) every *eligible* mapping first gets a buffer
of its own, ``PAGE_ALIGN(size)`` bytes straight from the page allocator below the device's DMA
limit; only when that is refused or fails does the mapping go to the fixed slots of the boot
pool. Eligible means: not a restricted pool, ``size >= PAGE_SIZE``, no ``alloc_align_mask`` and
no device ``min_align_mask``. The allocation uses ``GFP_KERNEL`` for callers that pass
``DMA_ATTR_MAY_SLEEP`` and ``GFP_NOWAIT | __GFP_NOWARN`` otherwise, so buffers above
MAX_PAGE_ORDER (from CMA) exist only for sleeping callers — the Raspberry Pi 4 vc4 case of
several-MiB dma-bufs that no 256 KiB slot segment can hold.

Live buffers sit in an address-keyed lookup (the RFC's maple tree ``dyn_slots`` under
``dyn_lock``): a sorted list of buffer starts searched with :mod:`bisect`, each entry covering
``[start, start + size)``. ``is_swiotlb_buffer`` is "fixed range OR lookup hit"; a bounce inside a
dynamic buffer uses ``offset = tlb_addr - buffer start``; unmap erases the entry and frees the pages.

Memory comes through :class:`~swiotlb.policies.env.PolicyEnv` (``swiotlb_alloc_tlb`` rules, §5.4):
in a confidential guest each buffer is decrypted on its own when allocated and encrypted again
when freed — two page-state conversions per mapping, the cost that made v3 a rewrite to pools.
An atomic CoCo caller is served from the pre-decrypted atomic pool. Re-encryption may sleep and
the DMA API allows unmapping from atomic context, so an atomic release of a decrypted
page-allocator buffer is *deferred*: the buffer leaves the lookup at once and its pages are
encrypted and freed by :meth:`RfcV1Policy.run_deferred` (process context).
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

from swiotlb.core import BounceSpan, IoTlbMem, MapRefused, ReleaseError, SlotMapping
from swiotlb.policies.base import BounceMapping, BouncePolicy, BufferMapping, PoolHandle, PolicyDevice
from swiotlb.policies.env import PolicyEnv

OWNER = "swiotlb-dyn"  # page-allocator owner tag of the per-mapping buffers

# Why a mapping went to the fixed pool instead of a buffer of its own.
DISABLED = "disabled"  # no swiotlb=dynamic
RESTRICTED = "restricted"  # restricted DMA pools never use dynamic buffers
SMALL = "small"  # size < PAGE_SIZE
MIN_ALIGN = "min_align"  # the device has a min_align_mask
ALLOC_ALIGN = "alloc_align"  # the caller passed an alloc_align_mask (IOMMU bouncing)
INVALID_SIZES = "invalid_sizes"  # mapping_size > alloc_size: left to the fixed path to report
ALLOC_FAILED = "alloc_failed"  # the page allocator (or atomic pool) had nothing below the limit
FALLBACK_REASONS = (DISABLED, RESTRICTED, SMALL, MIN_ALIGN, ALLOC_ALIGN, INVALID_SIZES, ALLOC_FAILED)


@dataclass(frozen=True, slots=True)
class DynamicBuffer:
    """One per-mapping buffer (the RFC's ``io_tlb_dyn_slot``); the mapping's opaque ``pool`` handle.

    ``phys`` is the page-aligned buffer start (also the mapping's ``tlb_addr``), ``nbytes`` the
    page-aligned size the lookup covers, ``orig_addr`` the original buffer and ``mapping_size``
    how many bytes of it the buffer mirrors (``alloc_size`` when the caller passed one).
    """

    phys: int
    nbytes: int
    orig_addr: int
    mapping_size: int

    @property
    def end(self) -> int:
        """First address past the buffer."""
        return self.phys + self.nbytes

    def __repr__(self) -> str:
        return (
            f"DynamicBuffer([{self.phys:#x}, {self.end:#x}), orig {self.orig_addr:#x}+{self.mapping_size})"
        )


class RfcV1Policy(BouncePolicy):
    """Per-mapping buffers from the page allocator first, the fixed boot pool second (spec §7.3).

    ``allow_dyn`` is ``swiotlb=dynamic`` (on: the point of this policy); ``restricted`` marks
    ``mem`` as a restricted DMA pool, which never uses dynamic buffers.
    """

    name: ClassVar[str] = "rfc-v1"

    def __init__(self, mem: IoTlbMem, env: PolicyEnv, *, allow_dyn: bool = True, restricted: bool = False) -> None:
        if mem.dynamic:
            raise ValueError("rfc-v1 falls back to one fixed pool; mem is a CONFIG_SWIOTLB_DYNAMIC allocator")
        if mem.page_size != env.page_size:
            raise ValueError(f"page size mismatch: mem uses {mem.page_size}, the page allocator {env.page_size}")
        super().__init__(mem)
        self.env = env
        self.allow_dyn = allow_dyn
        self.restricted = restricted
        self.page_size = env.page_size
        self._lock = threading.Lock()  # dyn_lock: the lookup, the deferred list, the counters
        # Page-state conversions are serialised, as the kernel's cpa_lock does (and the model's
        # MemoryEncryption is not thread-safe).
        self._convert_lock = threading.Lock()
        self._starts: list[int] = []  # sorted buffer starts: the maple tree's keys
        self._bufs: dict[int, DynamicBuffer] = {}
        self._deferred: list[DynamicBuffer] = []
        self.created = 0
        self.freed = 0
        self.bytes_held = 0  # allocated and not yet freed (deferred frees included)
        self.bytes_peak = 0
        self.decrypt_ops = 0
        self.encrypt_ops = 0
        self.deferred_frees = 0
        self.fallbacks: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()  # fixed-pool refusals by MapFailure value

    # -- map -------------------------------------------------------------------------------
    def map(
        self,
        dev: PolicyDevice,
        orig_addr: int,
        size: int,
        alloc_align_mask: int = 0,
        *,
        cpu: int = 0,
        may_sleep: bool = False,
        attrs: int = 0,
        alloc_size: int | None = None,
    ) -> BounceMapping | MapRefused:
        """Try a dynamic buffer for eligible mappings, else the fixed slots (§7.3 patch 3/4).

        ``may_sleep`` is ``DMA_ATTR_MAY_SLEEP`` (the DMA layer folds the attribute in).
        """
        reason = self._ineligible(dev, size, alloc_align_mask, alloc_size)
        if reason is None:
            buf = self._map_dynamic(dev, orig_addr, size if alloc_size is None else alloc_size, may_sleep)
            if buf is not None:
                return BufferMapping(buf.phys, buf)
            reason = ALLOC_FAILED
        found = self.search(dev, orig_addr, size, alloc_align_mask, cpu=cpu, alloc_size=alloc_size)
        with self._lock:
            self.fallbacks[reason] += 1
            if type(found) is MapRefused:
                self.failures[found.cause.value] += 1
        if type(found) is MapRefused:
            return self.on_map_failure(
                dev, orig_addr, size, alloc_align_mask, found, cpu=cpu, may_sleep=may_sleep, attrs=attrs
            )
        return found

    def search(
        self,
        dev: PolicyDevice,
        orig_addr: int,
        size: int,
        alloc_align_mask: int,
        *,
        cpu: int,
        alloc_size: int | None,
    ) -> SlotMapping | MapRefused:
        """``swiotlb_fixed_map``: the ordinary slot search in the boot pool (§3.1)."""
        return self.mem.tbl_map_single(dev, orig_addr, size, alloc_align_mask, cpu=cpu, alloc_size=alloc_size)

    def _ineligible(self, dev: PolicyDevice, size: int, alloc_align_mask: int, alloc_size: int | None) -> str | None:
        """Why the RFC would not try a dynamic buffer, or None when it would."""
        if not self.allow_dyn:
            return DISABLED
        if self.restricted:
            return RESTRICTED
        if alloc_size is not None and size > alloc_size:
            return INVALID_SIZES
        if (size if alloc_size is None else alloc_size) < self.page_size:
            return SMALL
        if alloc_align_mask:
            return ALLOC_ALIGN
        if dev.min_align_mask:
            return MIN_ALIGN
        return None

    def _map_dynamic(self, dev: PolicyDevice, orig_addr: int, alloc: int, may_sleep: bool) -> DynamicBuffer | None:
        """``swiotlb_dyn_map``: own pages below the device limit, entered in the lookup."""
        ps = self.page_size
        nbytes = -(-alloc // ps) * ps
        env = self.env
        if env.coco:
            with self._convert_lock:
                phys = env.alloc_bounce(nbytes, limit=dev.dma_limit, may_sleep=may_sleep, owner=OWNER)
        else:
            phys = env.alloc_bounce(nbytes, limit=dev.dma_limit, may_sleep=may_sleep, owner=OWNER)
        if phys is None:
            return None
        buf = DynamicBuffer(phys, nbytes, orig_addr, alloc)
        for pool in self.mem.pools:
            if phys < pool.end and pool.start < buf.end:
                self._give_back(buf, may_sleep=True)
                raise ValueError(
                    f"{dev.name}: the page allocator handed out {buf!r} inside the fixed pool {pool!r}; "
                    "reserve the pool's memory in the PageAllocator"
                )
        decrypted = self._decrypted(buf)
        with self._lock:
            i = bisect.bisect_left(self._starts, phys)
            for j in (i - 1, i):  # neighbours in the tree; the page allocator never overlaps them
                other = self._bufs[self._starts[j]] if 0 <= j < len(self._starts) else None
                if other is not None and other.phys < buf.end and buf.phys < other.end:
                    raise RuntimeError(f"{dev.name}: new {buf!r} overlaps live {other!r}")
            self._starts.insert(i, phys)
            self._bufs[phys] = buf
            self.created += 1
            self.bytes_held += nbytes
            self.bytes_peak = max(self.bytes_peak, self.bytes_held)
            self.decrypt_ops += decrypted
        return buf

    def _decrypted(self, buf: DynamicBuffer) -> bool:
        """Did this buffer cost its own decryption (CoCo, not from the pre-decrypted atomic pool)?"""
        pool = self.env.atomic_pool
        return self.env.coco and not (pool is not None and pool.owns(buf.phys))

    # -- release ---------------------------------------------------------------------------
    def release(
        self, dev: PolicyDevice, tlb_addr: int, pool: PoolHandle | None = None, *, may_sleep: bool = False
    ) -> int:
        """Unmap: a dynamic buffer is erased from the lookup and freed (0 slots), else
        ``swiotlb_release_slots`` (§3.6). The DMA API lets drivers unmap from atomic context,
        so ``may_sleep`` defaults to False; a CoCo buffer needing re-encryption is then freed
        by :meth:`run_deferred`."""
        if pool is None:
            pool = self._lookup(tlb_addr)
            if pool is None:
                if self.mem.find_pool(tlb_addr) is None:
                    raise ReleaseError(
                        f"{dev.name}: release of {tlb_addr:#x}: not a dynamic buffer and not in the fixed pool"
                    )
                return self.mem.release_slots(dev, tlb_addr)
        if not isinstance(pool, DynamicBuffer):
            return self.mem.release_slots(dev, tlb_addr, pool)
        defer = not may_sleep and self._decrypted(pool)
        with self._lock:
            if self._bufs.get(tlb_addr) is not pool:
                raise ReleaseError(f"{dev.name}: release of {tlb_addr:#x}: not the start of live {pool!r}")
            del self._bufs[tlb_addr]
            del self._starts[bisect.bisect_left(self._starts, tlb_addr)]
            if defer:
                self._deferred.append(pool)
                self.deferred_frees += 1
        if not defer:
            self._free(pool, may_sleep=may_sleep)
        return 0

    def _free(self, buf: DynamicBuffer, *, may_sleep: bool) -> None:
        """``swiotlb_free_tlb``: back to the atomic pool, or encrypted again and freed."""
        encrypted = self._decrypted(buf)
        self._give_back(buf, may_sleep=may_sleep)
        with self._lock:
            self.freed += 1
            self.bytes_held -= buf.nbytes
            self.encrypt_ops += encrypted

    def _give_back(self, buf: DynamicBuffer, *, may_sleep: bool) -> None:
        if self.env.coco:
            with self._convert_lock:
                self.env.free_bounce(buf.phys, buf.nbytes, may_sleep=may_sleep, owner=OWNER)
        else:
            self.env.free_bounce(buf.phys, buf.nbytes, may_sleep=may_sleep, owner=OWNER)

    def run_deferred(self) -> int:
        """Process context: encrypt and free the buffers released atomically; returns how many."""
        with self._lock:
            work, self._deferred = self._deferred, []
        for buf in work:
            self._free(buf, may_sleep=True)
        return len(work)

    # -- lookups and copies ----------------------------------------------------------------
    def _lookup(self, paddr: int) -> DynamicBuffer | None:
        """The maple-tree walk: the live buffer covering ``paddr``, or None."""
        with self._lock:
            i = bisect.bisect_right(self._starts, paddr) - 1
            if i < 0:
                return None
            buf = self._bufs[self._starts[i]]
        return buf if paddr < buf.end else None

    def find_pool(self, dev: PolicyDevice, paddr: int) -> PoolHandle | None:
        """``is_swiotlb_buffer`` of the RFC: the fixed range, or a lookup hit."""
        pool = self.mem.find_pool(paddr)
        return pool if pool is not None else self._lookup(paddr)

    def bounce_target(
        self, dev: PolicyDevice, tlb_addr: int, size: int, pool: PoolHandle | None = None
    ) -> BounceSpan | None:
        """For a dynamic buffer ``orig = orig_addr + (tlb_addr - start)``, clamped to the
        mapping's end with the kernel's overflow warning; fixed slots follow §4.1."""
        if pool is None:
            pool = self.find_pool(dev, tlb_addr)
            if pool is None:
                return None
        if not isinstance(pool, DynamicBuffer):
            return self.mem.bounce_target(dev, tlb_addr, size, pool)
        offset = tlb_addr - pool.phys
        if not 0 <= offset < pool.nbytes:
            raise ValueError(f"{dev.name}: bounce at {tlb_addr:#x} is outside {pool!r}")
        remaining = pool.mapping_size - offset
        if size > remaining:
            return BounceSpan(
                pool.orig_addr + offset, tlb_addr, max(remaining, 0),
                f"Buffer overflow detected. Allocation size: {remaining}. Mapping size: {size}.",
            )
        return BounceSpan(pool.orig_addr + offset, tlb_addr, size)

    # -- observation -----------------------------------------------------------------------
    def buffers(self) -> list[DynamicBuffer]:
        """Live dynamic buffers in address order."""
        with self._lock:
            return [self._bufs[s] for s in self._starts]

    def dyn_counters(self) -> dict[str, int]:
        """The policy's own figures: buffers, bytes, conversions, fallbacks and failures by cause."""
        with self._lock:
            out = {
                "dyn_created": self.created,
                "dyn_freed": self.freed,
                "dyn_live": len(self._starts),
                "dyn_bytes": self.bytes_held,
                "dyn_bytes_peak": self.bytes_peak,
                "dyn_deferred_pending": len(self._deferred),
                "dyn_deferred_frees": self.deferred_frees,
                "decrypt_ops": self.decrypt_ops,
                "encrypt_ops": self.encrypt_ops,
                "fallbacks": sum(self.fallbacks.values()),
            }
            out.update({f"fallback_{r}": self.fallbacks[r] for r in FALLBACK_REASONS})
            out.update({f"failed_{cause}": n for cause, n in sorted(self.failures.items())})
        return out

    def stats(self) -> dict[str, Any]:
        return {"policy": self.name, **self.counters(), **self.dyn_counters()}

    def __repr__(self) -> str:
        return f"RfcV1Policy(nslabs={self.mem.nslabs}, dynamic buffers={len(self._starts)}, bytes={self.bytes_held})"
