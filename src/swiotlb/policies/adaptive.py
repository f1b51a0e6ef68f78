"""``adaptive``: our grow-and-shrink design, built from what the other systems do well.

Each rule answers a documented weakness of the Linux designs (scenarios.md §2.10, S1, S4, S6, S12):

* **Grow before failing.** After every successful map, if a zone's use passes the high
  watermark (``high_watermark`` of its reserved slots), the worker is scheduled to add a pool
  before the zone runs out. Linux 6.6 waits for a failure first.
* **Grow in process context, in big pieces.** The worker may sleep, so it allocates
  contiguous memory (beyond MAX_PAGE_ORDER when it has to) and makes it shared once per pool.
  Decrypt and encrypt operations scale with pool changes, never with mappings (Tesarik's v5
  constraint; swiotlb.rst calls them costly).
* **A sleeping caller never fails for lack of slots** while memory allows: it grows the zone
  synchronously and retries. An atomic caller gets a linux-6.6 style transient pool (atomic
  allocation, pre-decrypted memory in a confidential guest) and the worker is scheduled.
* **Shrink with hysteresis.** A grown pool that stays completely idle for ``idle_ns``
  (Hyper-V frees bounce pages idle for more than 30 s) goes back to the page allocator,
  keeping at least ``min_keep_slabs`` per zone.
* **Zones per address limit** (FreeBSD bounce zones). A device that cannot reach all of RAM
  gets its own zone, whose pools lie below its limit. A 64-bit device filling its pools never
  starves a 30-bit one.
* **Start small.** The boot pool is ``initial_slabs`` slots (1 MiB by default), not 64 MiB.
* **Keep nothing for tiny demand.** A zone whose use stayed at or below
  ``small_demand_slabs`` (128 KiB) for a whole ``idle_ns`` window gives back every empty
  pool, the boot pool too, and serves its rare maps with exact-size transient pools (a page
  allocation each). It grows a standing pool again as soon as a window's use passes the
  threshold. This is what frees the embedded board's memory (S6: 8 KiB on average, not 1 MiB).
* **Big steps where steps cost.** In a confidential guest every growth is a conversion, so the
  smallest growth scales with RAM (RAM / 1024, 2-64 MiB); elsewhere it is 2 MiB.
* **A buffer of its own for what slots cannot hold.** A mapping larger than
  ``max_mapping_size`` (the Raspberry Pi 4's 8-34 MiB dma-buf frames, S4) gets one contiguous
  buffer below the device's limit, as RFC v1 does (:class:`~swiotlb.policies.buffers.DedicatedBuffers`).
  Only a sleeping caller can get CMA memory; an atomic one gets what the environment allows
  without sleeping, and fails as too large otherwise. In a confidential guest each such buffer
  costs its own decrypt and encrypt: acceptable because these maps are rare and huge, and no
  pool design could serve them at all. Growth is never tried for them.
* **Search roomy areas first.** Growth pools are small, so a few busy CPUs fill their own
  areas of every pool while the other areas stay empty, and the kernel's next-fit loop then
  walks a nearly full area to reach its last free slots (S1: 1,024-2,047 iterations for each of
  32 k maps). The zone's search leaves such a crowded area (``crowded_share``) for a second
  pass after one cursor probe, and each CPU remembers where small and large maps last found
  room (:meth:`IoTlbMem.roomy_first`). A map still fails only where the kernel's walk fails.
* **Defer instead of failing** (FreeBSD busdma, SPDK iobuf). When even growth and a transient
  pool cannot make room, a caller that may sleep and gave a callback is queued, FIFO per zone
  (:class:`~swiotlb.policies.deferral.DeferralQueue`), and completed from :meth:`run_deferred`
  after slots are released or a pool is added. Atomic callers and mappings no pool can ever
  hold fail at once.

Knobs, their defaults and what each one trades off are in :class:`AdaptiveKnobs`.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field, fields
from typing import Any

from swiotlb._mypyc import mypyc_attr
from swiotlb.core import BounceSpan, IoTlbMem, IoTlbPool, MapRefused, SlotMapping
from swiotlb.core.allocator import DmaParams
from swiotlb.core.constants import IO_TLB_MIN_SLABS, IO_TLB_SEGSIZE, IO_TLB_SHIFT, get_max_slots, nr_slots
from swiotlb.core.sizing import limit_nareas
from swiotlb.policies.base import (
    BounceMapping,
    BouncePolicy,
    BufferMapping,
    DeferredRetry,
    EventCounts,
    PolicyDevice,
    PoolHandle,
)
from swiotlb.policies.buffers import DedicatedBuffers, DynamicBuffer
from swiotlb.policies.deferral import DeferralQueue
from swiotlb.policies.env import PolicyEnv
from swiotlb.policies.linux66 import alloc_pool, drop_transient, make_transient

LARGE_OWNER = "swiotlb-large"  # page-allocator owner tag of the buffers for oversized mappings


@dataclass(frozen=True)
class AdaptiveKnobs:
    """Tuning of :class:`AdaptivePolicy`; every default is documented with its reason."""

    initial_slabs: int = IO_TLB_MIN_SLABS  # boot pool: 1 MiB, the kernel's minimum pool
    high_watermark: float = 0.75  # grow when a zone is 3/4 used: headroom for a burst
    growth_factor: float = 1.0  # each growth adds this times the zone's reserved slots
    # At least this much per growth. None: 2 MiB, but in a confidential guest RAM / 1024
    # clamped to [2 MiB, 64 MiB] (arm64's default-pool rule): every growth there costs a
    # conversion, so a 64 GiB guest grows in fewer, larger steps (S1: 3 conversions, not 7).
    min_grow_slabs: int | None = None
    max_grow_slabs: int = 32768  # at most 64 MiB per growth (one contiguous allocation)
    max_total_slabs: int = 524288  # never more than 1 GiB per zone (the CoCo cap)
    worker_delay_ns: int = 100_000  # from schedule_work to the worker running (assumed)
    idle_ns: int = 30_000_000_000  # free pools idle this long (Hyper-V: 30 s)
    min_keep_slabs: int = IO_TLB_MIN_SLABS  # each zone keeps at least 1 MiB
    transient: bool = True  # atomic callers may fall back to an exact-size transient pool
    # A zone whose use never passed this many slots during a whole idle_ns window keeps no
    # standing pool: it frees its empty pools (the boot pool too) and serves its rare maps
    # with exact-size transient pools, one page allocation each (S6's idle board). 0: off.
    small_demand_slabs: int = 64
    # Mappings above max_mapping_size get a contiguous buffer of their own (S4); off = refused
    # as too large, as every slot design does.
    large_buffers: bool = True
    # Search roomy areas first: an area with less than this share of its slots free is
    # crowded, and a search tries it only after every roomy area (IoTlbMem.roomy_first). The
    # kernel's next-fit loop walks a crowded area from its cursor to the few free slots left,
    # up to the whole area: on S1, 4 fio CPUs fill areas 0-3 of every 8-area growth pool while
    # areas 4-7 stay empty. 0: the kernel's walk.
    crowded_share: float = 0.25

    def __post_init__(self) -> None:
        if not 0.0 < self.high_watermark <= 1.0:
            raise ValueError(f"high_watermark={self.high_watermark}: must be in (0, 1]")
        if self.growth_factor <= 0:
            raise ValueError(f"growth_factor={self.growth_factor}: must be positive")
        for name in ("initial_slabs", "min_grow_slabs", "max_grow_slabs", "max_total_slabs", "min_keep_slabs"):
            value = getattr(self, name)
            if value is None:
                continue
            if value < IO_TLB_SEGSIZE or value % IO_TLB_SEGSIZE:
                raise ValueError(f"{name}={value}: must be a positive multiple of {IO_TLB_SEGSIZE} slots")
        if self.min_grow_slabs is not None and self.min_grow_slabs > self.max_grow_slabs:
            raise ValueError(f"min_grow_slabs={self.min_grow_slabs} exceeds max_grow_slabs={self.max_grow_slabs}")
        if not 0.0 <= self.crowded_share <= 1.0:
            raise ValueError(f"crowded_share={self.crowded_share}: must be in [0, 1]")
        if self.small_demand_slabs < 0:
            raise ValueError(f"small_demand_slabs={self.small_demand_slabs}: must not be negative")
        if self.idle_ns < 0 or self.worker_delay_ns < 0:
            raise ValueError("idle_ns and worker_delay_ns must not be negative")

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass
class BounceZone:
    """The pools serving one address limit, with their own allocator and timers."""

    limit: int | None  # highest address its memory may have; None = anywhere
    mem: IoTlbMem
    waiters: DeferralQueue  # deferred maps waiting for room in this zone (FIFO)
    work_due: int | None = None
    # id(pool) -> ns it went idle. Change it only through went_idle and went_busy, which keep
    # first_idle, the oldest of these times, without a pass over them.
    idle_since: dict[int, int] = field(default_factory=dict)
    transient: dict[str, list[IoTlbPool]] = field(default_factory=lambda: defaultdict(list))
    window_start: int = 0  # the demand window: when it began ...
    window_peak: int = 0  # ... and the most slots in use (transient ones included) since
    # min(idle_since.values()), or None when there is none, while _first_idle_known holds;
    # else found again when next asked (set in __post_init__: a compiled dataclass has no
    # class-level defaults for fields outside __init__)
    _first_idle: int | None = field(init=False, repr=False)
    _first_idle_known: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._first_idle = None
        self._first_idle_known = not self.idle_since

    def quiet(self, small_demand_slabs: int) -> bool:
        """Has this window's demand stayed small enough to need no standing pool?"""
        return small_demand_slabs > 0 and self.window_peak <= small_demand_slabs

    def went_idle(self, key: int, now: int) -> None:
        """The pool ``key`` (its id) went idle at ``now``."""
        old = self.idle_since.get(key)
        self.idle_since[key] = now
        if not self._first_idle_known:
            return
        first = self._first_idle
        if old is not None and old == first:
            self._first_idle_known = False  # the oldest time moved: find it when next asked
        elif first is None or now < first:
            self._first_idle = now

    def went_busy(self, key: int) -> None:
        """The pool ``key`` is no longer idle (it is in use, kept or gone)."""
        old = self.idle_since.pop(key, None)
        if old is not None and old == self._first_idle:
            self._first_idle_known = False

    def first_idle(self) -> int | None:
        """When the longest-idle pool went idle (None: none is idle).

        A simulator asks for the next deadline after every map and unmap (see
        :meth:`AdaptivePolicy.next_deadline`), and the minimum over the idle pools was most of
        that cost; it changes only when the oldest entry goes or is renewed.
        """
        if not self._first_idle_known:
            self._first_idle = min(self.idle_since.values()) if self.idle_since else None
            self._first_idle_known = True
        return self._first_idle

    @property
    def reserved_slabs(self) -> int:
        return self.mem.nslabs


