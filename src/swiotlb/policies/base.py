"""The interface between the DMA layer and whatever provides bounce slots.

The DMA layer (:mod:`swiotlb.dma.direct`) decides *whether* to bounce (spec §4.4) and does the
byte copies (§4.1, §4.2); a :class:`BouncePolicy` decides *where* the bounce buffer lives and
owns the :class:`~swiotlb.core.IoTlbMem` it allocates from. Every pool design of the project —
the fixed boot pool (:class:`~swiotlb.policies.static.StaticPolicy`), the RFC v1 per-mapping
buffers (§7.3), the 6.6 dynamic pools with growth worker and transient pools (§5.3-§5.5), and
experimental lending/adaptive schemes — sits behind these calls, so the DMA layer never changes.

What the interface hands a policy, and why:

* ``dev`` (:class:`PolicyDevice`): the min-align and segment-boundary masks the slot search
  needs, and ``dma_limit`` — the highest address the device reaches — which tells a growing
  policy where new pool memory must come from (``swiotlb_alloc_pool``'s ``phys_limit``, §5.5).
* ``cpu``: selects the first area searched (§3.2).
* ``may_sleep``: whether the caller may block (``GFP_KERNEL`` vs ``GFP_NOWAIT``; RFC v1
  ``DMA_ATTR_MAY_SLEEP``, §7.3). A policy that allocates memory at map time uses it to choose
  between a synchronous allocation and an atomic-only path.
* ``attrs``: the caller's DMA attributes (e.g. NO_WARN silences a policy's own messages).
* :meth:`BouncePolicy.on_map_failure`: called by :meth:`BouncePolicy.map` when the slot search
  failed; it may schedule growth and/or return a mapping from a fallback (a transient pool).
* :meth:`BouncePolicy.find_pool` and :meth:`BouncePolicy.release` take the device because
  transient pools hang off the device, not off ``mem.pools`` (§5.5, §5.6).
* :meth:`BouncePolicy.attach_device` / :meth:`BouncePolicy.detach_device`: per-device state.
* :meth:`BouncePolicy.run_deferred`: the one deterministic point where deferred work (the 6.6
  growth worker) runs; the simulator calls it, the DMA layer never does.
* :meth:`BouncePolicy.defer`: a policy may queue a map it refused as full, for a caller that
  may sleep, instead of failing it (FreeBSD busdma deferral). The DMA layer hands over a
  :data:`DeferredRetry` closure that redoes the map and completes it (copy, mapping table,
  the caller's callback); the policy runs it, in FIFO order, from :meth:`run_deferred`.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Protocol, TypeAlias

from swiotlb._mypyc import mypyc_attr
from swiotlb.core.constants import IO_TLB_SHIFT
from swiotlb.core import BounceSpan, IoTlbMem, IoTlbPool, MapRefused, SlotMapping

PoolHandle: TypeAlias = "IoTlbPool | Any"
"""What a mapping's ``pool`` is: an :class:`~swiotlb.core.IoTlbPool` for slot mappings, or a
policy's own record (RFC v1's per-mapping buffer, §7.3). The DMA layer only hands it back."""


@dataclass(frozen=True, slots=True)
class BufferMapping:
    """A mapping that holds no slots: ``tlb_addr`` plus the policy's opaque ``pool`` handle."""

    tlb_addr: int
    pool: PoolHandle


BounceMapping: TypeAlias = "SlotMapping | BufferMapping"
"""What :meth:`BouncePolicy.map` returns on success: both kinds carry ``tlb_addr`` and ``pool``."""


DeferredRetry: TypeAlias = Callable[[], bool]
"""A queued map's retry, built by the DMA layer: True when the request is finished (mapped, or
failed for good and its caller told), False when the policy still has no room for it."""


class PolicyDevice(Protocol):
    """What a policy may ask about a device (the DMA layer's ``Device`` satisfies it)."""

    @property
    def name(self) -> str: ...

    @property
    def min_align_mask(self) -> int: ...

    @property
    def seg_boundary_mask(self) -> int: ...

    @property
    def dma_limit(self) -> int:
        """``min_not_zero(dma_mask, bus_dma_limit)``: the highest address the device reaches."""
        ...


class EventCounts:
    """A policy's named event counts (pools created, growths failed, ...), safe to bump from
    many threads: ``d[key] += 1`` is a read, an add and a store, and two threads that
    interleave there lose a count. Reading a missing key gives 0 and adds nothing."""

    __slots__ = ("_counts", "_lock")

    def __init__(self) -> None:
        self._counts: defaultdict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def __getitem__(self, key: str) -> int:
        return self._counts.get(key, 0)

    def snapshot(self) -> dict[str, int]:
        """The counts so far, as a plain dict (one consistent copy)."""
        with self._lock:
            return dict(self._counts)

    def __repr__(self) -> str:
        return f"EventCounts({self.snapshot()!r})"


