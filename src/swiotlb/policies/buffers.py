"""Per-mapping bounce buffers: one page-allocator buffer per mapping, found by its address.

RFC v1 (spec §7.3) bounces every eligible mapping this way; ``adaptive`` only the mappings no
slot run can hold (more than ``max_mapping_size``, the Raspberry Pi 4 frames of scenario S4).
:class:`DedicatedBuffers` is what both need, so neither carries its own copy:

* **Allocation** through :class:`~swiotlb.policies.env.PolicyEnv` (``swiotlb_alloc_tlb`` rules,
  §5.4): ``PAGE_ALIGN(size)`` bytes below the device's DMA limit. A sleeping caller may get
  buddy pages or, above MAX_PAGE_ORDER, contiguous (CMA) memory; an atomic caller only a
  non-sleeping buddy allocation, or the pre-decrypted atomic pool in a confidential guest.
* **Lookup** keyed by address (the RFC's maple tree ``dyn_slots`` under ``dyn_lock``): a sorted
  list of buffer starts searched with :mod:`bisect`, each entry covering ``[start, start + size)``.
* **Bounce** with ``offset = tlb_addr - buffer start``, clamped to the mapping's end.
* **Confidential guests**: each buffer is decrypted on its own when allocated and encrypted
  again when freed — two page-state conversions per buffer (why v3 became a pool rewrite).
  Re-encryption may sleep and the DMA API allows unmapping from atomic context, so an atomic
  release of such a buffer is *deferred*: it leaves the lookup at once and its pages are
  encrypted and freed by :meth:`DedicatedBuffers.run_deferred` (process context).
"""

from __future__ import annotations

import bisect
import threading
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Iterable

from swiotlb.core import BounceSpan, IoTlbPool, ReleaseError
from swiotlb.policies.base import PolicyDevice
from swiotlb.policies.env import PolicyEnv

OWNER = "swiotlb-dyn"  # page-allocator owner tag of the per-mapping buffers


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


