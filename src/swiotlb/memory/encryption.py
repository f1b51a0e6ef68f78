"""Memory encryption of confidential guests (AMD SEV-SNP, Intel TDX, Arm CCA realms).

A confidential guest's memory is private (encrypted) by default; a device can only DMA to pages
the guest has converted to shared ("decrypted", ``set_memory_decrypted``), which is why every
streaming DMA bounces through SWIOTLB there and why the bounce pool itself is decrypted once
(spec §1.5, §4.3). Conversion changes page tables, flushes TLBs and asks the hypervisor/firmware
to change the page state, so it may sleep (spec §5.4: atomic callers must use a pre-decrypted
pool) and it is expensive: every grow or shrink of a dynamic pool costs one conversion (scenarios
S12; swiotlb.rst calls it "relatively high cost").

The model tracks which page ranges are shared, refuses to convert a page that is already in the
target state (a bug in the caller), counts operations and pages, and charges
``cost_ns_per_call + npages * cost_ns_per_page`` per conversion. Both defaults are assumptions
(no source gives a number; sweep them). With ``enabled=False`` (an ordinary guest) calls are
validated, including the sleep rule, but change nothing and cost nothing.
"""

from __future__ import annotations

import bisect

from swiotlb.memory import intervals

from swiotlb.memory.gfp import SleepInAtomicContext
from swiotlb.memory.stats import EncryptionStats as EncryptionStats  # re-exported: it lived here

DEFAULT_COST_NS_PER_CALL = 20_000  # assumption: TLB shootdown + hypercall round trip
DEFAULT_COST_NS_PER_PAGE = 1_000  # assumption: per-page state change and validation


class EncryptionError(ValueError):
    """A conversion of pages that are not in the expected state; the message names the address."""


class MemoryEncryption:
    """Private/shared state of guest pages, with conversion counts and modelled cost."""

    def __init__(
        self,
        enabled: bool,
        *,
        page_size: int = 4096,
        cost_ns_per_page: int = DEFAULT_COST_NS_PER_PAGE,
        cost_ns_per_call: int = DEFAULT_COST_NS_PER_CALL,
    ) -> None:
        if page_size <= 0 or page_size & (page_size - 1):
            raise ValueError(f"page size {page_size} is not a power of two")
        self.enabled = enabled
        self.page_size = page_size
        self.cost_ns_per_page = cost_ns_per_page
        self.cost_ns_per_call = cost_ns_per_call
        self.stats = EncryptionStats()
        self._starts: list[int] = []  # shared ranges, sorted, disjoint, coalesced; [start, end)
        self._ends: list[int] = []
        self._shared_pages = 0

    # -- conversions -----------------------------------------------------------------------
    def set_decrypted(self, phys: int, npages: int, *, may_sleep: bool) -> int:
        """Share ``npages`` pages at ``phys`` with the host; returns the modelled cost in ns."""
        lo, hi = self._validate("set_decrypted", phys, npages, may_sleep)
        if not self.enabled:
            return 0
        i = bisect.bisect_right(self._starts, lo) - 1
        if i >= 0 and self._ends[i] > lo:
            raise EncryptionError(f"set_decrypted({phys:#x}, {npages}): page {lo:#x} is already shared")
        if i + 1 < len(self._starts) and self._starts[i + 1] < hi:
            nxt = self._starts[i + 1]
            raise EncryptionError(f"set_decrypted({phys:#x}, {npages}): page {nxt:#x} is already shared")
        intervals.insert(self._starts, self._ends, lo, hi)
        self._shared_pages += npages
        self.stats.decrypt_ops += 1
        self.stats.decrypted_pages += npages
        self.stats.shared_pages_hiwater = max(self.stats.shared_pages_hiwater, self._shared_pages)
        return self._charge(npages)

    def set_encrypted(self, phys: int, npages: int, *, may_sleep: bool) -> int:
        """Make ``npages`` shared pages at ``phys`` private again; returns the cost in ns."""
        lo, hi = self._validate("set_encrypted", phys, npages, may_sleep)
        if not self.enabled:
            return 0
        i = intervals.containing(self._starts, self._ends, lo)
        if i < 0:
            raise EncryptionError(f"set_encrypted({phys:#x}, {npages}): page {lo:#x} is not shared")
        if self._ends[i] < hi:
            raise EncryptionError(f"set_encrypted({phys:#x}, {npages}): page {self._ends[i]:#x} is not shared")
        intervals.carve(self._starts, self._ends, i, lo, hi)  # keep the parts outside [lo, hi)
        self._shared_pages -= npages
        self.stats.encrypt_ops += 1
        self.stats.encrypted_pages += npages
        return self._charge(npages)

    # -- queries ---------------------------------------------------------------------------
    def is_shared(self, phys: int, npages: int = 1) -> bool:
        """True when every page of ``[phys, phys + npages pages)`` is shared (always True when
        encryption is off: every page is then device-accessible)."""
        if not self.enabled:
            return True
        lo = phys - phys % self.page_size
        i = bisect.bisect_right(self._starts, lo) - 1
        return i >= 0 and self._ends[i] >= lo + npages * self.page_size

    @property
    def shared_bytes(self) -> int:
        return self._shared_pages * self.page_size

    def shared_ranges(self) -> list[tuple[int, int]]:
        """Shared ranges as ``(start, size)``, sorted and coalesced."""
        return [(s, e - s) for s, e in zip(self._starts, self._ends)]

    # -- internals -------------------------------------------------------------------------
    def _validate(self, what: str, phys: int, npages: int, may_sleep: bool) -> tuple[int, int]:
        if phys < 0 or phys % self.page_size:
            raise EncryptionError(f"{what}({phys:#x}, {npages}): address is not page aligned")
        if npages <= 0:
            raise EncryptionError(f"{what}({phys:#x}, {npages}): page count must be positive")
        if not may_sleep:
            raise SleepInAtomicContext(f"{what}({phys:#x}, {npages}) may sleep but was called from atomic context")
        return phys, phys + npages * self.page_size

    def _charge(self, npages: int) -> int:
        cost = self.cost_ns_per_call + npages * self.cost_ns_per_page
        self.stats.cost_ns += cost
        return cost

    def __repr__(self) -> str:
        state = "on" if self.enabled else "off"
        ops = f"{self.stats.decrypt_ops}+{self.stats.encrypt_ops}"
        return f"MemoryEncryption({state}, shared={self.shared_bytes:#x}, ops={ops})"