@mypyc_attr(allow_interpreted_subclasses=True)  # subclassed outside the mypyc build
class BouncePolicy(ABC):
    """Where bounce buffers come from. Subclasses implement :meth:`search` and :meth:`release`.

    Thread safety: the DMA layer calls every method from many threads at once. The core
    allocator locks per area; a policy's own state needs its own lock.
    """

    name: ClassVar[str]
    allocates: ClassVar[bool] = True
    """Whether the policy may allocate or convert memory after boot; a simulator skips the
    bookkeeping of that work for a policy that never does (``static``)."""

    def __init__(self, mem: IoTlbMem) -> None:
        self.mem = mem

    @classmethod
    def boot_nslabs(cls, planned: int, **options: Any) -> int:
        """The boot pool this policy wants, given the kernel's ``planned`` slot count."""
        return planned

    # -- slots -----------------------------------------------------------------------------
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
        """Choose and mark bounce slots for ``size`` bytes at ``orig_addr`` (no copy; §3.1).

        Returns the mapping, or a :class:`~swiotlb.core.MapRefused` whose numbers feed the
        kernel's "swiotlb buffer is full" message. ``alloc_size`` is the separate allocation
        size of the <= 6.9 signature (None = ``size``).
        """
        found = self.search(dev, orig_addr, size, alloc_align_mask, cpu=cpu, alloc_size=alloc_size)
        if type(found) is MapRefused:
            return self.on_map_failure(
                dev, orig_addr, size, alloc_align_mask, found, cpu=cpu, may_sleep=may_sleep, attrs=attrs
            )
        return found

    @abstractmethod
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
        """The policy's normal slot search (without fallbacks)."""

    def on_map_failure(
        self,
        dev: PolicyDevice,
        orig_addr: int,
        size: int,
        alloc_align_mask: int,
        refused: MapRefused,
        *,
        cpu: int,
        may_sleep: bool,
        attrs: int,
    ) -> SlotMapping | MapRefused:
        """Hook run when :meth:`search` failed: schedule growth, try a fallback, or give up."""
        return refused

    @abstractmethod
    def release(self, dev: PolicyDevice, tlb_addr: int, pool: PoolHandle | None = None) -> int:
        """Give back the slots of the mapping that starts at ``tlb_addr``; returns slots freed."""

    def bounce_target(
        self, dev: PolicyDevice, tlb_addr: int, size: int, pool: PoolHandle | None = None
    ) -> BounceSpan | None:
        """Which bytes a bounce of ``size`` bytes at ``tlb_addr`` moves (§4.1 rules of the profile)."""
        return self.mem.bounce_target(dev, tlb_addr, size, pool)

    # -- lookups and limits ----------------------------------------------------------------
    def find_pool(self, dev: PolicyDevice, paddr: int) -> PoolHandle | None:
        """``swiotlb_find_pool``: the pool holding bounce address ``paddr`` for ``dev`` (§5.6)."""
        return self.mem.find_pool(paddr)

    def is_bounce_buffer(self, dev: PolicyDevice, paddr: int) -> bool:
        return self.find_pool(dev, paddr) is not None

    def is_active(self, dev: PolicyDevice) -> bool:
        """``is_swiotlb_active``: can this device bounce at all (§4.4)?"""
        return self.mem.nslabs != 0

    def force_bounce(self, dev: PolicyDevice) -> bool:
        """``is_swiotlb_force_bounce``: must every streaming mapping of ``dev`` bounce (§4.4)?"""
        return self.mem.force_bounce

    def max_mapping_size(self, dev: PolicyDevice) -> int:
        """``swiotlb_max_mapping_size`` (§1.6)."""
        return self.mem.max_mapping_size(dev)

    # -- devices and deferred work ---------------------------------------------------------
    def attach_device(self, dev: PolicyDevice) -> None:
        """A device starts using this policy (``swiotlb_dev_init``, §2.5)."""

    def detach_device(self, dev: PolicyDevice) -> None:
        """A device with no live mappings goes away."""

    def run_deferred(self) -> int:
        """Run pending deferred work (e.g. a growth worker); returns how many items ran."""
        return 0

    def next_deadline(self) -> int | None:
        """When :meth:`run_deferred` next has work (ns on the policy's clock), or None if it has
        none until something else happens. A simulator wakes the worker then, and only then."""
        return None

    def defer(self, dev: PolicyDevice, retry: DeferredRetry) -> bool:
        """Queue a map refused as full, from a caller that may sleep, to be retried by
        :meth:`run_deferred` once room may exist. False: this policy never defers (the caller
        fails now, as Linux does)."""
        return False

    def deferred_waiting(self, dev: PolicyDevice) -> int:
        """Requests queued ahead of ``dev``'s next deferrable map; it must queue behind them (FIFO)."""
        return 0

    # -- observation -----------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        """The debugfs files (§5.7); empty when there is no pool, as the files do not exist."""
        return self.mem.counters() if self.mem.nslabs else {}

    def allocators(self) -> list[IoTlbMem]:
        """Every slot allocator the policy maps from (one per zone for a zoned design), so that
        a report can look at their pools' occupancy without knowing the policy's insides."""
        return [self.mem]

    def footprint(self) -> tuple[int, int]:
        """``(reserved, in_use)`` bytes of bounce memory: pools (transient ones included) and the
        slots mapped in them. Policies with memory outside ``mem`` add it."""
        mem = self.mem
        return (mem.nslabs + mem.transient_nslabs) << IO_TLB_SHIFT, mem.total_used << IO_TLB_SHIFT

    def stats(self) -> dict[str, Any]:
        """Counters plus policy-specific figures, for reports and simulations."""
        return {"policy": self.name, **self.counters()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, nslabs={self.mem.nslabs})"
