"""The allocator, ``io_tlb_mem``: pools in search order, map/release, debugfs counters.

This is a pure state machine in the spirit of h11: no clock, no randomness, no I/O. Callers
(the DMA layer, policies, replays) pass the CPU id and the device's DMA parameters in; the
allocator answers with slot indices and bounce addresses. It never copies bytes: it tells the
caller *which* bytes a bounce moves (:meth:`IoTlbMem.bounce_target`).
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from collections.abc import Iterator, Mapping
from typing import Callable, Iterable, Protocol

from swiotlb._mypyc import mypyc_attr
from swiotlb.core.constants import (
    INVALID_PHYS_ADDR,
    IO_TLB_SEGSIZE,
    IO_TLB_SHIFT,
    IO_TLB_SIZE,
    MAX_SEGMENT_BYTES,
    SLOT_LOW_MASK,
    U32_MASK,
    U64_MASK,
    get_max_slots,
    nr_slots,
)
from swiotlb.core.pool import IoTlbPool, PoolLayoutError
from swiotlb.core.sizing import max_mapping_size
from swiotlb.core.profiles import DEFAULT_PROFILE, KernelProfile, SearchMasks, get_profile
from swiotlb.core.search import (
    SearchRequest,
    kernel_probes,
    progression,
    search_area_literal,
    search_area_wrap,
    search_past_cursor,
    take_slots,
)
from swiotlb.core.search import _AT_LEAST, _BLK_SHIFT, _DESC, _SEG_SHIFT, _ZEROS  # shared by the hot paths


CROWDED = -2
"""What an area search returns when the roomy-first walk left a crowded area for later."""
_SMALL_SLOTS = 8
"""Roomy-first walk: maps of at most this many slots (16 KiB) keep their own hints, apart from
larger ones, so a 4 KiB map does not take the head of a freed 128 KiB run (leaving 62 slots that
no 128 KiB map can use, which the next large map's next-fit loop must walk past)."""

# (align_mask, iotlb_mask, stride, period without orig, period with orig, fast, boundary mask,
#  window slots, low-offset mask): a request's pool-independent part, cached per device shape.
_Plan = tuple[int, int, int, int, int, bool, int, int, int]


class DmaParams(Protocol):
    """What the allocator needs to know about a device (``dma_parms``)."""

    @property
    def min_align_mask(self) -> int: ...

    @property
    def seg_boundary_mask(self) -> int: ...


ExhaustedHook = Callable[[DmaParams, int, int, int, int], "tuple[IoTlbPool, int] | None"]
"""``hook(dev, orig_addr, size, alloc_align_mask, cpu)``: a slot in a pool it found, or None."""


@dataclass(frozen=True, slots=True)
class DeviceParams:
    """A plain :class:`DmaParams`; the kernel's defaults when a device has no ``dma_parms``."""

    min_align_mask: int = 0
    seg_boundary_mask: int = U64_MASK


class MapFailure(str, Enum):
    """Why ``swiotlb_tbl_map_single`` returned ``DMA_MAPPING_ERROR``."""

    FULL = "full"  # no free run fits now
    TOO_LARGE = "too_large"  # no free run could ever fit (> 128 slots or > a boundary window)
    INVALID_SIZES = "invalid_sizes"  # mapping_size > alloc_size (6.6-6.9 signature)
    NO_POOL = "no_pool"  # the allocator has no slots at all


@dataclass(slots=True)
class SlotMapping:
    """A successful slot allocation.

    ``index`` is the first data slot (the one ``tlb_addr`` falls in); ``index - pad_slots`` is
    the first slot held. ``size`` is what was searched for (mapping plus offsets).
    """

    tlb_addr: int
    pool: IoTlbPool
    index: int
    pad_slots: int
    nslots: int
    size: int

    # The __init__ dataclass would write, written out: the mypyc build compiles this one, while
    # the generated one stays interpreted (about 370 ns per mapping there). Keep it in step.
    def __init__(self, tlb_addr: int, pool: IoTlbPool, index: int, pad_slots: int, nslots: int, size: int) -> None:
        self.tlb_addr = tlb_addr
        self.pool = pool
        self.index = index
        self.pad_slots = pad_slots
        self.nslots = nslots
        self.size = size


@dataclass(slots=True)
class MapRefused:
    """A failed allocation, with the numbers of the kernel's warning."""

    cause: MapFailure
    size: int
    total: int
    used: int
    mapping_size: int = 0

    @property
    def message(self) -> str:
        if self.cause is MapFailure.NO_POOL:
            return (
                "Can not allocate SWIOTLB buffer earlier and can't now provide you with "
                "the DMA bounce buffer"
            )
        if self.cause is MapFailure.INVALID_SIZES:
            return f"Invalid sizes (mapping: {self.mapping_size} bytes, alloc: {self.size} bytes)"
        return (
            f"swiotlb buffer is full (sz: {self.size} bytes), total {self.total} (slots), "
            f"used {self.used} (slots)"
        )


@dataclass(frozen=True, slots=True)
class BounceSpan:
    """Which bytes one bounce copies: ``nbytes`` between ``orig_addr`` and ``tlb_addr``.

    ``warning`` carries the kernel's dev_WARN_ONCE text when the copy was clamped or refused
    (``nbytes`` is then what the kernel would really copy, possibly 0).
    """

    orig_addr: int
    tlb_addr: int
    nbytes: int
    warning: str | None = None


def _free_run_before(pool: IoTlbPool, slot: int) -> int:
    """Free slots right before ``slot`` in its segment: what the kernel's backward loop rewrites."""
    seg_lo = slot & -IO_TLB_SEGSIZE
    return slot - (pool.list.rfind(0, seg_lo, slot) + 1 or seg_lo)


@mypyc_attr(native_class=False)  # a plain Python class, so that ``__delitem__`` below is its slot
class Tally(Counter[str]):
    """A :class:`~collections.Counter` for tallies bumped on hot paths (a simulation's counters).

    ``Counter`` defines ``__delitem__`` in Python (to ignore missing keys), and because item
    stores and deletes share one C slot, that makes CPython send *every* store through a generic
    slot that looks ``__setitem__`` up by name: ``tally[key] += n`` costs about twice what it
    costs on a dict. Taking ``dict.__delitem__`` back gives the slot to dict's C code again. A
    counted map and release do eight such stores. The one difference from ``Counter``: deleting
    a missing key raises KeyError, as it does for a dict.
    """

    __delitem__ = dict.__delitem__  # type: ignore[assignment]  # keys only, never deleted


STEP_NAMES: tuple[str, ...] = (
    "slot_probe", "slot_mark", "list_fixup", "lock_acquire", "pool_walk",
    "area_search", "area_quick_reject", "area_crowded",
)
"""The steps the allocator itself counts (:class:`IoTlbSteps`), as attributes of their own."""


class IoTlbSteps:
    """The step tally of :attr:`IoTlbMem.steps`: one int attribute per step the allocator counts
    (:data:`STEP_NAMES`) and a dict for the keys others add (``page_alloc_order_<k>``, a
    simulator's ``worker_wakeup``).

    Why not a Counter: a counted map bumps about six tallies and the simulator reads five after
    every call; on a dict subclass each goes through CPython's generic subscript, while an
    attribute of this class is a field of a C struct in the compiled build (and a specialised
    instance-attribute access in pure Python). Read it as a mapping of counts: ``steps[key]``
    (0 when never counted), ``items()``, ``copy()`` and ``steps - snapshot`` (Counters), ``==`` against a Counter or
    another tally (zero counts ignored, as Counter does), ``clear()``.
    """

    def __init__(self) -> None:
        self.slot_probe = 0
        self.slot_mark = 0
        self.list_fixup = 0
        self.lock_acquire = 0
        self.pool_walk = 0
        self.area_search = 0
        self.area_quick_reject = 0
        self.area_crowded = 0
        self.other: dict[str, int] = {}  # keys counted by others, in the order first counted

    def __getitem__(self, key: str) -> int:
        if key in STEP_NAMES:
            value: int = getattr(self, key)
            return value
        return self.other.get(key, 0)

    def __setitem__(self, key: str, value: int) -> None:
        if key in STEP_NAMES:
            setattr(self, key, value)
        else:
            self.other[key] = value

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def keys(self) -> list[str]:
        """The steps counted (allocator steps with a count of 0 left out) and the other keys."""
        return [k for k, _ in self.items()]

    def items(self) -> list[tuple[str, int]]:
        counted = [(k, self[k]) for k in STEP_NAMES]
        return [(k, v) for k, v in counted if v] + list(self.other.items())

    def get(self, key: str, default: int = 0) -> int:
        return self[key] if key in STEP_NAMES or key in self.other else default

    def copy(self) -> Counter[str]:
        """A snapshot of the counts, as a Counter (to subtract from a later reading)."""
        return Counter(dict(self.items()))

    def __sub__(self, other: Mapping[str, int]) -> Counter[str]:
        """The counts since ``other`` (a snapshot), as Counter subtraction gives them."""
        return self.copy() - Counter(other)

    def clear(self) -> None:
        for k in STEP_NAMES:
            setattr(self, k, 0)
        self.other.clear()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, IoTlbSteps):
            theirs = dict(other.items())
        elif isinstance(other, Mapping):
            theirs = dict(other)
        else:
            return NotImplemented
        return {k: v for k, v in self.items() if v} == {k: v for k, v in theirs.items() if v}

    def __repr__(self) -> str:
        return f"IoTlbSteps({dict(self.items())!r})"


