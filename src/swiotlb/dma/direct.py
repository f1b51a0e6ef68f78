"""dma-direct with swiotlb: the streaming map/unmap/sync logic, with real byte copies.

Decision to bounce (spec §4.4): every mapping bounces when the policy forces it (``swiotlb=force``,
CoCo guests); otherwise only buffers the device cannot reach (``addr + size - 1 >
min_not_zero(dma_mask, bus_dma_limit)``), and those fail when there is no pool. In this model
physical and DMA addresses are equal (no bus offsets, no encryption bit).

Bounce path (``swiotlb_map``, §4.3): trace ``swiotlb_bounced`` before the slot search, ask the
policy for slots, copy the buffer in (§4.2: every direction since 5.18, older kernels only
TO_DEVICE/BIDIRECTIONAL without SKIP_CPU_SYNC), then refuse a bounce buffer the device cannot
reach. Unmap copies back exactly once (FROM_DEVICE/BIDIRECTIONAL unless SKIP_CPU_SYNC) and
releases (§3.7). Syncs may address any sub-range of a mapping; which bytes move is the
policy's/profile's answer (:meth:`~swiotlb.core.IoTlbMem.bounce_target`, §4.1), including the
<= 6.9 refusal of some partial syncs, reported once per call site like dev_WARN_ONCE.

Deferred maps (:meth:`DmaDirect.map_page_deferred`, FreeBSD busdma style): a caller that may
sleep passes a callback; when the policy refuses the bounce as *full* and defers, the request is
queued with a retry closure (the policy never imports this layer) and completed later — copy in,
mapping table entry, ``dma_map_page`` event, callback — from the policy's deferred work.

Messages go to the ``swiotlb`` logger: "swiotlb buffer is full" rate-limited per call site
(§4.5) and skipped with DMA_ATTR_NO_WARN; WARN_ONCE texts once per machine.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Callable

from swiotlb.core import MapFailure, MapRefused
from swiotlb.dma.debug import SG, SINGLE, LiveMapping
from swiotlb.dma.errors import (
    DeviceAccessError,
    DmaMappingError,
    InvalidDirectionError,
    InvalidSizesError,
    MapCause,
    MappingsLeakedError,
)
from swiotlb.dma.events import (
    DmaMapPage,
    DmaMapSg,
    DmaSyncSingleForCpu,
    DmaSyncSingleForDevice,
    DmaUnmapPage,
    DmaUnmapSg,
    EventBus,
    SwiotlbBounced,
)
from swiotlb.dma.ratelimit import Clock, RateLimit, WarnOnce
from swiotlb.dma.types import DMA_MAPPING_ERROR, SIZE_MAX, DeferredMap, DmaAttrs, DmaDirection, DmaSegment
from swiotlb.memory import PhysicalMemory
from swiotlb.policies import BouncePolicy
from swiotlb.policies.base import BounceMapping, PoolHandle

if TYPE_CHECKING:
    from swiotlb.dma.device import Device

log = logging.getLogger("swiotlb")

BIDIRECTIONAL = DmaDirection.BIDIRECTIONAL
TO_DEVICE = DmaDirection.TO_DEVICE
FROM_DEVICE = DmaDirection.FROM_DEVICE
_DIRECTIONS: dict[int, DmaDirection] = {int(d): d for d in (BIDIRECTIONAL, TO_DEVICE, FROM_DEVICE)}
_SKIP = int(DmaAttrs.SKIP_CPU_SYNC)
_NO_WARN = int(DmaAttrs.NO_WARN)
_MAY_SLEEP = int(DmaAttrs.MAY_SLEEP)
_CAUSES: dict[MapFailure, MapCause] = {
    MapFailure.FULL: "full",
    MapFailure.TOO_LARGE: "too_large",
    MapFailure.NO_POOL: "no_pool",
}
_NUMBERS = re.compile(r"\d+")

MapResult = tuple[int, "BounceMapping | None"]
DeferredCallback = Callable[[DeferredMap], None]


class DmaDirect:
    """The DMA engine of one machine: memory, bounce policy, events, messages."""

    def __init__(
        self,
        memory: PhysicalMemory,
        policy: BouncePolicy,
        events: EventBus | None = None,
        *,
        clock: Clock | None = None,
        coco: bool = False,
    ) -> None:
        self.memory = memory
        self.policy = policy
        self.events = events if events is not None else EventBus()
        self.clock: Clock = clock if clock is not None else time.monotonic_ns
        self.coco = coco
        profile = policy.mem.profile
        self.always_copy_on_map = profile.always_copy_on_map
        self.alloc_size_arg = profile.alloc_size_arg
        top = memory.size - 1
        self.required_mask = (1 << top.bit_length()) - 1  # dma_direct_get_required_mask
        self._full_limit = RateLimit("swiotlb_tbl_map_single", self.clock)
        self._no_pool_limit = RateLimit("swiotlb_tbl_map_single", self.clock)
        self._once = WarnOnce()
        self._waiting: Counter[str] = Counter()  # queued deferred maps per device
        self._waiting_lock = threading.Lock()

    # -- argument checks (before any change) -----------------------------------------------
    @staticmethod
    def _direction(dev: Device, dir: DmaDirection | int, what: str) -> DmaDirection:
        d = _DIRECTIONS.get(dir)
        if d is None:
            raise InvalidDirectionError(
                f"{dev.name}: {what} with invalid direction {dir!r} (DMA_NONE is not a data direction)",
                device=dev.name,
            )
        return d

    def _check_buffer(self, dev: Device, phys: int, size: int, what: str) -> None:
        if size <= 0:
            raise InvalidSizesError(f"{dev.name}: {what} of {size} bytes at {phys:#x}: size must be positive",
                                    device=dev.name, dma_addr=phys)
        if phys < 0 or phys + size > self.memory.size:
            self.memory.check_range(phys, size)

    # -- map -------------------------------------------------------------------------------
    def map_page(
        self,
        dev: Device,
        phys: int,
        size: int,
        dir: DmaDirection | int,
        attrs: int = 0,
        cpu: int = 0,
        may_sleep: bool = False,
        alloc_size: int | None = None,
        alloc_align_mask: int = 0,
    ) -> int:
        """``dma_map_page_attrs`` -> ``dma_direct_map_page``; returns the DMA address."""
        d = _DIRECTIONS.get(dir)
        if d is None:
            d = self._direction(dev, dir, "map")
        if size <= 0 or phys < 0 or phys + size > self.memory.size:
            self._check_buffer(dev, phys, size, "map")
        if alloc_size is not None:
            if size > alloc_size:
                raise InvalidSizesError(
                    f"{dev.name}: map of {phys:#x}: Invalid sizes (mapping: {size} bytes, alloc: {alloc_size} bytes)",
                    device=dev.name, dma_addr=phys,
                )
            if not self.alloc_size_arg:
                if alloc_size != size:
                    raise ValueError(
                        f"{dev.name}: kernel profile {self.policy.mem.profile.name} has no separate "
                        "alloc_size (removed in 6.10); use alloc_align_mask"
                    )
                alloc_size = None
        r = self._map_one(dev, phys, size, d, attrs, cpu, may_sleep or bool(attrs & _MAY_SLEEP),
                          alloc_size, alloc_align_mask)
        bus = self.events
        if isinstance(r, DmaMappingError):
            if bus.subscribers:
                bus.publish(DmaMapPage(dev.name, d, DMA_MAPPING_ERROR, size, phys, attrs, cpu))
            raise r
        return self._register(dev, phys, size, d, attrs, cpu, r)

    def _register(self, dev: Device, phys: int, size: int, d: DmaDirection, attrs: int, cpu: int, r: MapResult) -> int:
        """Enter a single mapping in the device's table and trace ``dma_map_page``."""
        dma, slot = r
        dev.table.add(LiveMapping(dma, phys, size, d, attrs, SINGLE, 0, slot))
        bus = self.events
        if bus.subscribers:
            bus.publish(DmaMapPage(dev.name, d, dma, size, phys, attrs, cpu))
        return dma

    # -- deferred maps ---------------------------------------------------------------------
    def map_page_deferred(
        self, dev: Device, phys: int, size: int, dir: DmaDirection | int, callback: DeferredCallback,
        attrs: int = 0, cpu: int = 0, may_sleep: bool = True,
    ) -> DeferredMap:
        """``map_page`` that waits instead of failing when bounce slots are short.

        Outcomes: mapped now (the callback runs before this returns); queued, when the caller
        may sleep and the policy refused the bounce as *full* and defers it (the ticket is
        pending; the callback runs when the policy's deferred work completes it); or
        ``map_page``'s failure, raised — atomic callers, direct mappings and maps that can never
        fit are never queued. FIFO: while requests wait in the policy's queue, a new deferrable
        one queues behind them without trying, so it never overtakes them (if it then proves
        never to fit, its callback receives the error).
        """
        d = _DIRECTIONS.get(dir)
        if d is None:
            d = self._direction(dev, dir, "map")
        self._check_buffer(dev, phys, size, "map")
        ticket = DeferredMap(dev.name, phys, size, d, self.clock())
        policy = self.policy
        force = policy.force_bounce(dev)
        bounce = force or (phys + size - 1 > dev.dma_limit and policy.is_active(dev))
        if not bounce or not (may_sleep or attrs & _MAY_SLEEP):
            dma = self.map_page(dev, phys, size, d, attrs, cpu, may_sleep)
            return self._finish(ticket, dma, callback)

        def retry() -> bool:
            got = policy.map(dev, phys, size, cpu=cpu, may_sleep=True, attrs=attrs)
            if isinstance(got, MapRefused) and got.cause is MapFailure.FULL:
                return False
            with self._waiting_lock:
                self._waiting[dev.name] -= 1
            try:
                ticket.dma_addr = self._settle(dev, phys, size, d, attrs, cpu, got)
            except DmaMappingError as exc:  # e.g. it never fits: the caller learns it here
                ticket.error = exc
            ticket.done_ns = self.clock()
            callback(ticket)
            return True

        self._trace_bounce(dev, phys, size, force, cpu)
        got: BounceMapping | MapRefused | None = None
        if not policy.deferred_waiting(dev):
            got = policy.map(dev, phys, size, cpu=cpu, may_sleep=True, attrs=attrs)
            if not (isinstance(got, MapRefused) and got.cause is MapFailure.FULL):
                return self._finish(ticket, self._settle(dev, phys, size, d, attrs, cpu, got), callback)
        ticket.deferred = True  # before queueing: another thread's drain may complete it at once
        with self._waiting_lock:
            self._waiting[dev.name] += 1
        if policy.defer(dev, retry):
            return ticket
        ticket.deferred = False  # this policy fails instead of waiting, as Linux does
        with self._waiting_lock:
            self._waiting[dev.name] -= 1
        if got is None:
            got = policy.map(dev, phys, size, cpu=cpu, may_sleep=True, attrs=attrs)
        return self._finish(ticket, self._settle(dev, phys, size, d, attrs, cpu, got), callback)

    def _settle(
        self, dev: Device, phys: int, size: int, d: DmaDirection, attrs: int, cpu: int,
        got: BounceMapping | MapRefused,
    ) -> int:
        """Finish a bounce the policy answered: copy in and register, or raise the failure."""
        r = self._refused(dev, phys, size, attrs, got) if isinstance(got, MapRefused) else self._place(
            dev, phys, size, d, attrs, got)
        if isinstance(r, DmaMappingError):
            if self.events.subscribers:
                self.events.publish(DmaMapPage(dev.name, d, DMA_MAPPING_ERROR, size, phys, attrs, cpu))
            raise r
        return self._register(dev, phys, size, d, attrs, cpu, r)

    def _finish(self, ticket: DeferredMap, dma: int, callback: DeferredCallback) -> DeferredMap:
        ticket.dma_addr = dma
        ticket.done_ns = self.clock()
        callback(ticket)
        return ticket

    def deferred_waiting(self, dev: Device) -> int:
        """The device's deferred maps still queued."""
        with self._waiting_lock:
            return self._waiting[dev.name]

    def map_sg(
        self,
        dev: Device,
        entries: list[tuple[int, int]],
        dir: DmaDirection | int,
        attrs: int = 0,
        cpu: int = 0,
        may_sleep: bool = False,
    ) -> list[DmaSegment]:
        """``dma_map_sg_attrs`` -> ``dma_direct_map_sg``: each entry on its own, all or nothing.

        On a failure the entries already mapped are unmapped with SKIP_CPU_SYNC and no event,
        as the kernel does, and the failure is raised; no ``dma_map_sg`` event is emitted.
        """
        d = self._direction(dev, dir, "map_sg")
        if not entries:
            raise InvalidSizesError(f"{dev.name}: map_sg of an empty scatterlist", device=dev.name)
        for phys, n in entries:
            self._check_buffer(dev, phys, n, "map_sg entry")
        sleep = may_sleep or bool(attrs & _MAY_SLEEP)
        done: list[MapResult] = []
        try:
            for i, (phys, n) in enumerate(entries):
                r = self._map_one(dev, phys, n, d, attrs, cpu, sleep, None, 0)
                if isinstance(r, DmaMappingError):
                    r.args = (f"{r.args[0]} (sg entry {i} of {len(entries)}; {i} mapped entries undone)",)
                    raise r
                done.append(r)
        except BaseException:  # a failure, or a modelled-kernel error such as SearchDeadlock
            for dma, slot in done:
                if slot is not None:
                    self.policy.release(dev, dma, slot.pool)
            raise
        nents = len(entries)
        table = dev.table
        for (phys, n), (dma, slot) in zip(entries, done):
            table.add(LiveMapping(dma, phys, n, d, attrs, SG, nents, slot))
        segments = [DmaSegment(dma, n, phys) for (phys, n), (dma, _) in zip(entries, done)]
        bus = self.events
        if bus.subscribers:
            bus.publish(DmaMapSg(
                dev.name, d, nents, nents,
                tuple(s.dma_addr for s in segments), tuple(n for _, n in entries),
                tuple(p for p, _ in entries), attrs, cpu,
            ))
        return segments

    def _map_one(
        self, dev: Device, phys: int, size: int, d: DmaDirection, attrs: int, cpu: int,
        may_sleep: bool, alloc_size: int | None, alloc_align_mask: int,
    ) -> MapResult | DmaMappingError:
        """Bounce or not (spec §4.4); a failure is returned, not raised, so callers can trace it."""
        policy = self.policy
        if policy.force_bounce(dev):
            return self._swiotlb_map(dev, phys, size, d, attrs, cpu, may_sleep, alloc_size, alloc_align_mask, True)
        if phys + size - 1 > dev.dma_limit:
            if policy.is_active(dev):
                return self._swiotlb_map(dev, phys, size, d, attrs, cpu, may_sleep, alloc_size, alloc_align_mask, False)
            text = f"DMA addr {phys:#x}+{size} overflow (mask {dev.dma_mask:x}, bus limit {dev.bus_dma_limit:x})."
            self._warn_once(dev, "dma_direct_map_page", text)
            return DmaMappingError(
                f"{dev.name}: cannot map {size} bytes at {phys:#x}: {text} and there is no bounce pool",
                cause="no_pool", device=dev.name, size=size, phys_addr=phys,
            )
        return phys, None

    def _swiotlb_map(
        self, dev: Device, phys: int, size: int, d: DmaDirection, attrs: int, cpu: int,
        may_sleep: bool, alloc_size: int | None, alloc_align_mask: int, force: bool,
    ) -> MapResult | DmaMappingError:
        """``swiotlb_map`` (spec §4.3) with the copy of ``swiotlb_tbl_map_single`` (§3.1, §4.2)."""
        self._trace_bounce(dev, phys, size, force, cpu)
        r = self.policy.map(dev, phys, size, alloc_align_mask, cpu=cpu, may_sleep=may_sleep, attrs=attrs,
                            alloc_size=alloc_size)
        if isinstance(r, MapRefused):
            return self._refused(dev, phys, size, attrs, r)
        return self._place(dev, phys, size, d, attrs, r)

    def _trace_bounce(self, dev: Device, phys: int, size: int, force: bool, cpu: int) -> None:
        bus = self.events
        if bus.subscribers:
            bus.publish(SwiotlbBounced(dev.name, dev.dma_mask, phys, size, force, cpu))
        if self.coco and self._once.first("mem_encrypt"):
            log.warning("Memory encryption is active and system is using DMA bounce buffers")

    def _place(
        self, dev: Device, phys: int, size: int, d: DmaDirection, attrs: int, slot: BounceMapping
    ) -> MapResult | DmaMappingError:
        """Copy in (§4.2) and refuse a bounce buffer the device cannot reach (§4.3)."""
        policy = self.policy
        tlb = slot.tlb_addr
        if self.always_copy_on_map or (not attrs & _SKIP and d is not FROM_DEVICE):
            self._bounce(dev, tlb, size, True, slot.pool)
        if tlb + size - 1 > dev.dma_limit:
            policy.release(dev, tlb, slot.pool)
            text = f"swiotlb addr {tlb:#x}+{size} overflow (mask {dev.dma_mask:x}, bus limit {dev.bus_dma_limit:x})."
            self._warn_once(dev, "swiotlb_map", text)
            return DmaMappingError(
                f"{dev.name}: cannot map {size} bytes at {phys:#x}: the bounce buffer is beyond the device's reach: {text}",
                cause="unaddressable", device=dev.name, size=size, phys_addr=phys,
            )
        return tlb, slot

    def _refused(self, dev: Device, phys: int, size: int, attrs: int, r: MapRefused) -> DmaMappingError:
        cause = _CAUSES.get(r.cause)
        if cause is None:  # INVALID_SIZES: map_page checks sizes first, so only a policy bug lands here
            raise InvalidSizesError(f"{dev.name}: map of {phys:#x}: {r.message}", device=dev.name, dma_addr=phys)
        if cause == "no_pool":
            if self._no_pool_limit.allow(log):
                log.warning("%s: %s", dev.name, r.message)
        elif not attrs & _NO_WARN and self._full_limit.allow(log):
            log.warning("%s: %s", dev.name, r.message)
        return DmaMappingError(
            f"{dev.name}: cannot map {size} bytes at {phys:#x}: {r.message}",
            cause=cause, device=dev.name, size=size, phys_addr=phys,
        )

    # -- unmap -----------------------------------------------------------------------------
    def unmap_page(self, dev: Device, dma: int, size: int, dir: DmaDirection | int, attrs: int = 0, cpu: int = 0) -> None:
        """``dma_direct_unmap_page``: copy back once (unless SKIP_CPU_SYNC), then release."""
        d = _DIRECTIONS.get(dir)
        if d is None:
            d = self._direction(dev, dir, "unmap")
        m = dev.table.take(dma, size, d, SINGLE)
        slot = m.slot
        if slot is not None:
            if not attrs & _SKIP and d is not TO_DEVICE:
                self._bounce(dev, dma, size, False, slot.pool)
            try:
                self.policy.release(dev, dma, slot.pool)
            except BaseException:
                dev.table.add(m)  # the slots are still held: keep the mapping on record
                raise
        bus = self.events
        if bus.subscribers:
            bus.publish(DmaUnmapPage(dev.name, d, dma, size, attrs, cpu))

    def unmap_sg(self, dev: Device, entries: list[tuple[int, int]], dir: DmaDirection | int, attrs: int = 0, cpu: int = 0) -> None:
        """``dma_unmap_sg``: the event first, then each entry copied back and released in order."""
        d = self._direction(dev, dir, "unmap_sg")
        if not entries:
            raise InvalidSizesError(f"{dev.name}: unmap_sg of an empty scatterlist", device=dev.name)
        maps = dev.table.take_many(entries, d, SG)
        bus = self.events
        if bus.subscribers:
            bus.publish(DmaUnmapSg(dev.name, d, tuple(m.phys_addr for m in maps), attrs, cpu))
        copy_back = not attrs & _SKIP and d is not TO_DEVICE
        for i, m in enumerate(maps):
            slot = m.slot
            if slot is not None:
                if copy_back:
                    self._bounce(dev, m.dma_addr, m.size, False, slot.pool)
                try:
                    self.policy.release(dev, m.dma_addr, slot.pool)
                except BaseException:
                    for kept in maps[i:]:  # not released: keep them on record
                        dev.table.add(kept)
                    raise

    # -- sync ------------------------------------------------------------------------------
    def sync_single(self, dev: Device, dma: int, size: int, dir: DmaDirection | int, cpu: int = 0, *, for_device: bool) -> None:
        """``dma_sync_single_for_{cpu,device}`` on any sub-range of a mapping (spec §3.7, §4.2)."""
        what = "sync_for_device" if for_device else "sync_for_cpu"
        d = self._direction(dev, dir, what)
        if size <= 0:
            raise InvalidSizesError(f"{dev.name}: {what} of {size} bytes at dma {dma:#x}", device=dev.name, dma_addr=dma)
        m = dev.table.check_sync(dma, size, d, what)
        slot = m.slot
        if slot is not None:
            if for_device:
                if d is not FROM_DEVICE:
                    self._bounce(dev, dma, size, True, slot.pool)
            elif d is not TO_DEVICE:
                self._bounce(dev, dma, size, False, slot.pool)
        bus = self.events
        if bus.subscribers:
            cls = DmaSyncSingleForDevice if for_device else DmaSyncSingleForCpu
            bus.publish(cls(dev.name, d, dma, size, cpu))

    # -- copies ----------------------------------------------------------------------------
    def _bounce(self, dev: Device, tlb: int, size: int, to_device: bool, pool: PoolHandle) -> None:
        """``swiotlb_bounce``: move the bytes the profile says (spec §4.1)."""
        span = self.policy.bounce_target(dev, tlb, size, pool)
        if span is None:
            return
        if span.warning is not None:
            self._warn_once(dev, "swiotlb_bounce:" + _NUMBERS.sub("#", span.warning), span.warning)
        n = span.nbytes
        if n > 0:
            if to_device:
                self.memory.copy(span.tlb_addr, span.orig_addr, n)
            else:
                self.memory.copy(span.orig_addr, span.tlb_addr, n)

    def _warn_once(self, dev: Device, site: str, text: str) -> None:
        if self._once.first(site):
            log.warning("%s: %s", dev.name, text)

    # -- device side and lifetime ----------------------------------------------------------
    def device_read(self, dev: Device, dma: int, n: int) -> bytes:
        self._check_device_access(dev, dma, n, "read")
        return self.memory.read(dma, n)

    def device_write(self, dev: Device, dma: int, data: bytes | bytearray | memoryview) -> None:
        self._check_device_access(dev, dma, len(data), "write")
        self.memory.write(dma, data)

    def _check_device_access(self, dev: Device, dma: int, n: int, what: str) -> None:
        if dev.table.find_containing(dma, n) is None:
            raise DeviceAccessError(
                f"{dev.name}: device {what} of dma {dma:#x}+{n} is not inside a live mapping of the device",
                device=dev.name, dma_addr=dma,
            )

    def detach(self, dev: Device) -> None:
        """Checks for device removal (dma-debug's "pending DMA" report), then tells the policy."""
        waiting = self.deferred_waiting(dev)
        if waiting:
            raise MappingsLeakedError(
                f"{dev.name}: removed with {waiting} deferred map(s) still queued", device=dev.name, dma_addr=0,
            )
        live = dev.table.mappings()
        if live:
            raise MappingsLeakedError(
                f"{dev.name}: removed with {len(live)} live mapping(s); first: {live[0].describe()}",
                device=dev.name, dma_addr=live[0].dma_addr,
            )
        self.policy.detach_device(dev)

    def max_mapping_size(self, dev: Device) -> int:
        """``dma_direct_max_mapping_size`` (spec §1.6)."""
        policy = self.policy
        limited = dev.dma_limit < self.required_mask
        if policy.is_active(dev) and (limited or policy.force_bounce(dev)):
            return policy.max_mapping_size(dev)
        return SIZE_MAX