class DedicatedBuffers:
    """Live per-mapping buffers of one policy: allocation, lookup, bounces, frees and counters.

    Thread-safe: one lock (``dyn_lock``) guards the lookup, the deferred list and the counters;
    page-state conversions are serialised as the kernel's ``cpa_lock`` does (the model's
    :class:`~swiotlb.memory.MemoryEncryption` is not thread-safe).
    """

    def __init__(self, env: PolicyEnv, *, owner: str = OWNER) -> None:
        self.env = env
        self.owner = owner
        self.page_size = env.page_size
        self._lock = threading.Lock()
        # Page-state conversions are serialised (cpa_lock); without CoCo there are none.
        self._convert: AbstractContextManager[Any] = threading.Lock() if env.coco else nullcontext()
        self._starts: list[int] = []  # sorted buffer starts: the maple tree's keys
        self._bufs: dict[int, DynamicBuffer] = {}
        self._deferred: list[DynamicBuffer] = []
        self.created = 0
        self.freed = 0
        self.bytes_held = 0  # allocated and not yet freed (deferred frees included)
        self.bytes_peak = 0
        self.live_bytes = 0  # held by live mappings (deferred frees excluded)
        self.decrypt_ops = 0
        self.encrypt_ops = 0
        self.deferred_frees = 0

    # -- allocation ------------------------------------------------------------------------
    def alloc(
        self, dev: PolicyDevice, orig_addr: int, mapping_size: int, *, may_sleep: bool,
        avoid: Iterable[IoTlbPool] = (),
    ) -> DynamicBuffer | None:
        """``swiotlb_dyn_map``: own pages below the device limit, entered in the lookup; None
        when the environment has no such memory for this context.

        ``avoid`` lists slot pools the page allocator must never hand out; a buffer inside one
        means the pool's memory was not reserved, a setup error.
        """
        ps = self.page_size
        nbytes = -(-mapping_size // ps) * ps
        with self._convert:
            phys = self.env.alloc_bounce(nbytes, limit=dev.dma_limit, may_sleep=may_sleep, owner=self.owner)
        if phys is None:
            return None
        buf = DynamicBuffer(phys, nbytes, orig_addr, mapping_size)
        for pool in avoid:
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
            self.live_bytes += nbytes
            self.bytes_peak = max(self.bytes_peak, self.bytes_held)
            self.decrypt_ops += decrypted
        return buf

    def _decrypted(self, buf: DynamicBuffer) -> bool:
        """Did this buffer cost its own decryption (CoCo, not from the pre-decrypted atomic pool)?"""
        pool = self.env.atomic_pool
        return self.env.coco and not (pool is not None and pool.owns(buf.phys))

    # -- release ---------------------------------------------------------------------------
    def release(self, dev: PolicyDevice, tlb_addr: int, buf: DynamicBuffer, *, may_sleep: bool) -> None:
        """Erase ``buf`` (which must start at ``tlb_addr`` and be live) and free its pages; an
        atomic release that would re-encrypt is left to :meth:`run_deferred`."""
        defer = not may_sleep and self._decrypted(buf)
        with self._lock:
            if self._bufs.get(tlb_addr) is not buf:
                raise ReleaseError(f"{dev.name}: release of {tlb_addr:#x}: not the start of live {buf!r}")
            del self._bufs[tlb_addr]
            del self._starts[bisect.bisect_left(self._starts, tlb_addr)]
            self.live_bytes -= buf.nbytes
            if defer:
                self._deferred.append(buf)
                self.deferred_frees += 1
        if not defer:
            self._free(buf, may_sleep=may_sleep)

    def _free(self, buf: DynamicBuffer, *, may_sleep: bool) -> None:
        """``swiotlb_free_tlb``: back to the atomic pool, or encrypted again and freed."""
        encrypted = self._decrypted(buf)
        self._give_back(buf, may_sleep=may_sleep)
        with self._lock:
            self.freed += 1
            self.bytes_held -= buf.nbytes
            self.encrypt_ops += encrypted

    def _give_back(self, buf: DynamicBuffer, *, may_sleep: bool) -> None:
        with self._convert:
            self.env.free_bounce(buf.phys, buf.nbytes, may_sleep=may_sleep, owner=self.owner)

    def run_deferred(self) -> int:
        """Process context: encrypt and free the buffers released atomically; returns how many."""
        with self._lock:
            work, self._deferred = self._deferred, []
        for buf in work:
            self._free(buf, may_sleep=True)
        return len(work)

    @property
    def deferred_pending(self) -> int:
        """Buffers released atomically whose pages :meth:`run_deferred` has yet to free."""
        return len(self._deferred)

    # -- lookups and copies ----------------------------------------------------------------
    def lookup(self, paddr: int) -> DynamicBuffer | None:
        """The maple-tree walk: the live buffer covering ``paddr``, or None."""
        with self._lock:
            i = bisect.bisect_right(self._starts, paddr) - 1
            if i < 0:
                return None
            buf = self._bufs[self._starts[i]]
        return buf if paddr < buf.end else None

    def bounce_target(self, dev: PolicyDevice, tlb_addr: int, size: int, buf: DynamicBuffer) -> BounceSpan:
        """``orig = orig_addr + (tlb_addr - start)``, clamped to the mapping's end with the
        kernel's overflow warning."""
        offset = tlb_addr - buf.phys
        if not 0 <= offset < buf.nbytes:
            raise ValueError(f"{dev.name}: bounce at {tlb_addr:#x} is outside {buf!r}")
        remaining = buf.mapping_size - offset
        if size > remaining:
            return BounceSpan(
                buf.orig_addr + offset, tlb_addr, max(remaining, 0),
                f"Buffer overflow detected. Allocation size: {remaining}. Mapping size: {size}.",
            )
        return BounceSpan(buf.orig_addr + offset, tlb_addr, size)

    # -- observation -----------------------------------------------------------------------
    def buffers(self) -> list[DynamicBuffer]:
        """Live buffers in address order."""
        with self._lock:
            return [self._bufs[s] for s in self._starts]

    def __len__(self) -> int:
        return len(self._starts)

    def counters(self, prefix: str = "dyn_") -> dict[str, int]:
        """Buffers, bytes, deferred frees and page-state conversions, each name ``prefix``-ed."""
        with self._lock:
            return {
                f"{prefix}created": self.created,
                f"{prefix}freed": self.freed,
                f"{prefix}live": len(self._starts),
                f"{prefix}bytes": self.bytes_held,
                f"{prefix}bytes_peak": self.bytes_peak,
                f"{prefix}deferred_pending": len(self._deferred),
                f"{prefix}deferred_frees": self.deferred_frees,
                f"{prefix}decrypt_ops": self.decrypt_ops,
                f"{prefix}encrypt_ops": self.encrypt_ops,
            }