Mapping.register(IoTlbSteps)  # a read-only mapping to Counter(), dict() and isinstance checks


class ReleaseError(ValueError):
    """A release that does not match a live allocation (the kernel would corrupt its lists)."""


class IoTlbMem:
    """``struct io_tlb_mem``: the pools of one allocator and the rules of one kernel.

    ``pools`` are given in search order (newest first, default pool last), as the kernel's
    RCU list holds them. ``dynamic`` models CONFIG_SWIOTLB_DYNAMIC (several pools, the early
    256 KiB reject of >= 6.9); growth itself belongs to the policies layer, which adds pools
    with :meth:`add_pool`. ``fast=False`` forces the literal probe-by-probe search.

    ``count_steps=True`` makes :attr:`steps` an :class:`IoTlbSteps` tally of the work the
    modelled kernel does (not the work of the fast search): ``slot_probe`` (iterations of the
    per-area search loop), ``area_search`` (areas whose loop ran), ``area_quick_reject``,
    ``lock_acquire`` (area locks, search and release), ``slot_mark`` (slots marked in use),
    ``list_fixup`` (slots rewritten by the backward fix-up of a map and the merge of a release,
    freed slots included) and ``pool_walk`` (pools visited by ``find_slots``). An
    :class:`IoTlbSteps` given as ``count_steps`` is counted into, so that several allocators (a policy's zones)
    share one tally. Otherwise :attr:`steps` is None and nothing is counted.
    """

    def __init__(
        self,
        pools: Iterable[IoTlbPool] = (),
        profile: KernelProfile | str = DEFAULT_PROFILE,
        *,
        page_size: int = 4096,
        force_bounce: bool = False,
        dynamic: bool | None = None,
        can_grow: bool = False,
        phys_limit: int = U64_MASK,
        default_nareas: int | None = None,
        fast: bool = True,
        count_steps: bool | IoTlbSteps = False,
    ) -> None:
        self.profile = get_profile(profile)
        self.page_size = page_size
        self.force_bounce = force_bounce
        self.pools: list[IoTlbPool] = []
        self.transient_pools: list[IoTlbPool] = []
        self.can_grow = can_grow
        self.phys_limit = phys_limit
        self.fast = fast
        self.nslabs = 0
        self.total_used = 0
        self.used_hiwater = 0
        self.transient_nslabs = 0
        self.lock = threading.Lock()
        # Called by find_slots when every listed pool failed and the allocator can grow: the
        # dynamic policy's "schedule the worker, then try a transient pool" (spec §3.2, §5.5).
        self.on_exhausted: ExhaustedHook | None = None
        # A design of our own may keep no standing pool and serve every map from on_exhausted
        # (adaptive under tiny demand); the kernel refuses a map when nslabs is 0 (spec §3.1).
        self.serve_without_pools = False
        # The roomy-first walk of a design of our own (adaptive): off (empty) for the kernel.
        # See :meth:`roomy_first`.
        self._hints: list[tuple[IoTlbPool, int] | None] = []
        self._crowd_share = 0.0
        pools = list(pools)
        if dynamic is None:
            dynamic = len(pools) > 1
        if dynamic and not self.profile.dynamic_available:
            raise ValueError(f"kernel profile {self.profile.name} has no dynamic pools (added in 6.6)")
        self.dynamic = dynamic
        if len(pools) > 1 and not dynamic:
            raise ValueError("several pools need the dynamic allocator (CONFIG_SWIOTLB_DYNAMIC)")
        self.default_nareas = default_nareas or max((p.nareas for p in pools), default=1)
        for pool in reversed(pools):
            self.add_pool(pool)
        self._pad_slots = self.profile.pad_slots
        self._fast = fast and self.profile.search_loop == "counted"
        slow = search_area_wrap if self.profile.search_loop == "wrap" else search_area_literal
        self._slow_search: Callable[[IoTlbPool, int, SearchRequest], int] = slow
        self._mask_cache: dict[tuple[int, int, bool], tuple[int, int, int, int, int, bool]] = {}
        self._plan_cache: dict[tuple[int, int, int, bool], _Plan] = {}
        if isinstance(count_steps, IoTlbSteps):
            self.steps: IoTlbSteps | None = count_steps  # shared with other allocators
        elif isinstance(count_steps, bool):
            self.steps = IoTlbSteps() if count_steps else None
        else:
            raise TypeError(f"count_steps must be a bool or an IoTlbSteps, not {type(count_steps).__name__}")
        self._probes = [0]  # the slow searches' loop iterations, while counting
        if count_steps:
            probes = self._probes

            def counted_slow_search(pool: IoTlbPool, area_index: int, req: SearchRequest) -> int:
                return slow(pool, area_index, req, probes)

            self._slow_search = counted_slow_search

    # -- pools -----------------------------------------------------------------------------
    def add_pool(self, pool: IoTlbPool) -> None:
        """``add_mem_pool``: insert at the head of the search list (spec §2.6)."""
        if not self.profile.areas and pool.nareas != 1:
            raise PoolLayoutError(
                f"kernel profile {self.profile.name} has no areas; pool has nareas={pool.nareas}"
            )
        with self.lock:
            for other in self.pools + self.transient_pools:
                if pool.start < other.end and other.start < pool.end:
                    raise PoolLayoutError(f"{pool!r} overlaps {other!r}")
            if pool.transient:
                self.transient_pools.insert(0, pool)
                self.transient_nslabs += pool.nslabs
            else:
                self.pools.insert(0, pool)
                self.nslabs += pool.nslabs
                if self._hints:  # roomy-first walk: a new pool at the head takes the traffic
                    self._hints[:] = [None] * len(self._hints)

    def remove_pool(self, pool: IoTlbPool) -> None:
        """Take an idle pool off the lists (transient deletion, or a shrinking policy).

        Every area lock is held while the pool is checked idle and marked dead, so a search
        that raced to the pool before it left the list finds it dead and moves on.
        """
        locks = [area.lock for area in pool.areas]
        for lock in locks:
            lock.acquire()
        try:
            if pool.used:
                raise ReleaseError(f"{pool!r} still has {pool.used} slots in use")
            with self.lock:
                if pool.transient:
                    self.transient_pools.remove(pool)
                    self.transient_nslabs -= pool.nslabs
                else:
                    self.pools.remove(pool)
                    self.nslabs -= pool.nslabs
                    if self._hints:
                        self._hints[:] = [h if h is None or h[0] is not pool else None for h in self._hints]
                pool.dead = True
        finally:
            for lock in reversed(locks):
                lock.release()

    def del_transient(self, pool: IoTlbPool) -> None:
        """``swiotlb_del_transient`` (spec §5.5): drop a transient pool with its one buffer.

        The buffer's slots are not released one by one; the whole pool's slots leave the
        ``io_tlb_used`` count at once, as the kernel's ``dec_used(mem, pool->nslabs)`` does.
        """
        if not pool.transient:
            raise ReleaseError(f"{pool!r} is not a transient pool")
        with self.lock:
            try:
                self.transient_pools.remove(pool)
            except ValueError:
                raise ReleaseError(f"{pool!r} is not on this allocator's transient list") from None
            self.transient_nslabs -= pool.nslabs
            self.total_used -= pool.nslabs

    def find_pool(self, paddr: int) -> IoTlbPool | None:
        """``swiotlb_find_pool``: the pool holding a bounce address, or None (spec §5.6)."""
        for pool in self.pools:
            if pool.start <= paddr < pool.end:
                return pool
        for pool in self.transient_pools:
            if pool.start <= paddr < pool.end:
                return pool
        return None

    def is_bounce_buffer(self, paddr: int) -> bool:
        return self.find_pool(paddr) is not None

    # -- search ----------------------------------------------------------------------------
    def _masks(self, min_align: int, align: int, big: bool) -> tuple[int, int, int, int, int, bool]:
        """Cached ``(align_mask, iotlb_mask, stride, q_plain, q_orig, regular)`` for a request.

        The masks depend on the size only through the page rule (``big``), so a handful of
        entries serve a whole replay. ``q_*`` are the alignment periods in slots without and
        with the ``orig_addr`` comparison; ``regular`` says the aligned slots form one
        arithmetic progression (see :func:`swiotlb.core.search.progression`).
        """
        key = (min_align, align, big)
        cached = self._mask_cache.get(key)
        if cached is None:
            m = self.profile.search_masks(self.page_size if big else 0, min_align, align, self.page_size)
            probe = progression(m.align_mask, m.iotlb_mask, 0, 0)
            full = progression(m.align_mask, m.iotlb_mask, m.iotlb_mask, 0)
            regular = probe is not None and full is not None
            cached = (
                m.align_mask, m.iotlb_mask, m.stride,
                probe[0] if probe else 0, full[0] if full else 0, regular,
            )
            if len(self._mask_cache) > 4096:
                self._mask_cache.clear()
            self._mask_cache[key] = cached
        return cached

    def _plan(self, dev: DmaParams, size: int, alloc_align_mask: int) -> _Plan:
        """What a request needs that depends on neither the pool nor ``orig_addr`` (cached)."""
        min_align = dev.min_align_mask & U32_MASK
        big = size >= self.page_size
        plan = self._plan_cache.get((min_align, dev.seg_boundary_mask, alloc_align_mask, big))
        if plan is None:
            plan = self._new_plan(min_align, dev.seg_boundary_mask, alloc_align_mask, big)
        return plan

    def _new_plan(self, min_align: int, bmask: int, alloc_align_mask: int, big: bool) -> _Plan:
        """Compute and cache the plan for ``(min_align, bmask, alloc_align_mask, big)``."""
        am, im, stride, q_plain, q_orig, regular = self._masks(min_align, alloc_align_mask & U32_MASK, big)
        plan = (am, im, stride, q_plain, q_orig, regular and self._fast, bmask,
                (bmask >> IO_TLB_SHIFT) + 1, min_align & SLOT_LOW_MASK)
        if len(self._plan_cache) > 4096:
            self._plan_cache.clear()
        self._plan_cache[(min_align, bmask, alloc_align_mask, big)] = plan
        return plan

    def _search_pool_area(
        self, pool: IoTlbPool, area_index: int, plan: _Plan, orig_addr: int, size: int, crowd: int = 0,
        look: bool = True,
    ) -> int:
        """``swiotlb_search_pool_area`` (spec §3.3): search one area, take the slots; -1 if none.

        Under the area lock: the quick reject, then the first aligned slot at the cursor (the
        usual answer), then the full search of :func:`~swiotlb.core.search.fast_search` (or
        the literal loop for irregular masks and the <= 6.2 loop).

        ``crowd`` > 0 is the first pass of the roomy-first walk (:meth:`roomy_first`): an
        area with fewer than ``crowd`` free slots gets only the probe at its cursor, and
        :data:`CROWDED` when that does not fit. 0 is the kernel's search. ``look=False``:
        the caller has made the look before the lock already.
        """
        n = (size + SLOT_LOW_MASK) >> IO_TLB_SHIFT
        area = pool.areas[area_index]
        nslabs = pool.area_nslabs
        if look and (n > nslabs - area.used or (
            n > 1 and plan[5] and nslabs - area.used >= crowd
            and (n > IO_TLB_SEGSIZE or _AT_LEAST[n].search(area.blkub) is None)
        )):
            return -1  # cheap look before the lock; the answer cannot change the outcome
        am, im, stride, q_plain, q_orig, fast, bmask, window, low_mask = plan
        tbl = pool.start & bmask
        shift = (tbl + SLOT_LOW_MASK) >> IO_TLB_SHIFT
        lock = area.lock
        lock.acquire()
        try:
            if n > nslabs - area.used or pool.dead:
                return -1  # quick reject: not enough free slots in this area (or pool gone)
            if fast:
                if orig_addr and im:
                    q = q_orig
                    residue = ((orig_addr & im) - tbl) >> IO_TLB_SHIFT
                else:
                    q = q_plain
                    residue = -tbl >> IO_TLB_SHIFT
                base = area_index * nslabs
                index = area.index
                slot = base + index + ((residue - base - index) & (q - 1))
                if not (
                    slot < base + nslabs
                    and pool.list[slot] >= n
                    and ((shift + slot) & (window - 1)) + n <= window
                ):
                    if nslabs - area.used < crowd:
                        return CROWDED  # roomy-first walk: a crowded area waits for the second pass
                    slot = search_past_cursor(
                        pool, area_index, n, q, (residue - base) & (q - 1), stride, shift, window, True
                    )  # the look before the lock has consulted the upper-bound index
            elif nslabs - area.used < crowd:
                return CROWDED
            else:
                req = SearchRequest(n, SearchMasks(am, im, stride), orig_addr, tbl, shift, window)
                slot = self._slow_search(pool, area_index, req)
            if slot < 0:
                return -1
            take_slots(pool, area_index, slot, n, size - (orig_addr & low_mask))
        finally:
            lock.release()
        lock = self.lock
        lock.acquire()
        used = self.total_used = self.total_used + n
        if used > self.used_hiwater:
            self.used_hiwater = used
        lock.release()
        return slot

    def search_pool_area(
        self, dev: DmaParams, pool: IoTlbPool, area_index: int, orig_addr: int, size: int,
        alloc_align_mask: int = 0,
    ) -> int:
        """``swiotlb_search_pool_area``: search one area and take the slots; -1 if none fit."""
        plan = self._plan(dev, size, alloc_align_mask)
        if self.steps is not None:
            return self._search_counted(pool, area_index, plan, orig_addr, size)
        return self._search_pool_area(pool, area_index, plan, orig_addr, size)

    def _search_counted(
        self, pool: IoTlbPool, area_index: int, plan: _Plan, orig_addr: int, size: int, crowd: int = 0
    ) -> int:
        """:meth:`_search_pool_area`, adding what the kernel did to :attr:`steps`.

        The kernel's probe count follows from the state before the search and its answer
        (:func:`~swiotlb.core.search.kernel_probes`), so the fast search runs unchanged; the
        slow searches count their own iterations.
        """
        steps = self.steps
        assert steps is not None
        n = (size + SLOT_LOW_MASK) >> IO_TLB_SHIFT
        area = pool.areas[area_index]
        nslabs = pool.area_nslabs
        cursor = area.index
        quick = n > nslabs - area.used
        self._probes[0] = 0
        slot = self._search_pool_area(pool, area_index, plan, orig_addr, size, crowd)
        steps.lock_acquire += 1
        if pool.dead:
            return slot
        if quick:
            steps.area_quick_reject += 1
            return slot
        if slot == CROWDED and not plan[5]:  # irregular masks: left for the second pass unprobed
            steps.area_crowded += 1
            return slot
        steps.area_search += 1
        _, im, stride, q_plain, q_orig, fast, bmask, _, _ = plan
        if fast:  # the fast search ran: derive the kernel's iterations
            tbl = pool.start & bmask  # the progression of search.progression, from the plan
            if orig_addr and im:
                q = q_orig
                residue = ((orig_addr & im) - tbl) >> IO_TLB_SHIFT
            else:
                q = q_plain
                residue = -tbl >> IO_TLB_SHIFT
            base = area_index * nslabs
            if slot == CROWDED:  # the loop ran to the first aligned slot at the cursor, probed it, stopped
                steps.area_crowded += 1
                first = cursor + ((residue - base - cursor) % q)
                steps.slot_probe += first - cursor + 1 if first < nslabs else nslabs - cursor
                return slot
            found = slot - base if slot >= 0 else -1
            steps.slot_probe += kernel_probes(nslabs, cursor, (residue - base) % q, q, stride, found)
        else:  # the literal or <= 6.2 loop ran and counted its iterations
            steps.slot_probe += self._probes[0]
        if slot >= 0:
            steps.slot_mark += n
            steps.list_fixup += _free_run_before(pool, slot)
        return slot

    def find_slots(
        self, dev: DmaParams, orig_addr: int, size: int, alloc_align_mask: int = 0, cpu: int = 0
    ) -> tuple[IoTlbPool, int] | None:
        """``swiotlb_find_slots`` over the listed pools (spec §3.2); growth is the policy's."""
        if self.dynamic and self.profile.early_reject and size > MAX_SEGMENT_BYTES:
            return None
        return self._find_slots(dev, orig_addr, size, alloc_align_mask, cpu, self._plan(dev, size, alloc_align_mask))

    def _find_slots(
        self, dev: DmaParams, orig_addr: int, size: int, alloc_align_mask: int, cpu: int, plan: _Plan
    ) -> tuple[IoTlbPool, int] | None:
        """The walk of :meth:`find_slots`, after the early reject, with the plan computed."""
        if self._hints:
            return self._find_slots_roomy(dev, orig_addr, size, alloc_align_mask, cpu, plan)
        steps = self.steps
        if steps is None:
            return self._find_slots_uncounted(dev, orig_addr, size, alloc_align_mask, cpu, plan)
        search = self._search_counted
        pools = self.pools
        if len(pools) == 1 or not (self.dynamic and self.profile.area_major):
            for pool in pools:  # pool-major: every area of a pool before the next pool
                if steps is not None:
                    steps.pool_walk += 1
                mask = pool.nareas - 1
                start = cpu & mask
                for off in range(pool.nareas):
                    slot = search(pool, (start + off) & mask, plan, orig_addr, size)
                    if slot >= 0:
                        return pool, slot
            return self._exhausted(dev, orig_addr, size, alloc_align_mask, cpu)
        for off in range(self.default_nareas):  # area-major (>= 6.8)
            for pool in pools:
                if steps is not None:
                    steps.pool_walk += 1  # the list walk visits the pool even when it skips it
                if off < pool.nareas:
                    slot = search(pool, (cpu + off) & (pool.nareas - 1), plan, orig_addr, size)
                    if slot >= 0:
                        return pool, slot
        return self._exhausted(dev, orig_addr, size, alloc_align_mask, cpu)

    def _find_slots_uncounted(
        self, dev: DmaParams, orig_addr: int, size: int, alloc_align_mask: int, cpu: int, plan: _Plan
    ) -> tuple[IoTlbPool, int] | None:
        """:meth:`_find_slots` when nothing is counted: the same walk, with the look before
        the lock of :meth:`_search_pool_area` made here, so that an area that cannot fit
        costs no call (most areas, when the pool is nearly full)."""
        n = (size + SLOT_LOW_MASK) >> IO_TLB_SHIFT
        # the upper-bound look applies to fast plans of runs over one slot
        look = _AT_LEAST[n] if 1 < n <= IO_TLB_SEGSIZE and plan[5] else None
        never = n > IO_TLB_SEGSIZE and plan[5]  # no run is that long
        search = self._search_pool_area
        pools = self.pools
        if len(pools) == 1 or not (self.dynamic and self.profile.area_major):
            for pool in pools:  # pool-major: every area of a pool before the next pool
                mask = pool.nareas - 1
                start = cpu & mask
                areas = pool.areas
                room = pool.area_nslabs - n  # an area with more used slots than this cannot fit
                for off in range(pool.nareas):
                    a = (start + off) & mask
                    area = areas[a]
                    if area.used > room or never or (look is not None and look.search(area.blkub) is None):
                        continue
                    slot = search(pool, a, plan, orig_addr, size, 0, False)
                    if slot >= 0:
                        return pool, slot
            return self._exhausted(dev, orig_addr, size, alloc_align_mask, cpu)
        for off in range(self.default_nareas):  # area-major (>= 6.8)
            for pool in pools:
                if off < pool.nareas:
                    a = (cpu + off) & (pool.nareas - 1)
                    area = pool.areas[a]
                    if (
                        area.used > pool.area_nslabs - n or never
                        or (look is not None and look.search(area.blkub) is None)
                    ):
                        continue
                    slot = search(pool, a, plan, orig_addr, size, 0, False)
                    if slot >= 0:
                        return pool, slot
        return self._exhausted(dev, orig_addr, size, alloc_align_mask, cpu)

    def roomy_first(self, crowded_share: float) -> None:
        """Search this allocator's pools roomy areas first: a walk for designs of our own.

        Not the kernel's: a model of Linux never calls this. ``crowded_share`` in (0, 1]: an
        area with fewer than ``crowded_share`` of its slots free is *crowded*. The kernel's
        next-fit loop in a crowded area walks from the cursor to the few free slots left,
        up to the whole area. The walk then runs in two passes over the same areas, in the
        kernel's order:

        1. Each area as the kernel searches it (lock, quick reject, the probe at the cursor),
           except that a crowded area whose cursor probe does not fit is left for pass 2.
           The decision reuses the ``used`` count that the quick reject has just read.
        2. The crowded areas left, searched in full as the kernel does.

        Each CPU's area slot (``cpu & (default_nareas - 1)``) remembers, for small maps
        (at most ``_SMALL_SLOTS`` slots) and larger ones apart, the pool and area of its
        last success in pass 1. Pass 1 starts there (one ``pool_walk``; the hot path of
        :meth:`tbl_map_single` probes that area's cursor), then walks the list in order.
        Adding or removing a pool forgets the hints, so a new pool at the head takes the
        traffic. A map therefore fails only where the kernel's walk fails: every area is
        still searched in full before the exhaustion hook runs.
        """
        if not 0.0 < crowded_share <= 1.0:
            raise ValueError(f"crowded_share={crowded_share}: must be in (0, 1]")
        nareas = self.default_nareas
        if nareas & (nareas - 1):
            raise ValueError(f"default_nareas={nareas}: must be a power of two")
        self._crowd_share = crowded_share
        self._hints = [None] * (2 * nareas)

    def _find_slots_roomy(
        self, dev: DmaParams, orig_addr: int, size: int, alloc_align_mask: int, cpu: int, plan: _Plan
    ) -> tuple[IoTlbPool, int] | None:
        """:meth:`_find_slots` in the roomy-first order of :meth:`roomy_first`.

        Counted like the kernel's walk: a ``pool_walk`` per pool visited (area-major: every
        visit of the list), the area searches as :meth:`_search_counted` counts them (a
        crowded area left in pass 1 costs its lock and its cursor probe, ``area_crowded``),
        and a ``pool_walk`` per area taken up again in pass 2.
        """
        steps = self.steps
        search = self._search_pool_area if steps is None else self._search_counted
        pools = self.pools
        hints = self._hints
        n = (size + SLOT_LOW_MASK) >> IO_TLB_SHIFT
        h = ((cpu & ((len(hints) >> 1) - 1)) << 1) | (n > _SMALL_SLOTS)
        hint = hints[h]
        share = self._crowd_share
        crowded: list[tuple[IoTlbPool, int]] = []
        if hint is not None:
            pool, a = hint
            if steps is not None:
                steps.pool_walk += 1
            slot = search(pool, a, plan, orig_addr, size, int(pool.area_nslabs * share))
            if slot >= 0:
                return pool, slot
            if slot == CROWDED:
                crowded.append(hint)
        visits: list[list[tuple[IoTlbPool, int]]]
        if len(pools) == 1 or not (self.dynamic and self.profile.area_major):
            visits = [
                [(pool, ((cpu & (pool.nareas - 1)) + off) & (pool.nareas - 1)) for off in range(pool.nareas)]
                for pool in pools
            ]  # pool-major: one walk step per pool
        else:
            visits = [
                [(pool, (cpu + off) & (pool.nareas - 1))] if off < pool.nareas else []
                for off in range(self.default_nareas) for pool in pools
            ]  # area-major: one walk step per visit of the list, skipped pools included
        for group in visits:
            if steps is not None:
                steps.pool_walk += 1
            for pool, a in group:
                if hint is not None and pool is hint[0] and a == hint[1]:
                    continue  # searched first
                slot = search(pool, a, plan, orig_addr, size, int(pool.area_nslabs * share))
                if slot >= 0:
                    hints[h] = (pool, a)
                    return pool, slot
                if slot == CROWDED:
                    crowded.append((pool, a))
        for pool, a in crowded:
            if steps is not None:
                steps.pool_walk += 1
            slot = search(pool, a, plan, orig_addr, size)
            if slot >= 0:
                return pool, slot
        return self._exhausted(dev, orig_addr, size, alloc_align_mask, cpu)

    def _exhausted(
        self, dev: DmaParams, orig_addr: int, size: int, alloc_align_mask: int, cpu: int
    ) -> tuple[IoTlbPool, int] | None:
        if self.can_grow and self.on_exhausted is not None:
            return self.on_exhausted(dev, orig_addr, size, alloc_align_mask, cpu)
        return None

    # -- map and release -------------------------------------------------------------------
    def tbl_map_single(
        self,
        dev: DmaParams,
        orig_addr: int,
        mapping_size: int,
        alloc_align_mask: int = 0,
        *,
        cpu: int = 0,
        alloc_size: int | None = None,
    ) -> SlotMapping | MapRefused:
        """``swiotlb_tbl_map_single`` without the copy (spec §3.1): choose and mark slots.

        ``alloc_size`` exists only for generations <= 6.9 (default: ``mapping_size``).
        """
        if not self.nslabs and not self.serve_without_pools:
            return MapRefused(MapFailure.NO_POOL, mapping_size, 0, 0)
        min_align = dev.min_align_mask & U32_MASK
        if self._pad_slots:
            if alloc_size is not None:
                raise TypeError(f"kernel profile {self.profile.name} has no alloc_size argument")
            offset = orig_addr & min_align & ((alloc_align_mask & U32_MASK) | SLOT_LOW_MASK)
            size = (mapping_size + offset + alloc_align_mask) & ~alloc_align_mask
        else:
            if alloc_size is None:
                alloc_size = mapping_size
            if mapping_size > alloc_size:
                return MapRefused(
                    MapFailure.INVALID_SIZES, alloc_size, self.nslabs, self.total_used, mapping_size
                )
            offset = orig_addr & min_align & SLOT_LOW_MASK
            size = alloc_size + offset
        n = (size + SLOT_LOW_MASK) >> IO_TLB_SHIFT
        bmask = dev.seg_boundary_mask
        big = size >= self.page_size
        plan = self._plan_cache.get((min_align, bmask, alloc_align_mask, big))
        if plan is None:
            plan = self._new_plan(min_align, bmask, alloc_align_mask, big)
        pools = self.pools
        if plan[5] and pools:
            # The hot path. Both walk orders of find_slots search area ``cpu`` of the first
            # pool first (the roomy-first walk: the CPU's hinted area), and the usual answer
            # is its first aligned slot at the cursor. Look at that slot before taking the
            # lock; if it fits, take the lock, check that nothing moved, and mark the slots
            # with take_slots inlined (keep them in step). Anything else goes through
            # find_slots from the start: nothing has been changed or counted yet. (Over
            # 256 KiB nothing fits here: no early reject needed.)
            hints = self._hints
            hint = hints[((cpu & ((len(hints) >> 1) - 1)) << 1) | (n > _SMALL_SLOTS)] if hints else None
            if hint is None:
                pool = pools[0]
                area_index = cpu & (pool.nareas - 1)
            else:
                pool, area_index = hint
            area_nslabs = pool.area_nslabs
            area = pool.areas[area_index]
            cursor = area.index
            base = area_index * area_nslabs
            tbl = pool.start & bmask
            im = plan[1]
            if orig_addr and im:  # the first aligned slot at or after the cursor
                slot = base + cursor + (((((orig_addr & im) - tbl) >> IO_TLB_SHIFT) - base - cursor) & (plan[4] - 1))
            else:
                slot = base + cursor + (((-tbl >> IO_TLB_SHIFT) - base - cursor) & (plan[3] - 1))
            lst = pool.list
            window = plan[7]
            if (
                slot < base + area_nslabs
                and lst[slot] >= n
                and ((((tbl + SLOT_LOW_MASK) >> IO_TLB_SHIFT) + slot) & (window - 1)) + n <= window
            ):
                end = slot + n
                if end > pool.nslabs:
                    take_slots(pool, area_index, slot, n, 0)  # raises PoolOverrun (uncapped lists)
                pad = offset >> IO_TLB_SHIFT
                fixed = 0  # free slots before the run, rewritten by the backward fix-up
                lock = area.lock
                lock.acquire()
                try:
                    taken = area.index == cursor and lst[slot] >= n and not pool.dead
                    if taken:
                        view = pool.view
                        view[slot:end] = _ZEROS[n]
                        pool.heads[slot] = 1
                        pool.head_alloc_size[slot] = size - (orig_addr & plan[8])
                        pool.head_nslots[slot] = n
                        pool.head_orig_addr[slot] = orig_addr
                        if pad:
                            pool.head_pad[slot] = pad
                            pool.pad_slots[slot + pad] = pad
                        seg_lo = slot & -IO_TLB_SEGSIZE
                        if slot > seg_lo and lst[slot - 1]:
                            fixed = slot - (lst.rfind(0, seg_lo, slot) + 1 or seg_lo)
                            view[slot - fixed : slot] = _DESC[fixed]
                        end -= base
                        area.index = 0 if end >= area_nslabs else end
                        area.used += n
                finally:
                    lock.release()
                if taken:
                    steps = self.steps
                    if steps is not None:
                        steps.pool_walk += 1
                        steps.lock_acquire += 1
                        steps.area_search += 1
                        steps.slot_probe += slot - base - cursor + 1  # misaligned walk + the probe
                        steps.slot_mark += n
                        steps.list_fixup += fixed
                    lock = self.lock
                    lock.acquire()
                    used = self.total_used = self.total_used + n
                    if used > self.used_hiwater:
                        self.used_hiwater = used
                    lock.release()
                    index = slot + pad
                    return SlotMapping(
                        pool.start + (index << IO_TLB_SHIFT) + (offset & SLOT_LOW_MASK), pool, index, pad, n, size
                    )
        if size > MAX_SEGMENT_BYTES and self.dynamic and self.profile.early_reject:
            found = None  # the >= 6.9 early reject: no search, no growth
        elif self.steps is None and not self._hints:
            found = self._find_slots_uncounted(dev, orig_addr, size, alloc_align_mask, cpu, plan)
        else:
            found = self._find_slots(dev, orig_addr, size, alloc_align_mask, cpu, plan)
        if found is None:
            too_large = n > IO_TLB_SEGSIZE or n > get_max_slots(dev.seg_boundary_mask)
            cause = MapFailure.TOO_LARGE if too_large else MapFailure.FULL
            shown = size if alloc_size is None else alloc_size  # the 'sz' the kernel prints
            return MapRefused(cause, shown, self.nslabs, self.total_used)
        pool, slot = found
        pad = offset >> IO_TLB_SHIFT
        index = slot + pad
        pool.head_orig_addr[slot] = orig_addr
        if pad:
            pool.head_pad[slot] = pad
            pool.pad_slots[index] = pad
        return SlotMapping(pool.start + (index << IO_TLB_SHIFT) + (offset & SLOT_LOW_MASK), pool, index, pad, n, size)

    def release_slots(self, dev: DmaParams, tlb_addr: int, pool: IoTlbPool | None = None) -> int:
        """``swiotlb_release_slots`` (spec §3.6); returns the number of slots freed.

        Refuses (:class:`ReleaseError`, state untouched) an address that is not the start of
        a live allocation, where the kernel would silently corrupt its free lists. The merge
        is :func:`~swiotlb.core.search.free_slots` inlined (keep them in step).
        """
        if pool is None:
            pool = self.find_pool(tlb_addr)
        if pool is None or not pool.start <= tlb_addr < pool.end:
            raise ReleaseError(f"address {tlb_addr:#x} is not in any bounce pool")
        low = tlb_addr & dev.min_align_mask & SLOT_LOW_MASK
        data = (tlb_addr - low - pool.start) >> IO_TLB_SHIFT  # the first data slot
        index = data - pool.pad_slots[data] if self._pad_slots else data
        nslabs = pool.nslabs
        if not 0 <= index < nslabs:
            raise ReleaseError(f"address {tlb_addr:#x} is not a live bounce buffer of {pool!r}")
        area_nslabs = pool.area_nslabs
        area_index = index // area_nslabs
        area = pool.areas[area_index]
        lst = pool.list
        lock = area.lock
        lock.acquire()
        try:
            n = (pool.head_alloc_size[index] + low + SLOT_LOW_MASK) >> IO_TLB_SHIFT
            pad = pool.head_pad[index]
            if not pool.heads[index] or lst[index] or n != pool.head_nslots[index] or index + pad != data:
                raise ReleaseError(
                    f"address {tlb_addr:#x} (slot {index} of {pool!r}) is not a live bounce buffer"
                )
            end = index + n
            seg_lo = index & -IO_TLB_SEGSIZE
            top = n + (lst[end] if end < seg_lo + IO_TLB_SEGSIZE and end < nslabs else 0)
            view = pool.view
            view[index:end] = _DESC[top][:n]
            pool.heads[index] = 0
            if pad:
                pool.pad_slots[data] = 0
                pool.head_pad[index] = 0
            fixed = 0  # free slots before the run, merged into it
            if index > seg_lo and lst[index - 1]:
                fixed = index - (lst.rfind(0, seg_lo, index) + 1 or seg_lo)
                top += fixed
                view[index - fixed : index] = _DESC[top][:fixed]
            area.used -= n
            seg = (index - area_index * area_nslabs) >> _SEG_SHIFT
            segub = area.segub
            if segub[seg] < top:  # raise the upper-bound index
                segub[seg] = top
                if area.blkub[seg >> _BLK_SHIFT] < top:
                    area.blkub[seg >> _BLK_SHIFT] = top
            steps = self.steps
            if steps is not None:
                steps.lock_acquire += 1
                steps.list_fixup += n + fixed
        finally:
            lock.release()
        if not pool.transient:
            lock = self.lock
            lock.acquire()
            self.total_used -= n
            lock.release()
        return n

    # -- copies ----------------------------------------------------------------------------
    def bounce_target(
        self, dev: DmaParams, tlb_addr: int, size: int, pool: IoTlbPool | None = None
    ) -> BounceSpan | None:
        """Which original bytes a ``swiotlb_bounce`` at ``tlb_addr`` touches (spec §4.1).

        None when the slot holds no original address (pad or free slot, ``swiotlb_alloc``).
        """
        if pool is None:
            pool = self.find_pool(tlb_addr)
            if pool is None:
                return None
        index = (tlb_addr - pool.start) >> IO_TLB_SHIFT
        orig = pool.slot_orig_addr(index)
        if orig == INVALID_PHYS_ADDR:
            return None
        remaining = pool.slot_alloc_size(index)
        orig_off = orig & dev.min_align_mask & SLOT_LOW_MASK
        tlb_off = tlb_addr & SLOT_LOW_MASK
        if self.profile.signed_bounce:
            d = tlb_off - orig_off
            orig += d
            remaining -= d
            if size > remaining:
                return BounceSpan(
                    orig, tlb_addr, max(remaining, 0),
                    f"Buffer overflow detected. Allocation size: {remaining}. Mapping size: {size}.",
                )
            return BounceSpan(orig, tlb_addr, size)
        if tlb_off < orig_off:
            return BounceSpan(
                orig, tlb_addr, 0,
                f"Access before mapping start detected. orig offset {orig_off}, requested offset {tlb_off}.",
            )
        tlb_off -= orig_off
        if tlb_off > remaining:
            return BounceSpan(
                orig, tlb_addr, 0,
                f"Buffer overflow detected. Allocation size: {remaining}. Mapping size: {size}+{tlb_off}.",
            )
        orig += tlb_off
        remaining -= tlb_off
        if size > remaining:
            return BounceSpan(
                orig, tlb_addr, remaining,
                f"Buffer overflow detected. Allocation size: {remaining}. Mapping size: {size}.",
            )
        return BounceSpan(orig, tlb_addr, size)

    # -- limits and counters ---------------------------------------------------------------
    def max_mapping_size(self, dev: DmaParams) -> int:
        """``swiotlb_max_mapping_size`` (spec §1.6): 256 KiB less the rounded min-align mask."""
        if not self.profile.min_align_limits_size:
            return MAX_SEGMENT_BYTES
        return max_mapping_size(dev.min_align_mask)

    def reset_hiwater(self, value: int = 0) -> None:
        """Writing debugfs ``io_tlb_used_hiwater``: only 0 is accepted (-EINVAL otherwise)."""
        if value != 0:
            raise ValueError("io_tlb_used_hiwater accepts only 0 (the kernel answers -EINVAL)")
        with self.lock:
            self.used_hiwater = 0

    @property
    def used(self) -> int:
        return self.total_used

    def counters(self) -> dict[str, int]:
        """The debugfs files of ``/sys/kernel/debug/swiotlb`` (spec §5.7)."""
        out = {"io_tlb_nslabs": self.nslabs, "io_tlb_used": self.total_used}
        if self.profile.hiwater:
            out["io_tlb_used_hiwater"] = self.used_hiwater
        if self.dynamic and self.profile.transient_counter:
            out["io_tlb_transient_nslabs"] = self.transient_nslabs
        return out

    def claim_slots(
        self, dev: DmaParams, orig_addr: int, mapping_size: int, tlb_addr: int, *, cpu: int = 0
    ) -> SlotMapping:
        """Take the slots at ``tlb_addr`` as if the search had chosen them (``alloc_align_mask`` 0).

        A trace replay applies the kernel's recorded decision with this after a disagreement,
        so that the next decision starts from the kernel's own state: the slots are marked,
        the area's next-fit cursor moves past them and ``used`` and the hiwater count them,
        exactly as a successful search there would have done. ``cpu`` is accepted for symmetry
        with :meth:`tbl_map_single`; the area is the one holding the slots. Refuses (ValueError,
        state untouched) slots that are not free or not a run the kernel could hand out.
        """
        pool = self.find_pool(tlb_addr)
        if pool is None:
            raise ValueError(f"address {tlb_addr:#x} is not in any bounce pool")
        offset = orig_addr & dev.min_align_mask & U32_MASK & SLOT_LOW_MASK
        if (tlb_addr ^ orig_addr) & dev.min_align_mask & SLOT_LOW_MASK:
            raise ValueError(f"{tlb_addr:#x} does not keep the low bits of {orig_addr:#x} (min_align_mask)")
        size = mapping_size + offset
        n = (size + SLOT_LOW_MASK) >> IO_TLB_SHIFT
        data = (tlb_addr - offset - pool.start) >> IO_TLB_SHIFT
        pad = 0  # alloc_align_mask 0: the kernel adds no pad slots (spec §3.1)
        slot = data - pad
        if n > IO_TLB_SEGSIZE or slot + n > pool.nslabs or pool.list[slot] < n:
            raise ValueError(f"slots {slot}..{slot + n - 1} of {pool!r} are not a free run")
        area_index = slot // pool.area_nslabs
        with pool.areas[area_index].lock:
            take_slots(pool, area_index, slot, n, size - offset)
            pool.head_orig_addr[slot] = orig_addr
        if not pool.transient:
            with self.lock:
                used = self.total_used = self.total_used + n
                if used > self.used_hiwater:
                    self.used_hiwater = used
        return SlotMapping(tlb_addr, pool, data, pad, n, size)

    def check_invariants(self) -> list[str]:
        """Every broken invariant, as text (empty when the state is sound)."""
        errors: list[str] = []
        for pool in self.pools + self.transient_pools:
            errors.extend(f"{pool!r}: {e}" for e in pool.free_run_errors())
        listed = sum(p.used for p in self.pools)
        if not self.transient_pools and listed != self.total_used:
            errors.append(f"total_used={self.total_used} but areas hold {listed} slots")
        return errors
