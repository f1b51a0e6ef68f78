"""``rfc-v1``: Petr Tesarik's first dynamic-SWIOTLB RFC (2023-03-20), per-mapping buffers (spec §7.3).

With ``swiotlb=dynamic`` (``io_tlb_mem.allow_dyn``) every *eligible* mapping first gets a buffer
of its own, ``PAGE_ALIGN(size)`` bytes straight from the page allocator below the device's DMA
limit; only when that is refused or fails does the mapping go to the fixed slots of the boot
pool. Eligible means: not a restricted pool, ``size >= PAGE_SIZE``, no ``alloc_align_mask`` and
no device ``min_align_mask``. The allocation uses ``GFP_KERNEL`` for callers that pass
``DMA_ATTR_MAY_SLEEP`` and ``GFP_NOWAIT | __GFP_NOWARN`` otherwise, so buffers above
MAX_PAGE_ORDER (from CMA) exist only for sleeping callers — the Raspberry Pi 4 vc4 case of
several-MiB dma-bufs that no 256 KiB slot segment can hold.

The buffers themselves — allocation through :class:`~swiotlb.policies.env.PolicyEnv` with the
context rules, the address-keyed lookup (the RFC's maple tree), bounces at ``tlb_addr - start``,
one decrypt and one encrypt per buffer in a confidential guest, atomic releases deferred to
:meth:`RfcV1Policy.run_deferred` — are :class:`~swiotlb.policies.buffers.DedicatedBuffers`,
shared with ``adaptive``. This module adds the RFC's eligibility rules and its fallback to the
fixed slots of the boot pool.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any, ClassVar

from swiotlb.core import BounceSpan, IoTlbMem, MapRefused, ReleaseError, SlotMapping
from swiotlb.policies.base import BounceMapping, BouncePolicy, BufferMapping, PoolHandle, PolicyDevice
from swiotlb.policies.buffers import OWNER, DedicatedBuffers, DynamicBuffer
from swiotlb.policies.env import PolicyEnv

__all__ = ["OWNER", "DynamicBuffer", "FALLBACK_REASONS", "RfcV1Policy"]

# Why a mapping went to the fixed pool instead of a buffer of its own.
DISABLED = "disabled"  # no swiotlb=dynamic
RESTRICTED = "restricted"  # restricted DMA pools never use dynamic buffers
SMALL = "small"  # size < PAGE_SIZE
MIN_ALIGN = "min_align"  # the device has a min_align_mask
ALLOC_ALIGN = "alloc_align"  # the caller passed an alloc_align_mask (IOMMU bouncing)
INVALID_SIZES = "invalid_sizes"  # mapping_size > alloc_size: left to the fixed path to report
ALLOC_FAILED = "alloc_failed"  # the page allocator (or atomic pool) had nothing below the limit
FALLBACK_REASONS = (DISABLED, RESTRICTED, SMALL, MIN_ALIGN, ALLOC_ALIGN, INVALID_SIZES, ALLOC_FAILED)


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
        self.dyn = DedicatedBuffers(env, owner=OWNER)
        self._lock = threading.Lock()  # the fallback and failure counters
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
            mapped = size if alloc_size is None else alloc_size
            buf = self.dyn.alloc(dev, orig_addr, mapped, may_sleep=may_sleep, avoid=self.mem.pools)
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

    # -- release ---------------------------------------------------------------------------
    def release(
        self, dev: PolicyDevice, tlb_addr: int, pool: PoolHandle | None = None, *, may_sleep: bool = False
    ) -> int:
        """Unmap: a dynamic buffer is erased from the lookup and freed (0 slots), else
        ``swiotlb_release_slots`` (§3.6). The DMA API lets drivers unmap from atomic context,
        so ``may_sleep`` defaults to False; a CoCo buffer needing re-encryption is then freed
        by :meth:`run_deferred`."""
        if pool is None:
            pool = self.dyn.lookup(tlb_addr)
            if pool is None:
                if self.mem.find_pool(tlb_addr) is None:
                    raise ReleaseError(
                        f"{dev.name}: release of {tlb_addr:#x}: not a dynamic buffer and not in the fixed pool"
                    )
                return self.mem.release_slots(dev, tlb_addr)
        if not isinstance(pool, DynamicBuffer):
            return self.mem.release_slots(dev, tlb_addr, pool)
        self.dyn.release(dev, tlb_addr, pool, may_sleep=may_sleep)
        return 0

    def run_deferred(self) -> int:
        """Process context: encrypt and free the buffers released atomically; returns how many."""
        return self.dyn.run_deferred()

    def next_deadline(self) -> int | None:
        """Now, while atomically released buffers wait to be encrypted and freed."""
        return self.env.now() if self.dyn.deferred_pending else None

    def footprint(self) -> tuple[int, int]:
        """The boot pool's slots plus the per-mapping buffers (held until freed, in use while mapped)."""
        reserved, in_use = super().footprint()
        return reserved + self.dyn.bytes_held, in_use + self.dyn.live_bytes

    # -- lookups and copies ----------------------------------------------------------------
    def find_pool(self, dev: PolicyDevice, paddr: int) -> PoolHandle | None:
        """``is_swiotlb_buffer`` of the RFC: the fixed range, or a lookup hit."""
        pool = self.mem.find_pool(paddr)
        return pool if pool is not None else self.dyn.lookup(paddr)

    def bounce_target(
        self, dev: PolicyDevice, tlb_addr: int, size: int, pool: PoolHandle | None = None
    ) -> BounceSpan | None:
        """Dynamic buffers bounce at ``tlb_addr - start`` (:meth:`DedicatedBuffers.bounce_target`);
        fixed slots follow §4.1."""
        if pool is None:
            pool = self.find_pool(dev, tlb_addr)
            if pool is None:
                return None
        if isinstance(pool, DynamicBuffer):
            return self.dyn.bounce_target(dev, tlb_addr, size, pool)
        return self.mem.bounce_target(dev, tlb_addr, size, pool)

    # -- observation -----------------------------------------------------------------------
    @property
    def created(self) -> int:
        return self.dyn.created

    @property
    def bytes_held(self) -> int:
        return self.dyn.bytes_held

    @property
    def decrypt_ops(self) -> int:
        return self.dyn.decrypt_ops

    @property
    def encrypt_ops(self) -> int:
        return self.dyn.encrypt_ops

    def buffers(self) -> list[DynamicBuffer]:
        """Live dynamic buffers in address order."""
        return self.dyn.buffers()

    def dyn_counters(self) -> dict[str, int]:
        """The policy's own figures: buffers, bytes, conversions, fallbacks and failures by cause."""
        out = self.dyn.counters("dyn_")
        out["decrypt_ops"] = out.pop("dyn_decrypt_ops")
        out["encrypt_ops"] = out.pop("dyn_encrypt_ops")
        with self._lock:
            out["fallbacks"] = sum(self.fallbacks.values())
            out.update({f"fallback_{r}": self.fallbacks[r] for r in FALLBACK_REASONS})
            out.update({f"failed_{cause}": n for cause, n in sorted(self.failures.items())})
        return out

    def stats(self) -> dict[str, Any]:
        return {"policy": self.name, **self.counters(), **self.dyn_counters()}

    def __repr__(self) -> str:
        return f"RfcV1Policy(nslabs={self.mem.nslabs}, dynamic buffers={len(self.dyn)}, bytes={self.dyn.bytes_held})"
