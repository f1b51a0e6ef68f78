"""``lending``: a large region reserved at boot, lent to movable memory, reclaimed by migration.

This is a design sketch, not a kernel. It was never merged or posted as code. Its sources:

* **Where the idea comes from.** The brief of issue 3 §2 calls it the RFC's "alternative B", a
  CMA-like region. Spec §7.3 records RFC v1's ``DMA_ATTR_MAY_SLEEP`` ("caller may sleep (page
  reclaim/CMA)"). Christoph Hellwig said much the same in his review of v2 4/7 (LKML,
  2023-05-17): over-allocate the swiotlb buffer, make the unused part available "through a special
  CMA mechanism as ZONE_MOVABLE", reclaim it when needed, and note that this would need an
  IRQ-safe CMA. Spec §7.3 does not quote the cover letter's own wording.
* **The constraints.** Decrypting and encrypting memory in a confidential guest is costly, so it
  happens once per pool, never once per mapping (spec §7.3 v3 rationale, §5.4; scenario S12).
  Migrating pages may sleep, so atomic callers must never cause it (``alloc_contig`` refuses
  them, :mod:`swiotlb.memory.pages`). Slot mappings stay limited to 256 KiB (§1.6).
* **The scenarios it answers.** S4: the region sits below the device limit (1 GiB for vc4), like
  the RPi's CMA. S6: bounce memory nobody uses goes back to page cache. S12: the pool shrinks
  after a burst. The idle delay comes from the feature table (Hyper-V: pages idle > 30 s).

How the model works:

1. **Boot.** A CMA region ``[region_start, +region_bytes)`` is declared in the
   :class:`~swiotlb.memory.PageAllocator`. It should be as large as the static pool would have
   been (:meth:`LendingPolicy.region_size`). Its free pages are lent to ``__GFP_MOVABLE``
   allocations, such as :class:`~swiotlb.memory.BackgroundLoad` page cache. The policy claims
   ``min_chunks`` chunks of ``chunk_bytes`` at boot and turns each into an
   :class:`~swiotlb.core.IoTlbPool`. In CoCo each chunk is decrypted once.
2. **Map.** The normal slot search runs over every pool held (:meth:`IoTlbMem.tbl_map_single`).
   If no slot is found and the caller **may sleep**, the policy claims the next chunk
   (``alloc_contig`` from the region, below the device's limit). That migrates the lent pages out,
   and the migrated pages and their modelled cost are counted. The chunk is decrypted once,
   added with ``add_pool``, and the search runs again. An **atomic** caller never claims: it uses
   only the chunks already held, fails otherwise, and (``atomic_refill``) schedules one claim for
   :meth:`LendingPolicy.run_deferred`, like the 6.6 worker (§5.3). Requests over 256 KiB fail as
   too large without claiming anything.
3. **Give back.** A chunk whose slots all become free is stamped with the environment's clock.
   :meth:`LendingPolicy.run_deferred` encrypts a chunk that has stayed idle for ``idle_ns``,
   removes it and frees it back to the region, where it can be lent again. It always keeps
   ``min_chunks`` chunks. A boot pool given in ``mem`` is kept and never given back. When the
   Machine boots one, :meth:`LendingPolicy.boot_nslabs` limits it to one chunk, and
   ``min_chunks`` then defaults to 0.

Not modelled: the IRQ-safe CMA Hellwig mentions (here atomic callers never claim), and
concurrency between a claim and other page-allocator users. Migration counts are the allocator's
deltas around each claim.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from swiotlb.core import IoTlbMem, IoTlbPool, MapFailure, MapRefused, SlotMapping
from swiotlb.core.sizing import fit_nareas
from swiotlb.core.constants import IO_TLB_SEGSIZE, IO_TLB_SHIFT, IO_TLB_SIZE
from swiotlb.memory import GFP_KERNEL, Gfp
from swiotlb.policies.base import BouncePolicy, EventCounts, PolicyDevice
from swiotlb.policies.env import PolicyEnv

OWNER = "swiotlb-lending"  # page-allocator owner of claimed chunks
DEFAULT_CHUNK_BYTES = 4 << 20  # the 6.6 growth-pool cap, 2048 slots at 4 KiB pages (spec §5.4)
DEFAULT_IDLE_NS = 30_000_000_000  # Hyper-V frees bounce pages idle > 30 s (scenarios §2.10, S12)
DEFAULT_WORKER_DELAY_NS = 100_000  # schedule_work to the worker running, as linux-6.6 (assumed)
_SEGMENT_BYTES = IO_TLB_SEGSIZE * IO_TLB_SIZE  # 256 KiB


class LendingPolicy(BouncePolicy):
    """Bounce chunks claimed from a lent-out CMA region on demand, given back when idle.

    Knobs (keywords; see the module docstring for where each default comes from):

    * ``region_start``, ``region_bytes`` (required): a CMA region of ``env.pages``; its size
      should be the static pool's (:meth:`region_size`; 64 MiB by default, spec §1.3).
    * ``chunk_bytes`` (4 MiB): the size of each claim, a multiple of 256 KiB and of the page size.
    * ``min_chunks`` (1, or 0 when ``mem`` already has a boot pool): chunks claimed at boot and
      never given back.
    * ``idle_ns`` (30 s): how long a chunk must stay idle before it goes back to the region.
    * ``nareas`` (``mem.default_nareas``, reduced to fit a chunk): the areas of each chunk pool.
    * ``atomic_refill`` (True): after an atomic failure, schedule one claim in process context.
    * ``worker_delay_ns`` (100 us): how long after the failure that claim runs.
    """

    name: ClassVar[str] = "lending"

    def __init__(
        self,
        mem: IoTlbMem,
        env: PolicyEnv,
        *,
        region_start: int | None = None,
        region_bytes: int | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        min_chunks: int | None = None,
        idle_ns: int = DEFAULT_IDLE_NS,
        nareas: int | None = None,
        atomic_refill: bool = True,
        worker_delay_ns: int = DEFAULT_WORKER_DELAY_NS,
    ) -> None:
        if not mem.profile.dynamic_available:
            raise ValueError(f"kernel profile {mem.profile.name} predates multi-pool allocators (6.6)")
        pages = env.pages
        if region_start is None or region_bytes is None:
            raise ValueError(
                "the lending policy needs region_start and region_bytes naming a CMA region of the page allocator"
            )
        start, size = int(region_start), int(region_bytes)
        if chunk_bytes <= 0 or chunk_bytes % _SEGMENT_BYTES or chunk_bytes % pages.page_size:
            raise ValueError(
                f"chunk_bytes={chunk_bytes:#x} must be a positive multiple of 256 KiB and of the page size"
            )
        if size < chunk_bytes or start % pages.page_size or size % pages.page_size:
            raise ValueError(f"region [{start:#x}, +{size:#x}) must be page aligned and hold at least one chunk")
        end = start + size
        inside = end <= pages.total_bytes and pages.in_cma(start) and pages.in_cma(end - 1)
        whole = (
            inside and not (start and pages.in_cma(start - 1))
            and not (end < pages.total_bytes and pages.in_cma(end))
        )
        if not whole:  # alloc_contig has no lower bound: a part of a region cannot be claimed from alone
            raise ValueError(f"region [{start:#x}, {end:#x}) is not a (whole) CMA region of the page allocator")
        if start + size - 1 > mem.phys_limit:
            raise ValueError(
                f"region [{start:#x}, {start + size:#x}) ends above the allocator's phys_limit {mem.phys_limit:#x}"
            )
        if min_chunks is None:
            min_chunks = 0 if mem.pools else 1
        if min_chunks < 0 or min_chunks * chunk_bytes > size:
            raise ValueError(f"min_chunks={min_chunks} chunks of {chunk_bytes:#x} do not fit the region")
        if idle_ns < 0 or worker_delay_ns < 0:
            raise ValueError("idle_ns and worker_delay_ns must be >= 0")
        super().__init__(mem)
        mem.dynamic = True  # several pools; growth happens in map(), where may_sleep is known
        mem.can_grow = False
        self.env = env
        self.region_start, self.region_bytes = start, size
        self.region_end = start + size
        self.chunk_bytes = chunk_bytes
        self.chunk_nslabs = chunk_bytes >> IO_TLB_SHIFT
        self.min_chunks = min_chunks
        self.idle_ns = idle_ns
        self.nareas = fit_nareas(nareas or mem.default_nareas, self.chunk_nslabs)
        self.atomic_refill = atomic_refill
        self.worker_delay_ns = worker_delay_ns
        self.counts = EventCounts()
        self._lock = threading.Lock()
        self._chunks: list[IoTlbPool] = []  # claimed from the region, oldest first
        self._chunk_ids: set[int] = set()
        self._idle: dict[IoTlbPool, int] = {}  # chunk -> clock when its last slot was freed
        self._refill_due: int | None = None
        self._refill_limit: int | None = None
        for _ in range(min_chunks):  # boot: process context, the region is all free
            if self._claim(None) is None:
                break

    @classmethod
    def boot_nslabs(cls, planned: int, **knobs: Any) -> int:
        """A boot pool (the Machine's memblock pool) of at most one chunk: the region holds the rest."""
        chunk = int(knobs.get("chunk_bytes", DEFAULT_CHUNK_BYTES)) >> IO_TLB_SHIFT
        return min(planned, chunk)

    @classmethod
    def region_size(cls, planned_nslabs: int, **knobs: Any) -> int:
        """The region a boot should reserve: the static pool's size, at least one chunk."""
        chunk = int(knobs.get("chunk_bytes", DEFAULT_CHUNK_BYTES))
        return max(planned_nslabs << IO_TLB_SHIFT, chunk)

    # -- claiming and giving back ----------------------------------------------------------
    def _claim(self, limit: int | None) -> IoTlbPool | None:
        """Take the next chunk of the region (migrating lent pages; may sleep) and pool it."""
        pages, enc = self.env.pages, self.env.encryption
        top = self.region_end - 1 if limit is None else min(limit, self.region_end - 1)
        with self._lock:
            migrated, cost = pages.stats.migrated_pages, pages.stats.migration_cost_ns
            phys = pages.alloc_contig(
                self.chunk_bytes, limit=top, gfp=GFP_KERNEL | Gfp.NOWARN, owner=OWNER, cma_only=True
            )
            self.env.count_page_alloc(self.chunk_bytes)
            self.counts.add("migrated_pages", pages.stats.migrated_pages - migrated)
            self.counts.add("migration_cost_ns", pages.stats.migration_cost_ns - cost)
            if phys is not None and not self.region_start <= phys < self.region_end:
                pages.free_contig(phys)  # a lower CMA region answered: not ours to use
                self.counts.add("foreign_claims")
                phys = None
            if phys is None:
                self.counts.add("claim_failures")
                return None
            if self.env.coco:  # once per chunk, never per mapping
                enc.set_decrypted(phys, self.chunk_bytes // pages.page_size, may_sleep=True)
            pool = IoTlbPool(
                phys, self.chunk_nslabs, self.nareas, late_alloc=True,
                list_capped=self.mem.profile.list_capped, name="lending",
            )
            self.mem.add_pool(pool)
            self._chunks.append(pool)
            self._chunk_ids.add(id(pool))
            self._idle[pool] = self.env.now()
            self.counts.add("chunks_claimed")
            return pool

    def _give_back(self, pool: IoTlbPool) -> None:
        """Encrypt, unlist and free an idle chunk; its pages can be lent again. Caller holds the lock."""
        self.mem.remove_pool(pool)  # refuses a pool with slots in use
        self._chunks.remove(pool)
        self._chunk_ids.discard(id(pool))
        del self._idle[pool]
        if self.env.coco:
            self.env.encryption.set_encrypted(pool.start, self.chunk_bytes // self.env.page_size, may_sleep=True)
        self.env.pages.free_contig(pool.start)
        self.counts.add("chunks_returned")

    def run_deferred(self) -> int:
        """Process context: a scheduled refill claim, then idle chunks past ``idle_ns``; returns items run."""
        now = self.env.now()
        ran = 0
        with self._lock:
            due, limit = self._refill_due, self._refill_limit
            refill = due is not None and due <= now
            if refill:
                self._refill_due = self._refill_limit = None
        if refill:
            self.counts.add("deferred_claims")
            self._claim(limit)
            ran += 1
        with self._lock:
            for pool, since in sorted(self._idle.items(), key=lambda kv: kv[1]):
                if len(self._chunks) <= self.min_chunks or now - since < self.idle_ns:
                    break
                if pool.used == 0:
                    self._give_back(pool)
                    ran += 1
        return ran

    @property
    def next_due(self) -> int | None:
        """When :meth:`run_deferred` next has work (ns on the env clock), if ever without new events."""
        with self._lock:
            times = [self._refill_due] if self._refill_due is not None else []
            if len(self._chunks) > self.min_chunks and self._idle:
                times.append(min(self._idle.values()) + self.idle_ns)
        return min(times, default=None)

    def next_deadline(self) -> int | None:
        return self.next_due

    # -- the slot path ---------------------------------------------------------------------
    def search(
        self, dev: PolicyDevice, orig_addr: int, size: int, alloc_align_mask: int, *, cpu: int,
        alloc_size: int | None,
    ) -> SlotMapping | MapRefused:
        r = self.mem.tbl_map_single(dev, orig_addr, size, alloc_align_mask, cpu=cpu, alloc_size=alloc_size)
        if type(r) is SlotMapping and self._idle:
            self._idle.pop(r.pool, None)  # busy again: the idle clock stops
        return r

    def map(
        self, dev: PolicyDevice, orig_addr: int, size: int, alloc_align_mask: int = 0, *, cpu: int = 0,
        may_sleep: bool = False, attrs: int = 0, alloc_size: int | None = None,
    ) -> SlotMapping | MapRefused:
        """The slot search; on failure :meth:`_grow_or_fail` (which keeps ``alloc_size`` for the retry)."""
        r = self.search(dev, orig_addr, size, alloc_align_mask, cpu=cpu, alloc_size=alloc_size)
        if type(r) is MapRefused:
            return self._grow_or_fail(dev, orig_addr, size, alloc_align_mask, r, cpu, may_sleep, alloc_size)
        return r

    def on_map_failure(
        self, dev: PolicyDevice, orig_addr: int, size: int, alloc_align_mask: int, refused: MapRefused,
        *, cpu: int, may_sleep: bool, attrs: int,
    ) -> SlotMapping | MapRefused:
        return self._grow_or_fail(dev, orig_addr, size, alloc_align_mask, refused, cpu, may_sleep, None)

    def _grow_or_fail(
        self, dev: PolicyDevice, orig_addr: int, size: int, alloc_align_mask: int, refused: MapRefused,
        cpu: int, may_sleep: bool, alloc_size: int | None,
    ) -> SlotMapping | MapRefused:
        """Claim a chunk for a sleeping caller and retry; an atomic caller fails (and may schedule a claim)."""
        if refused.cause not in (MapFailure.FULL, MapFailure.NO_POOL):
            self.counts.add("failed_too_large" if refused.cause is MapFailure.TOO_LARGE else "failed_other")
            return refused
        limit: int | None = getattr(dev, "dma_limit", None)
        if not may_sleep:
            self.counts.add("failed_atomic")
            if self.atomic_refill:
                with self._lock:
                    if self._refill_due is None:
                        self._refill_due = self.env.now() + self.worker_delay_ns
                        self.counts.add("refills_scheduled")
                    if limit is not None:
                        old = self._refill_limit
                        self._refill_limit = limit if old is None else min(old, limit)
            return refused
        if self._claim(limit) is None:
            self.counts.add("failed_claim")
            return refused
        r = self.search(dev, orig_addr, size, alloc_align_mask, cpu=cpu, alloc_size=alloc_size)
        if type(r) is MapRefused:
            self.counts.add("failed_claim")
        return r

    def release(self, dev: PolicyDevice, tlb_addr: int, pool: IoTlbPool | None = None) -> int:
        """``swiotlb_release_slots``; a chunk left with no slot in use starts its idle clock."""
        if pool is None:
            pool = self.mem.find_pool(tlb_addr)
        n = self.mem.release_slots(dev, tlb_addr, pool)
        if pool is not None and pool.used == 0 and id(pool) in self._chunk_ids:
            self._idle.setdefault(pool, self.env.now())
        return n

    def is_active(self, dev: PolicyDevice) -> bool:
        """Bouncing is possible while slots are held or the region can provide them."""
        return True

    # -- observation -----------------------------------------------------------------------
    @property
    def chunks(self) -> list[IoTlbPool]:
        """The chunks claimed from the region, oldest first."""
        with self._lock:
            return list(self._chunks)

    def footprint(self) -> tuple[int, int]:
        """``(reserved, in_use)`` bytes: pools held for bouncing (not the lent region), slots used."""
        return self.mem.nslabs << IO_TLB_SHIFT, self.mem.total_used << IO_TLB_SHIFT

    def stats(self) -> dict[str, Any]:
        reserved, in_use = self.footprint()
        enc = self.env.encryption.stats
        failures = sum(v for k, v in self.counts.snapshot().items() if k.startswith("failed_"))
        return {
            **super().stats(),
            **self.counts.snapshot(),
            "failures": failures,
            "chunks": len(self._chunks),
            "region_bytes": self.region_bytes,
            "reserved_bytes": reserved,
            "in_use_bytes": in_use,
            "decrypt_ops": enc.decrypt_ops,
            "encrypt_ops": enc.encrypt_ops,
        }
