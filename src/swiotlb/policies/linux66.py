"""``linux-6.6``: CONFIG_SWIOTLB_DYNAMIC as merged in Linux 6.6 (spec §5).

Petr Tesarik's series (v5, merged for 6.6) lets the allocator grow:

* When a mapping finds no slot in any listed pool, ``swiotlb_find_slots`` schedules the growth
  worker (``schedule_work``; a pending item is not queued twice) and then, synchronously, tries
  a *transient pool*: exactly ``nr_slots(size)`` slots with one area from a non-sleeping
  allocation below the device's DMA limit, on the device's own list, freed when its one buffer
  is unmapped (§5.5). Requests over 256 KiB are rejected before any of this from 6.8/6.9 on.
* The worker (``swiotlb_dyn_alloc``, §5.3) runs later in process context. It allocates a pool
  of ``default_nslabs`` slots, capped at MAX_PAGE_ORDER pages and halved down to 1 MiB on
  failure (``swiotlb_alloc_pool``, §5.4), and inserts it at the head of the pool list.
* Grown pools are never freed. Lookups walk the pool list, and only for devices that have used
  swiotlb (``dma_uses_io_tlb``, §5.6).

In this model the worker runs at :meth:`Linux66Policy.run_deferred`, once its delay has passed
on the environment's clock; a simulator calls it at the scheduled time, and tests call it
directly. Pool order within the search (pool-major until 6.7, area-major from 6.8) comes from the
kernel profile.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

from swiotlb._mypyc import mypyc_attr
from swiotlb.core import IoTlbMem, IoTlbPool, MapRefused, SlotMapping
from swiotlb.core.allocator import DmaParams
from swiotlb.core.constants import IO_TLB_MIN_SLABS, IO_TLB_SHIFT, nr_slots
from swiotlb.core.sizing import fit_nareas, halving_sizes
from swiotlb.policies.base import BouncePolicy, EventCounts, PolicyDevice
from swiotlb.policies.env import PolicyEnv

DEFAULT_WORKER_DELAY_NS = 100_000  # schedule_work to the worker running: a wake-up, assumed


def alloc_pool(
    env: PolicyEnv, mem: IoTlbMem, minslabs: int, nslabs: int, nareas: int, limit: int | None, *,
    may_sleep: bool, transient: bool, max_slabs: int | None = None,
) -> IoTlbPool | None:
    """``swiotlb_alloc_pool`` (§5.4): a pool below ``limit``, halved down to ``minslabs``.

    ``max_slabs`` defaults to the kernel's cap of MAX_PAGE_ORDER pages (4 MiB with 4 KiB
    pages); a policy that allocates in process context may lift it (contiguous memory).
    """
    cap = max_slabs if max_slabs is not None else (env.page_size >> IO_TLB_SHIFT) << env.pages.max_order
    if nslabs > cap:
        nslabs = cap
    for nslabs in halving_sizes(nslabs, minslabs):
        tlb = env.alloc_bounce(nslabs << IO_TLB_SHIFT, limit=limit, may_sleep=may_sleep, owner="swiotlb")
        if tlb is not None:
            break
    else:
        return None
    try:
        return IoTlbPool(
            tlb, nslabs, fit_nareas(nareas, nslabs), late_alloc=True, transient=transient,
            list_capped=mem.profile.list_capped, name="transient" if transient else "grown",
        )
    except Exception:
        env.free_bounce(tlb, nslabs << IO_TLB_SHIFT, may_sleep=may_sleep, owner="swiotlb")
        raise


def make_transient(
    env: PolicyEnv, mem: IoTlbMem, dev: DmaParams, orig_addr: int, size: int, alloc_align_mask: int,
    limit: int | None,
) -> tuple[IoTlbPool, int] | str:
    """A transient pool holding this one mapping (§5.5), or why there is none.

    Exactly ``nr_slots(size)`` slots, one area, from a non-sleeping allocation. The pool is
    given back at once when the mapping does not fit it (a min-align offset needing a slot the
    pool lacks) or when the modelled kernel would overrun it; nothing is left behind.
    """
    n = nr_slots(size)
    pool = alloc_pool(env, mem, n, n, 1, limit, may_sleep=False, transient=True)
    if pool is None:
        return "transient_failed"
    mem.add_pool(pool)
    try:
        slot = mem.search_pool_area(dev, pool, 0, orig_addr, size, alloc_align_mask)
    except BaseException:
        drop_transient(env, mem, pool, used=False)
        raise
    if slot < 0:
        drop_transient(env, mem, pool, used=False)
        return "transient_unusable"
    return pool, slot


def drop_transient(env: PolicyEnv, mem: IoTlbMem, pool: IoTlbPool, *, used: bool = True) -> None:
    """``swiotlb_del_transient`` and the free (an RCU callback: never sleeps; §5.5)."""
    if used:
        mem.del_transient(pool)
    else:
        mem.remove_pool(pool)
    env.free_bounce(pool.start, pool.nslabs << IO_TLB_SHIFT, may_sleep=False, owner="swiotlb")


@mypyc_attr(allow_interpreted_subclasses=True)  # subclassed outside the mypyc build (tests)
class Linux66Policy(BouncePolicy):
    """Linux 6.6+ dynamic SWIOTLB: growth worker, transient pools, no shrinking (spec §5).

    Knobs (keywords):

    * ``default_nslabs`` (the boot pool's size): slots the worker asks for, the kernel's
      file-static ``default_nslabs``; capped at MAX_PAGE_ORDER pages (§5.4).
    * ``default_nareas`` (the allocator's ``default_nareas``): areas of a grown pool, before
      ``limit_nareas``; it also bounds the area-major walk (§3.2).
    * ``worker_delay_ns`` (100 µs, an assumption): from ``schedule_work`` to the worker
      running; sweep it.
    * ``transient`` (True): the synchronous transient-pool fallback; False models a kernel
      with growth but no transient pools.
    """

    name = "linux-6.6"

    @classmethod
    def knobs_schema(cls) -> dict[str, Any]:
        """Knob names and defaults, as ``__init__`` declares them: the compiled build keeps no
        signature to read them from (tests/policies/test_config.py checks the two agree)."""
        return {"default_nslabs": None, "default_nareas": None, "worker_delay_ns": DEFAULT_WORKER_DELAY_NS,
                "transient": True}

    def __init__(
        self,
        mem: IoTlbMem,
        env: PolicyEnv,
        *,
        default_nslabs: int | None = None,
        default_nareas: int | None = None,
        worker_delay_ns: int = DEFAULT_WORKER_DELAY_NS,
        transient: bool = True,
    ) -> None:
        if not mem.profile.dynamic_available:
            raise ValueError(f"kernel profile {mem.profile.name} predates CONFIG_SWIOTLB_DYNAMIC (6.6)")
        super().__init__(mem)
        mem.dynamic = True
        mem.can_grow = bool(mem.pools)  # no boot pool, no growth (spec §5.1)
        mem.on_exhausted = self._exhausted
        self.env = env
        self.default_nslabs = default_nslabs or (mem.pools[-1].nslabs if mem.pools else 0)
        self.default_nareas = default_nareas or mem.default_nareas
        self.worker_delay_ns = worker_delay_ns
        self.transient_enabled = transient
        self._lock = threading.Lock()
        self._work_due: int | None = None
        self._transient: dict[str, list[IoTlbPool]] = defaultdict(list)
        self._uses_io_tlb: set[str] = set()
        self.counts = EventCounts()

    # -- the search and its fallbacks ------------------------------------------------------
    def search(
        self, dev: PolicyDevice, orig_addr: int, size: int, alloc_align_mask: int, *, cpu: int,
        alloc_size: int | None,
    ) -> SlotMapping | MapRefused:
        r = self.mem.tbl_map_single(dev, orig_addr, size, alloc_align_mask, cpu=cpu, alloc_size=alloc_size)
        if type(r) is SlotMapping:
            self._uses_io_tlb.add(dev.name)  # dma_uses_io_tlb, set once and never cleared
        return r

    def _exhausted(
        self, dev: DmaParams, orig_addr: int, size: int, alloc_align_mask: int, cpu: int
    ) -> tuple[IoTlbPool, int] | None:
        """Every listed pool failed: schedule the worker, then try a transient pool (§3.2, §5.5)."""
        self._schedule_worker()
        if not self.transient_enabled:
            return None
        limit: int | None = getattr(dev, "dma_limit", None)
        made = make_transient(self.env, self.mem, dev, orig_addr, size, alloc_align_mask, limit)
        if isinstance(made, str):
            self.counts.add(made)
            return None
        pool, slot = made
        name = getattr(dev, "name", "")
        with self._lock:
            self._transient[name].insert(0, pool)
        self.counts.add("transient_created")
        return pool, slot

    def _schedule_worker(self) -> None:
        if not self.mem.can_grow:
            return
        with self._lock:
            if self._work_due is None:
                self._work_due = self.env.now() + self.worker_delay_ns
                self.counts.add("worker_scheduled")

    # -- pools -----------------------------------------------------------------------------
    def run_deferred(self) -> int:
        """Run the growth worker if it is due on the environment's clock (§5.3)."""
        with self._lock:
            due = self._work_due
            if due is None or due > self.env.now():
                return 0
            self._work_due = None
        pool = alloc_pool(
            self.env, self.mem, IO_TLB_MIN_SLABS, self.default_nslabs, self.default_nareas,
            self.mem.phys_limit, may_sleep=True, transient=False,
        )
        if pool is None:
            self.counts.add("worker_failed")  # "Failed to allocate new pool"
        else:
            self.mem.add_pool(pool)
            self.counts.add("pools_created")
        return 1

    @property
    def worker_due(self) -> int | None:
        """When the scheduled growth worker runs (ns on the environment's clock), if pending."""
        return self._work_due

    def next_deadline(self) -> int | None:
        return self._work_due

    # -- release and lookups ---------------------------------------------------------------
    def release(self, dev: PolicyDevice, tlb_addr: int, pool: IoTlbPool | None = None) -> int:
        if pool is None:
            pool = self.find_pool(dev, tlb_addr)
            if pool is None:
                return self.mem.release_slots(dev, tlb_addr)  # raises the core's ReleaseError
        if not pool.transient:
            return self.mem.release_slots(dev, tlb_addr, pool)
        n = self.mem.release_slots(dev, tlb_addr, pool)  # validates the address first
        with self._lock:
            self._transient[dev.name].remove(pool)
        drop_transient(self.env, self.mem, pool)
        self.counts.add("transient_freed")
        return n

    def find_pool(self, dev: PolicyDevice, paddr: int) -> IoTlbPool | None:
        """``swiotlb_find_pool`` (§5.6): nothing for devices that never bounced, else the walk."""
        if dev.name not in self._uses_io_tlb and not self._transient.get(dev.name):
            return None
        for pool in self.mem.pools:
            if pool.start <= paddr < pool.end:
                return pool
        for pool in self._transient.get(dev.name, ()):
            if pool.start <= paddr < pool.end:
                return pool
        return None

    # -- observation -----------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        reserved, in_use = self.footprint()
        enc = self.env.encryption.stats
        return {
            **super().stats(),
            **self.counts.snapshot(),
            "pools": len(self.mem.pools),
            "reserved_bytes": reserved,
            "in_use_bytes": in_use,
            "decrypt_ops": enc.decrypt_ops,
            "encrypt_ops": enc.encrypt_ops,
        }