@mypyc_attr(allow_interpreted_subclasses=True)  # subclassed outside the mypyc build
class AdaptivePolicy(BouncePolicy):
    """Grow before failing, shrink when idle, one zone per device address limit."""

    name = "adaptive"

    def __init__(self, mem: IoTlbMem, env: PolicyEnv, **knobs: Any) -> None:
        unknown = sorted(set(knobs) - set(AdaptiveKnobs.names()))
        if unknown:
            raise ValueError(f"unknown adaptive knobs {unknown}; known: {AdaptiveKnobs.names()}")
        if not mem.profile.dynamic_available:
            raise ValueError(f"kernel profile {mem.profile.name} predates multi-pool allocators (6.6)")
        super().__init__(mem)
        self.knobs = AdaptiveKnobs(**knobs)
        self.env = env
        self._lock = threading.RLock()
        self.counts = EventCounts()
        self.top_of_ram = env.pages.total_bytes - 1
        if self.knobs.min_grow_slabs is not None:
            self.min_grow_slabs = self.knobs.min_grow_slabs
        else:
            by_ram = (env.pages.total_bytes >> 10 >> IO_TLB_SHIFT) // IO_TLB_SEGSIZE * IO_TLB_SEGSIZE
            grow = min(max(by_ram, 1024), 32768) if env.coco else 1024
            self.min_grow_slabs = min(grow, self.knobs.max_grow_slabs)
        default = self._setup_zone(mem, limit=None if mem.phys_limit >= self.top_of_ram else mem.phys_limit)
        self._zones: dict[int | None, BounceZone] = {None: default}
        self._default = default  # self._zones[None], always there
        self._unaligned_max_mapping: int | None = None  # max_mapping_size without min_align_mask
        self._zone_of_pool: dict[int, BounceZone] = {id(p): default for p in mem.pools}
        self._uses: set[str] = set()
        self.large = DedicatedBuffers(env, owner=LARGE_OWNER)
        self._hiwater = 0  # peak of io_tlb_used over all zones (one zone: the allocator's own)
        self._ctx = threading.local()  # whether the map in progress on this thread may sleep

    @classmethod
    def knobs_schema(cls) -> dict[str, Any]:
        """Knob names and defaults (see :class:`AdaptiveKnobs`)."""
        return {f.name: f.default for f in fields(AdaptiveKnobs)}

    @classmethod
    def boot_nslabs(cls, planned: int, **knobs: Any) -> int:
        """The boot pool this policy wants instead of the kernel's ``planned`` size."""
        return min(planned, int(knobs.get("initial_slabs", cls.knobs_schema()["initial_slabs"])))

    def _setup_zone(self, mem: IoTlbMem, limit: int | None) -> BounceZone:
        mem.dynamic = True
        mem.can_grow = True
        mem.serve_without_pools = self.knobs.small_demand_slabs > 0  # transient pools only, when quiet
        if self.knobs.crowded_share:
            mem.roomy_first(self.knobs.crowded_share)
        zone = BounceZone(limit, mem, DeferralQueue(self.env.now), window_start=self.env.now())
        mem.on_exhausted = lambda dev, orig, size, align, cpu: self._exhausted(zone, dev, orig, size, align, cpu)
        return zone

    # -- zones -----------------------------------------------------------------------------
    def _zone_for(self, dev: PolicyDevice) -> BounceZone:
        limit = dev.dma_limit
        if limit >= self.top_of_ram:
            return self._default
        with self._lock:
            zone = self._zones.get(limit)
            if zone is None:
                mem = IoTlbMem(
                    [], self.mem.profile, page_size=self.mem.page_size, force_bounce=self.mem.force_bounce,
                    dynamic=True, phys_limit=limit, default_nareas=self.mem.default_nareas,
                    count_steps=self.mem.steps if self.mem.steps is not None else False,
                )
                zone = self._setup_zone(mem, limit)
                self._zones[limit] = zone
                self.counts.add("zones")
            return zone

    def attach_device(self, dev: PolicyDevice) -> None:
        """A limited device gets its zone, and the zone its first pool, while we may sleep."""
        zone = self._zone_for(dev)
        if not zone.mem.pools:
            self._grow(zone, self.knobs.initial_slabs)

    # -- mapping ---------------------------------------------------------------------------
    def map(
        self, dev: PolicyDevice, orig_addr: int, size: int, alloc_align_mask: int = 0, *, cpu: int = 0,
        may_sleep: bool = False, attrs: int = 0, alloc_size: int | None = None,
    ) -> BounceMapping | MapRefused:
        if self._needs_buffer(dev, size, alloc_align_mask, alloc_size):
            buf = self.large.alloc(
                dev, orig_addr, size if alloc_size is None else alloc_size, may_sleep=may_sleep,
                avoid=[p for z in list(self._zones.values()) for p in z.mem.pools],
            )
            if buf is not None:
                self._uses.add(dev.name)
                return BufferMapping(buf.phys, buf)
            self.counts.add("large_failed")  # the slot search below reports it as too large
        return self._map_slots(dev, orig_addr, size, alloc_align_mask, cpu, may_sleep, alloc_size)

    def _needs_buffer(self, dev: PolicyDevice, size: int, alloc_align_mask: int, alloc_size: int | None) -> bool:
        """Can no slot run hold this mapping, and may a buffer of its own serve it instead?

        Only without alignment constraints: a buffer starts on a page, so it cannot keep a
        device's ``min_align_mask`` offset or an IOMMU's ``alloc_align_mask`` (drivers with
        those respect ``max_mapping_size`` anyway). Invalid sizes are left to the slot path.
        """
        if not self.knobs.large_buffers or alloc_align_mask or dev.min_align_mask:
            return False
        if alloc_size is not None and size > alloc_size:
            return False
        limit = self._unaligned_max_mapping
        if limit is None:  # depends on the device's min_align_mask only, which is 0 here
            limit = self._unaligned_max_mapping = self.max_mapping_size(dev)
        return (size if alloc_size is None else alloc_size) > limit

    def _map_slots(
        self, dev: PolicyDevice, orig_addr: int, size: int, alloc_align_mask: int, cpu: int, may_sleep: bool,
        alloc_size: int | None,
    ) -> SlotMapping | MapRefused:
        zone = self._zone_for(dev)
        mem = zone.mem
        if not mem.nslabs and not zone.quiet(self.knobs.small_demand_slabs):
            # a zone whose first pool could not be had yet, or whose demand came back
            if may_sleep:
                self._grow(zone, self.knobs.initial_slabs)
            else:
                self._schedule(zone)
        self._ctx.sleeping = may_sleep  # read by _exhausted, which the core calls from inside the map
        r = mem.tbl_map_single(dev, orig_addr, size, alloc_align_mask, cpu=cpu, alloc_size=alloc_size)
        if type(r) is SlotMapping:
            self._uses.add(dev.name)
            zone.went_busy(id(r.pool))
            if mem.total_used > zone.window_peak:
                zone.window_peak = mem.total_used
                if not mem.nslabs and not zone.quiet(self.knobs.small_demand_slabs):
                    self._schedule(zone)  # demand came back to a zone living on transient pools
            if not r.pool.transient and mem.total_used > self.knobs.high_watermark * mem.nslabs:
                self._schedule(zone)
            if len(self._zones) > 1:  # the peak of the sum, not the sum of the zones' peaks
                total = sum(z.mem.total_used for z in list(self._zones.values()))
                if total > self._hiwater:
                    self._hiwater = total
        return r

    def search(
        self, dev: PolicyDevice, orig_addr: int, size: int, alloc_align_mask: int, *, cpu: int,
        alloc_size: int | None,
    ) -> SlotMapping | MapRefused:
        return self._map_slots(dev, orig_addr, size, alloc_align_mask, cpu, False, alloc_size)

    def _exhausted(
        self, zone: BounceZone, dev: DmaParams, orig_addr: int, size: int, alloc_align_mask: int, cpu: int
    ) -> tuple[IoTlbPool, int] | None:
        """No pool of the zone had room: grow now if the caller sleeps, else go transient."""
        n = nr_slots(size)
        if n > min(IO_TLB_SEGSIZE, get_max_slots(dev.seg_boundary_mask)):
            return None  # no pool of any size holds it: growing would only waste memory
        if getattr(self._ctx, "sleeping", False) and not (
            not zone.mem.nslabs and zone.quiet(self.knobs.small_demand_slabs)
        ):
            pool = self._grow(zone, self._growth_slabs(zone, n))
            if pool is not None:
                slot = zone.mem.search_pool_area(dev, pool, 0, orig_addr, size, alloc_align_mask)
                for a in range(1, pool.nareas):
                    if slot >= 0:
                        break
                    slot = zone.mem.search_pool_area(dev, pool, a, orig_addr, size, alloc_align_mask)
                if slot >= 0:
                    self.counts.add("sync_growths_used")
                    return pool, slot
        if zone.mem.nslabs or not zone.quiet(self.knobs.small_demand_slabs):
            self._schedule(zone)  # a quiet zone without pools stays so: no worker
        if not self.knobs.transient:
            return None
        made = make_transient(self.env, zone.mem, dev, orig_addr, size, alloc_align_mask, zone.limit)
        if isinstance(made, str):
            self.counts.add(made)
            return None
        pool, slot = made
        with self._lock:
            zone.transient[getattr(dev, "name", "")].insert(0, pool)
            self._zone_of_pool[id(pool)] = zone
        self.counts.add("transient_created")
        return pool, slot

    # -- growth and shrinking --------------------------------------------------------------
    def _growth_slabs(self, zone: BounceZone, need: int = 0) -> int:
        k = self.knobs
        want = max(self.min_grow_slabs, int(zone.mem.nslabs * k.growth_factor), need)
        want = min(want, k.max_grow_slabs, k.max_total_slabs - zone.mem.nslabs)
        return -(-want // IO_TLB_SEGSIZE) * IO_TLB_SEGSIZE if want > 0 else 0

    def _grow(self, zone: BounceZone, nslabs: int) -> IoTlbPool | None:
        """Add one pool of up to ``nslabs`` slots to the zone (process context: may sleep)."""
        if nslabs <= 0:
            return None
        nareas = limit_nareas(zone.mem.default_nareas, nslabs)
        pool = alloc_pool(
            self.env, zone.mem, IO_TLB_MIN_SLABS if nslabs >= IO_TLB_MIN_SLABS else nslabs, nslabs, nareas,
            zone.limit, may_sleep=True, transient=False, max_slabs=self.knobs.max_grow_slabs,
        )
        if pool is None:
            self.counts.add("growth_failed")
            return None
        zone.mem.add_pool(pool)
        with self._lock:
            self._zone_of_pool[id(pool)] = zone
            zone.went_idle(id(pool), self.env.now())
        self.counts.add("pools_created")
        zone.waiters.kick()
        return pool

    def _schedule(self, zone: BounceZone) -> None:
        with self._lock:
            if zone.work_due is None:
                zone.work_due = self.env.now() + self.knobs.worker_delay_ns
                self.counts.add("worker_scheduled")

    def run_deferred(self) -> int:
        """The worker, in process context; returns actions taken. In order: frees of large
        buffers released atomically (CoCo), due growth, deferred maps (FIFO, now that slots
        were released or a pool added), then shrinking of pools idle past the hysteresis —
        last, so a waiter is served before an idle pool goes away."""
        now = self.env.now()
        done = self.large.run_deferred()
        zones = list(self._zones.values())
        for zone in zones:
            with self._lock:
                due = zone.work_due is not None and zone.work_due <= now
                if due:
                    zone.work_due = None
            if due:
                mem = zone.mem
                if not mem.pools:
                    grow = not zone.quiet(self.knobs.small_demand_slabs)  # quiet: transient only
                else:
                    grow = mem.total_used > self.knobs.high_watermark * mem.nslabs
                if grow:
                    if self._grow(zone, self._growth_slabs(zone)) is not None and (
                        mem.total_used > self.knobs.high_watermark * mem.nslabs
                    ):
                        self._schedule(zone)  # still above the watermark: keep growing
                done += 1
        for zone in zones:
            done += zone.waiters.drain()
        for zone in zones:
            done += self._shrink(zone, now)
        for zone in zones:
            done += self._end_window(zone, now)
        return done

    def _end_window(self, zone: BounceZone, now: int) -> int:
        """At the end of a demand window: a zone that stayed quiet gives back its empty pools,
        boot pool included; returns pools freed. A new window starts either way."""
        k = self.knobs
        if not k.small_demand_slabs or now - zone.window_start < k.idle_ns:
            return 0
        freed = 0
        if zone.quiet(k.small_demand_slabs):
            for pool in list(zone.mem.pools):
                if not pool.used:
                    self._free_pool(zone, pool)
                    freed += 1
        zone.window_start = now
        zone.window_peak = zone.mem.total_used
        return freed

    def defer(self, dev: PolicyDevice, retry: DeferredRetry) -> bool:
        """Queue the map at the tail of its zone's FIFO and schedule growth (it may make room)."""
        zone = self._zone_for(dev)
        zone.waiters.add(dev.name, retry)
        self._schedule(zone)
        return True

    def deferred_waiting(self, dev: PolicyDevice) -> int:
        return len(self._zone_for(dev).waiters)

    def next_deadline(self) -> int | None:
        """The earliest time :meth:`run_deferred` has work: a due worker, an idle pool, or now
        for pending large-buffer frees and waiters that room may have appeared for."""
        # called after every map and unmap by a simulator: one pass, no lists
        idle_ns = self.knobs.idle_ns
        windows = self.knobs.small_demand_slabs > 0
        z = self._default
        if len(self._zones) == 1 and not self.large.deferred_pending and not z.waiters.ready:
            return self._zone_deadline(z, idle_ns, windows)  # the usual case: nothing due now
        best = self.env.now() if self.large.deferred_pending else None
        for z in self._zones.values():
            if z.waiters.ready:
                now = self.env.now()
                best = now if best is None else min(best, now)
            t = self._zone_deadline(z, idle_ns, windows)
            if t is not None and (best is None or t < best):
                best = t
        return best

    @staticmethod
    def _zone_deadline(z: BounceZone, idle_ns: int, windows: bool) -> int | None:
        """One zone's earliest timed work: its worker, its oldest idle pool, its quiet window."""
        best: int | None = z.work_due
        first_idle = z.first_idle()
        if first_idle is not None:
            t = first_idle + idle_ns
            if best is None or t < best:
                best = t
        if windows and z.mem.pools:
            t = z.window_start + idle_ns
            if best is None or t < best:
                best = t
        return best

    def _shrink(self, zone: BounceZone, now: int) -> int:
        freed = 0
        mem = zone.mem
        if zone.limit is None and mem.pools:
            zone.went_busy(id(mem.pools[-1]))  # the boot pool stays: no deadline for it
        for pool in list(mem.pools[:-1] if zone.limit is None else mem.pools):
            since = zone.idle_since.get(id(pool))
            if since is None or pool.used or now - since < self.knobs.idle_ns:
                continue
            if mem.nslabs - pool.nslabs < self.knobs.min_keep_slabs:
                zone.went_busy(id(pool))  # kept; its next idle spell starts a new clock
                continue
            self._free_pool(zone, pool)
            freed += 1
        return freed

    def _free_pool(self, zone: BounceZone, pool: IoTlbPool) -> None:
        """Unlist an empty pool and give its memory back (encrypted again in a CoCo guest)."""
        zone.mem.remove_pool(pool)
        with self._lock:
            zone.went_busy(id(pool))
            self._zone_of_pool.pop(id(pool), None)
        if pool.late_alloc:
            self.env.free_bounce(pool.start, pool.nslabs << IO_TLB_SHIFT, may_sleep=True, owner="swiotlb")
        else:  # the boot pool: memory reserved at boot
            self.env.free_boot_pool(pool.start, pool.nslabs << IO_TLB_SHIFT)
        self.counts.add("pools_freed")

    # -- release and lookups ---------------------------------------------------------------
    def release(
        self, dev: PolicyDevice, tlb_addr: int, pool: PoolHandle | None = None, *, may_sleep: bool = False
    ) -> int:
        """Give back slots (0 for a large buffer). ``may_sleep`` as in RFC v1: an atomic release
        of a decrypted large buffer leaves its re-encryption to :meth:`run_deferred`."""
        if pool is None:
            pool = self.find_pool(dev, tlb_addr)
        if isinstance(pool, DynamicBuffer):
            self.large.release(dev, tlb_addr, pool, may_sleep=may_sleep)
            self._zone_for(dev).waiters.kick()  # freed pages may let a retry grow the zone
            return 0
        zone = self._zone_of_pool.get(id(pool)) if pool is not None else None
        if zone is None or pool is None:
            return self.mem.release_slots(dev, tlb_addr)  # raises the core's ReleaseError
        n = zone.mem.release_slots(dev, tlb_addr, pool)
        if pool.transient:
            with self._lock:
                zone.transient[dev.name].remove(pool)
                self._zone_of_pool.pop(id(pool), None)
            drop_transient(self.env, zone.mem, pool)
            self.counts.add("transient_freed")
        elif not pool.areas[((tlb_addr - pool.start) >> IO_TLB_SHIFT) // pool.area_nslabs].used and not pool.used:
            # the pool went idle. Usually the released slots' area still has slots in use, which
            # says no in one look; pool.used sums every area.
            zone.went_idle(id(pool), self.env.now())
        zone.waiters.kick()
        return n

    def find_pool(self, dev: PolicyDevice, paddr: int) -> PoolHandle | None:
        """The device's zone pools, its transient pools, then the large buffers."""
        if dev.name not in self._uses:
            return None
        zone = self._zone_for(dev)
        for pool in zone.mem.pools:
            if pool.start <= paddr < pool.end:
                return pool
        for pool in zone.transient.get(dev.name, ()):
            if pool.start <= paddr < pool.end:
                return pool
        return self.large.lookup(paddr) if len(self.large) else None

    def bounce_target(
        self, dev: PolicyDevice, tlb_addr: int, size: int, pool: PoolHandle | None = None
    ) -> BounceSpan | None:
        if pool is None:
            pool = self.find_pool(dev, tlb_addr)
            if pool is None:
                return None
        if isinstance(pool, DynamicBuffer):
            return self.large.bounce_target(dev, tlb_addr, size, pool)
        return self._zone_for(dev).mem.bounce_target(dev, tlb_addr, size, pool)

    def is_active(self, dev: PolicyDevice) -> bool:
        return True  # a zone can always be created or grown

    # -- observation -----------------------------------------------------------------------
    def allocators(self) -> list[IoTlbMem]:
        """Each zone's allocator, the default zone's first."""
        return [z.mem for z in list(self._zones.values())]

    def footprint(self) -> tuple[int, int]:
        """``(reserved, in_use)`` bytes over every zone, transient pools and large buffers
        included (a large buffer is in use while mapped, reserved until its pages are freed)."""
        large = self.large
        if len(self._zones) == 1:  # only the default zone (on self.mem): the common case
            mem = self.mem
            return ((mem.nslabs + mem.transient_nslabs) << IO_TLB_SHIFT) + large.bytes_held, (
                (mem.total_used << IO_TLB_SHIFT) + large.live_bytes)
        reserved = sum((z.mem.nslabs + z.mem.transient_nslabs) << IO_TLB_SHIFT for z in self._zones.values())
        in_use = sum(z.mem.total_used << IO_TLB_SHIFT for z in self._zones.values())
        return reserved + large.bytes_held, in_use + large.live_bytes

    def counters(self) -> dict[str, int]:
        zones = list(self._zones.values())
        return {
            "io_tlb_nslabs": sum(z.mem.nslabs for z in zones),
            "io_tlb_used": sum(z.mem.total_used for z in zones),
            "io_tlb_used_hiwater": max(self._hiwater, self.mem.used_hiwater),
            "io_tlb_transient_nslabs": sum(z.mem.transient_nslabs for z in zones),
        }

    def deferral_counters(self) -> dict[str, int]:
        """Deferred maps over every zone: queued, completed, pending, waits (ns) total and max."""
        out: dict[str, int] = defaultdict(int)
        for zone in list(self._zones.values()):
            for key, value in zone.waiters.counters().items():
                out[key] = max(out[key], value) if key.endswith("_max_ns") else out[key] + value
        return dict(out)

    def stats(self) -> dict[str, Any]:
        reserved, in_use = self.footprint()
        enc = self.env.encryption.stats
        return {
            **super().stats(),
            **self.counts.snapshot(),
            "zones": len(self._zones),
            "pools": sum(len(z.mem.pools) for z in self._zones.values()),
            "reserved_bytes": reserved,
            "in_use_bytes": in_use,
            "decrypt_ops": enc.decrypt_ops,
            "encrypt_ops": enc.encrypt_ops,
            **self.large.counters("large_"),
            **self.deferral_counters(),
        }
