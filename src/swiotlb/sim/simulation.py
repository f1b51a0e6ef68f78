"""The simulator (issue 4): workloads drive a bounce policy over simulated time and every step is
measured.

A :class:`Simulation` builds a :class:`~swiotlb.dma.Machine` from a
:class:`~swiotlb.sim.spec.MachineSpec` (the boot pool sized as the kernel would, spec §1), adds the
devices, and lets workloads map and unmap buffers through the machine's policy at the times the
:class:`~swiotlb.sim.engine.Engine` gives them. It works at the policy level — the same calls
:mod:`swiotlb.dma.direct` makes (``policy.map``/``policy.release``, the bounce decision of spec
§4.4, the reach check of §4.3) — but moves no bytes: a simulated run of millions of maps counts
the bytes a copy would move instead of copying them.

What a map costs is *counted, then priced*: the allocator counts its steps (slots probed and
marked, free-run fix-ups, locks, pools walked; ``IoTlbMem(count_steps=...)``), the policy's
environment counts page allocations, and memory encryption counts conversions. The
:class:`~swiotlb.sim.costs.CostModel` prices the difference each call made. Raw counts are in every
result, so two designs can be compared without trusting any price.

Modelled contention: each area of the allocator is a spinlock held for the priced slot work of
a map or unmap. A call that finds its area busy waits until it is free; the wait is measured
(``lock_wait_ns_total``) and delays the mapping's ``ready_ns``. The copy runs after the lock is
dropped, as in ``swiotlb_tbl_map_single``.

Deferred work (the growth worker of Linux 6.6, adaptive's worker, deferred frees) runs when the
policy's :meth:`~swiotlb.policies.BouncePolicy.next_deadline` says, but never sooner than one
worker wake-up latency after the need arose. Deferred maps (``then=``) complete by callback.

Everything is deterministic: one seed, integer nanoseconds, no wall clock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from swiotlb._mypyc import mypyc_attr
from swiotlb.core import MapFailure, MapRefused
from swiotlb.core.allocator import IoTlbSteps, Tally
from swiotlb.dma import Machine
from swiotlb.dma.device import Device
from swiotlb.dma.errors import DoubleUnmapError
from swiotlb.dma.types import DmaAttrs, DmaDirection
from swiotlb.policies import policy_class
from swiotlb.policies.base import BouncePolicy, PoolHandle
from swiotlb.policies.config import knob_defaults
from swiotlb.sim.costs import CostModel
from swiotlb.sim.engine import Engine, Event
from swiotlb.sim.metrics import RunMetrics, Samples, grid_step, round_half_even
from swiotlb.sim.rng import RngStreams
from swiotlb.sim.sampling import GridSampler
from swiotlb.sim.spec import DeviceSpec, MachineSpec

__all__ = ["PENDING", "SimMapping", "Simulation", "SimulationError"]

TO_DEVICE = DmaDirection.TO_DEVICE
FROM_DEVICE = DmaDirection.FROM_DEVICE
_MAP_DIRECTIONS = (TO_DEVICE, FROM_DEVICE, DmaDirection.BIDIRECTIONAL)
_SKIP = int(DmaAttrs.SKIP_CPU_SYNC)
_MAY_SLEEP = int(DmaAttrs.MAY_SLEEP)
LOW_RESERVED = 1 << 20  # the machine keeps the first MiB for firmware; no CPU buffer lives there

CORE_STEPS: tuple[str, ...] = ("slot_probe", "slot_mark", "list_fixup", "lock_acquire", "pool_walk")
"""The allocator's step counts that are priced per call (the slot work under the area lock)."""


class _Pending:
    """The type of :data:`PENDING`."""

    _instance: ClassVar[_Pending | None] = None

    def __new__(cls) -> _Pending:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "PENDING"

    def __bool__(self) -> bool:
        return False


PENDING = _Pending()
"""What :meth:`Simulation.map` returns when it deferred the map; ``then`` gets the outcome later."""


@mypyc_attr(native_class=False)  # mypyc cannot subclass RuntimeError natively
class SimulationError(RuntimeError):
    """A misuse of the simulator (a bad argument, an unmap of a mapping that is not live)."""


class SimMapping:
    """A live (or finished) mapping of the simulation.

    ``ready_ns`` is when the map completed on its CPU: the time of the call plus the lock wait
    and the modelled CPU cost. ``dma_addr`` is the bounce address, or the buffer's own address
    for a direct mapping (``bounced`` False).
    """

    __slots__ = ("device", "size", "direction", "dma_addr", "bounced", "ready_ns", "cpu", "phys", "attrs",
                 "map_ns", "live", "_dev", "_pool")

    def __init__(
        self, device: str, size: int, direction: DmaDirection, dma_addr: int, bounced: bool, ready_ns: int,
        cpu: int, phys: int, attrs: int, map_ns: int, dev: Device, pool: PoolHandle | None,
    ) -> None:
        self.device = device
        self.size = size
        self.direction = direction
        self.dma_addr = dma_addr
        self.bounced = bounced
        self.ready_ns = ready_ns
        self.cpu = cpu
        self.phys = phys
        self.attrs = attrs
        self.map_ns = map_ns
        self.live = True
        self._dev = dev
        self._pool = pool

    def __repr__(self) -> str:
        how = "bounced" if self.bounced else "direct"
        return (f"SimMapping({self.device}, {self.size} bytes {self.direction.name}, {how} at "
                f"{self.dma_addr:#x}, ready {self.ready_ns} ns{'' if self.live else ', unmapped'})")


class Simulation:
    """One run: a machine, its devices, a policy, workloads, and the metrics of issue 4, §4.

    ``policy_options`` are the policy's knobs; ``costs`` the prices (default
    :class:`~swiotlb.sim.costs.CostModel`). ``grid_step_ns`` sets the time-series grid of the
    result (default: 100 points over the run). ``scenario`` names the run in its result.
    ``occupancy_bins`` > 0 adds the result's ``occupancy`` map (see
    :class:`~swiotlb.sim.sampling.GridSampler`).
    """

    def __init__(
        self,
        machine: MachineSpec,
        devices: Iterable[DeviceSpec],
        *,
        policy: str = "static",
        policy_options: Mapping[str, Any] | None = None,
        seed: int = 0,
        duration_ns: int,
        costs: CostModel | None = None,
        grid_step_ns: int | None = None,
        scenario: str = "custom",
        occupancy_bins: int = 0,
    ) -> None:
        if type(duration_ns) is not int or duration_ns <= 0:
            raise SimulationError(f"duration_ns must be a positive int, got {duration_ns!r}")
        if type(seed) is not int or seed < 0:
            raise SimulationError(f"seed must be an int >= 0, got {seed!r}")
        self.spec = machine
        self.policy_name = policy
        self.seed = seed
        self.end_ns = duration_ns
        self.scenario = scenario
        self.grid_step_ns = grid_step_ns
        self.costs = costs if costs is not None else CostModel()
        self.engine = Engine()
        self.streams = RngStreams(seed)
        engine = self.engine
        options = dict(policy_options or {})
        if "worker_delay_ns" in knob_defaults(policy_class(policy)):
            # one wake-up latency for every design: the cost model's, unless the scenario sets it
            options.setdefault("worker_delay_ns", self.costs.worker_wakeup_ns)
        self.machine = Machine(
            ram=machine.ram, cpus=machine.cpus, page_size=machine.page_size, coco=machine.coco,
            profile=machine.profile, cmdline=machine.cmdline, arch=machine.arch, clock=lambda: engine.now,
            policy=policy, policy_options=options, zone_dma_bits=machine.zone_dma_bits,
            cma=machine.cma, count_steps=True,
        )
        self.policy = self.machine.policy
        self.cpus = machine.cpus
        self.metrics = RunMetrics()
        self.counters: Counter[str] = Tally()  # bumped per I/O by workloads
        self.series: dict[str, Samples] = {}
        self.workloads: list[Any] = []
        self._specs: dict[str, DeviceSpec] = {}
        self._devs: dict[str, Device] = {}
        for spec in devices:
            if spec.name in self._specs:
                raise SimulationError(f"device {spec.name!r} is listed twice")
            self._specs[spec.name] = spec
            self._devs[spec.name] = self.machine.add_device(
                spec.name, dma_mask=spec.dma_mask, bus_dma_limit=spec.bus_dma_limit,
                min_align_mask=spec.min_align_mask, seg_boundary_mask=spec.seg_boundary_mask,
                coherent=spec.coherent,
            )
        # -- accounting state -------------------------------------------------------------
        steps = self.machine.mem.steps
        assert steps is not None  # count_steps=True
        self._steps = steps
        self._steps_at_start = steps.copy()
        c = self.costs
        self._priced = _slot_work_pricer(c, steps)
        # The slot work priced so far, as of the end of the simulator's last call: each call's
        # hold is what it adds (see _hold_lock), one reading per call instead of two.
        self._work = self._priced()
        self._tracks_memory = self.policy.allocates
        env = self.machine.env
        self._env_stats = env.stats
        self._enc_stats = self.machine.encryption.stats
        self._page_stats = self.machine.pages.stats
        self._memory_at_start = self._memory_sig()
        self._enc_at_start = (self._enc_stats.decrypt_ops, self._enc_stats.encrypt_ops)
        self._oom_at_start = self._page_stats.oom_events
        mem = self.policy.mem
        nareas = mem.pools[-1].nareas if mem.pools else (mem.default_nareas or 1)
        self._area_mask = (1 << (max(nareas, 1).bit_length() - 1)) - 1
        self._busy_until = [0] * (self._area_mask + 1)
        self._holder = [-1] * (self._area_mask + 1)
        self._random = self.streams.substream("sim/phys").random
        self._ram = machine.ram
        self._page = machine.page_size
        self._first_page = LOW_RESERVED // machine.page_size
        self._always_copy = mem.profile.always_copy_on_map
        # Bytes mapped through bounce buffers (the workloads' true need): only its peak and time
        # average reach the result, so no gauge, just a sum. ``_inflight_byte_ns`` is the
        # integral with every live mapping counted as if unmapped at time 0 (-size * its map
        # time); result() adds the live bytes times the end.
        self._inflight_bytes = 0
        self._inflight_peak = 0
        self._inflight_byte_ns = 0
        # -- hot-path state: looked up once, not on every map and unmap ---------------------
        # The policy is called as ``self.policy.map(...)``, not through bound methods kept
        # here: compiled (mypyc), that is a direct call with no argument parsing and no tuple
        # for footprint(), about 4 % of a run's instructions.
        self._copy_ns_of: dict[int, int] = {}  # copy_ns per size (a frozen model; few sizes a run)
        self._reserved = self.metrics.footprint.reserved
        self._map_ns_append = self.metrics.map_ns.appender()  # map costs are ints >= 0
        self._appenders: dict[str, Callable[[int], None]] = {}  # observe's, per series
        self._in_use = self.metrics.footprint.in_use
        # a policy that keeps the base class's next_deadline never has deferred work: skip the call
        self._has_deadlines = type(self.policy).next_deadline is not BouncePolicy.next_deadline
        self._wake_event: Event | None = None
        # the time of _wake_event while it is pending, else the end: a wake-up at or after
        # either needs no scheduling (see _after_call)
        self._wake_at = self.end_ns
        self._wakeup_ns = self.costs.worker_wakeup_ns
        self.worker_ns = 0
        self.worker_runs = 0
        self.unmaps = 0
        self._ran = False
        self._result: dict[str, Any] | None = None
        reserved, in_use = self.policy.footprint()  # the boot pool, reserved from the start
        self.metrics.footprint.set(self.engine.now, reserved=reserved, in_use=in_use)
        # State sampled on the result's grid: each call that may change it first records the
        # state in force at the grid times its clock has passed (see _sample).
        self._sampler = GridSampler(self.policy, self.metrics, grid_step(duration_ns, grid_step_ns), duration_ns,
                                    start_ns=self.engine.now, bins=occupancy_bins)
        self._sample_due = self._sampler.due

    # -- the workloads' API -----------------------------------------------------------------
    @property
    def now(self) -> int:
        return self.engine.now

    @property
    def pages(self) -> Any:
        """The machine's page allocator (background memory load allocates from it)."""
        return self.machine.pages

    def rng(self, name: str) -> Any:
        """An independent random stream derived from the seed and ``name``."""
        return self.streams.substream(name)

    def device(self, name: str) -> DeviceSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise KeyError(f"no device {name!r}; known: {', '.join(sorted(self._specs)) or 'none'}") from None

    def observe(self, key: str, value: int) -> None:
        """Record a sample of the series ``key`` (latencies, queue depths)."""
        append = self._appenders.get(key)
        if append is None or type(value) is not int or value < 0:  # a new series, or a bad value
            s = self.series.get(key)
            if s is None:
                s = self.series[key] = Samples()
                self._appenders[key] = s.appender()
            s.add(value)  # checks the value
            return
        append(value)

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] += n

    def add(self, workload: Any) -> Simulation:
        """Add a workload; its ``start(sim)`` runs at time 0 when :meth:`run` begins."""
        if self._ran:
            raise SimulationError("cannot add a workload to a simulation that has run")
        names = {getattr(w, "name", None) for w in self.workloads}
        name = getattr(workload, "name", None)
        if name in names:
            raise SimulationError(f"two workloads are named {name!r}")
        self.workloads.append(workload)
        return self

    # -- map ------------------------------------------------------------------------------
    def map(
        self,
        device: str,
        size: int,
        direction: DmaDirection,
        *,
        cpu: int = 0,
        may_sleep: bool = False,
        offset: int = 0,
        phys: int | None = None,
        attrs: int = 0,
        then: Callable[[SimMapping | None], object] | None = None,
    ) -> SimMapping | None | _Pending:
        """Map ``size`` bytes for ``device``: a :class:`SimMapping`, None on failure (counted by
        cause), or :data:`PENDING` when ``then`` was given, the caller may sleep, and the policy
        deferred the map; ``then`` later receives the mapping or None."""
        if self.engine.now > self._sample_due:
            self._sample()
        dev = self._devs.get(device)
        if (dev is None or type(size) is not int or size <= 0 or type(cpu) is not int or not 0 <= cpu < self.cpus
                or direction not in _MAP_DIRECTIONS):  # one test on the hot path; the messages below
            self._bad_map(device, size, direction, cpu)
        assert dev is not None
        if phys is None:  # a seeded page-aligned CPU buffer in RAM above the firmware MiB, + offset
            page, first = self._page, self._first_page
            span = (self._ram - size - offset) // page - first + 1
            if span <= 0:
                raise SimulationError(f"a {size}-byte buffer does not fit in {self._ram} bytes of RAM")
            phys = (first + int(self._random() * span)) * page + offset
        elif phys < 0 or phys + size > self._ram:
            raise SimulationError(f"{device}: buffer [{phys:#x}, {phys + size:#x}) is outside RAM")
        policy = self.policy
        metrics = self.metrics
        if not policy.force_bounce(dev) and phys + size - 1 <= dev.dma_limit:
            metrics.map_attempt(0)
            return SimMapping(device, size, direction, phys, False, self.engine.now, cpu, phys, attrs, 0, dev, None)
        if not policy.is_active(dev):
            metrics.map_attempt(0, 0, "unaddressable")
            return None
        may = may_sleep or bool(attrs & _MAY_SLEEP)
        if then is not None and may and policy.deferred_waiting(dev):
            if self._defer(dev, phys, size, direction, cpu, attrs, then, 0, 0):
                return PENDING  # FIFO: behind the maps already waiting, without trying
        m, cause, cost, wait = self._attempt(dev, phys, size, direction, cpu, may, attrs)
        if cause is None:  # the usual outcome: metrics.map_attempt(cost, wait), inlined
            self._map_ns_append(cost)
            if wait:
                metrics.lock_wait_ns_total += wait
            metrics.maps_attempted += 1
            metrics.maps_succeeded += 1
        else:
            if cause == "full" and then is not None and may:
                if self._defer(dev, phys, size, direction, cpu, attrs, then, cost, wait):
                    self._after_call()
                    return PENDING
            metrics.map_attempt(cost, wait, cause)
        self._after_call()
        return m

    def _bad_map(self, device: str, size: object, direction: object, cpu: object) -> None:
        """The argument checks of :meth:`map`, one by one: raises for the first that fails."""
        if device not in self._devs:
            self.device(device)  # raises, naming the known devices
        if type(size) is not int or size <= 0:
            raise SimulationError(f"{device}: map size must be a positive int, got {size!r}")
        if type(cpu) is not int or not 0 <= cpu < self.cpus:
            raise SimulationError(f"{device}: cpu {cpu!r} is not one of the machine's {self.cpus} CPUs")
        raise SimulationError(f"{device}: map direction must be TO_DEVICE, FROM_DEVICE or BIDIRECTIONAL, "
                              f"got {direction!r}")

    def _attempt(
        self, dev: Device, phys: int, size: int, d: DmaDirection, cpu: int, may_sleep: bool, attrs: int
    ) -> tuple[SimMapping | None, str | None, int, int]:
        """One try at a bounce: ``(mapping, failure cause, cpu ns, lock wait ns)``; counts steps and
        bytes, but no attempt (the caller decides whether this try was the map's last)."""
        mem_before = self._memory_sig() if self._tracks_memory else None
        try:
            r = self.policy.map(dev, phys, size, 0, cpu=cpu, may_sleep=may_sleep, attrs=attrs)
        except BaseException:
            self._work = self._priced()
            raise
        now = self.engine.now
        cost, wait = self._hold_lock(cpu, now)  # the lock is held for the slot work only
        memory_refused = False
        if mem_before is not None:
            mem_after = self._memory_sig()
            if mem_after != mem_before:
                extra, memory_refused = self._memory_cost(mem_before, mem_after)
                cost += extra
        if isinstance(r, MapRefused):
            cause = _cause(r.cause)
            if memory_refused and cause == "full":
                cause = "no_memory"
            return None, cause, cost, wait
        tlb = r.tlb_addr
        if tlb + size - 1 > dev.dma_limit:  # §4.3: the bounce buffer itself is out of reach
            self.policy.release(dev, tlb, r.pool)
            self._work = self._priced()  # the give-back is not priced
            return None, "unaddressable", cost, wait
        if self._always_copy or (d is not FROM_DEVICE and not attrs & _SKIP):
            self.metrics.bytes_copied += size  # and the copy_byte steps, added up by result()
            copy_ns = self._copy_ns_of.get(size)
            if copy_ns is None:
                copy_ns = self._copy_ns(size)
            cost += copy_ns
        inflight = self._inflight_bytes = self._inflight_bytes + size
        if inflight > self._inflight_peak:
            self._inflight_peak = inflight
        self._inflight_byte_ns -= size * now
        m = SimMapping(dev.name, size, d, tlb, True, now + wait + cost, cpu, phys, attrs, cost, dev, r.pool)
        return m, None, cost, wait

    def _copy_ns(self, size: int) -> int:
        """The modelled copy of ``size`` bytes, remembered for the next map of that size (up to
        4,096 sizes: a trace's sizes may be many)."""
        ns = self.costs.copy_ns(size)
        if len(self._copy_ns_of) < 4096:
            self._copy_ns_of[size] = ns
        return ns

    def _hold_lock(self, cpu: int, now: int) -> tuple[int, int]:
        """``(hold, wait)`` of the call that just returned: its slot work priced, held under the
        area spinlock of ``cpu``, and how long it waited for another CPU's hold to end first.
        A CPU never waits for itself: its own calls are sequential work.

        The hold is the slot work counted since the simulator's previous call ended
        (``_work``), which saves a reading before every call. That is the call's own work
        because only the simulator drives the policy (maps, unmaps, the worker), and every
        path that ends without pricing its work (a give-back, the worker, a failed call)
        re-reads the total. Slot work done on the policy behind the simulator's back would
        be priced into the next call.
        """
        work = self._priced()
        hold = work - self._work
        self._work = work
        busy = self._busy_until
        area = cpu & self._area_mask
        free_at = busy[area]
        wait = free_at - now if free_at > now and self._holder[area] != cpu else 0
        busy[area] = now + wait + hold
        self._holder[area] = cpu
        return hold, wait

    def _memory_sig(self) -> tuple[int, int, int, int, int, int, int]:
        """Monotone counters of memory work a policy does: page allocations (count, pages),
        refused allocations, pages made shared, pages made private, conversion calls, pages migrated."""
        env, enc, pages = self._env_stats, self._enc_stats, self._page_stats
        return (
            env.page_allocs, env.page_alloc_pages,
            env.pages_failed + env.atomic_pool_failures + pages.contig_failures,
            enc.decrypted_pages, enc.encrypted_pages, enc.decrypt_ops + enc.encrypt_ops,
            pages.migrated_pages,
        )

    def _memory_cost(self, before: tuple[int, ...], after: tuple[int, ...]) -> tuple[int, bool]:
        """Priced memory work between two :meth:`_memory_sig` readings, and whether an
        allocation was refused in between."""
        c = self.costs
        d = [a - b for a, b in zip(after, before)]
        ns = (d[0] * c.page_alloc_base_ns + d[1] * c.page_alloc_page_ns + d[3] * c.decrypt_page_ns
              + d[4] * c.encrypt_page_ns + d[5] * c.conversion_call_ns + d[6] * c.migrate_page_ns)
        return ns, d[2] > 0

    def _defer(
        self, dev: Device, phys: int, size: int, d: DmaDirection, cpu: int, attrs: int,
        then: Callable[[SimMapping | None], object], first_cost: int, first_wait: int,
    ) -> bool:
        """Hand the map to the policy's FIFO; False when the policy never defers."""
        submitted = self.engine.now

        def retry() -> bool:
            self._work = self._priced()  # the worker's own work so far is not the map's
            m, cause, cost, wait = self._attempt(dev, phys, size, d, cpu, True, attrs)
            if cause == "full":
                return False
            now = self.engine.now
            self.metrics.map_attempt(first_cost + cost, first_wait + wait, cause)
            self.metrics.deferral_wait(now - submitted)
            self.engine.at(now, lambda: then(m))  # not from inside the policy's worker
            return True

        if not self.policy.defer(dev, retry):
            return False
        self.metrics.deferred_map()
        return True

    # -- unmap ----------------------------------------------------------------------------
    def unmap(self, m: SimMapping, *, cpu: int | None = None) -> None:
        """Unmap ``m``: copy back what the device wrote (by direction), release its slots."""
        if self.engine.now > self._sample_due:
            self._sample()
        if not m.live:
            raise DoubleUnmapError(f"{m.device}: unmap of {m.dma_addr:#x}, which is already unmapped",
                                   device=m.device, dma_addr=m.dma_addr)
        if not m.bounced:
            m.live = False
            self.unmaps += 1
            return
        try:
            self.policy.release(m._dev, m.dma_addr, m._pool)
        except BaseException:
            self._work = self._priced()  # the mapping stays live and nothing is counted
            raise
        m.live = False
        self.unmaps += 1
        c = m.cpu if cpu is None else cpu
        size = m.size
        if m.direction is not TO_DEVICE and not m.attrs & _SKIP:  # the copy back, before the release
            self.metrics.bytes_copied += size  # and the copy_byte steps, added up by result()
        # Memory work a release does (a transient pool's pages made private again) shows in the
        # run's step counts but is not priced into the unmap: only the slot work holds the lock.
        now = self.engine.now
        wait = self._hold_lock(c, now)[1]
        if wait:
            self.metrics.lock_wait_ns_total += wait
        self._inflight_bytes -= size
        self._inflight_byte_ns += size * now
        self._after_call()

    # -- deferred work --------------------------------------------------------------------
    def _after_call(self, again: bool = True) -> None:
        """After a map, an unmap or a worker run: bring the footprint gauges up to date, then
        wake the worker when the policy next has work. After a worker run that did nothing,
        only if that work is for later: the worker must not spin on work it cannot do yet."""
        now = self.engine.now
        reserved, in_use = self.policy.footprint()
        if reserved != self._reserved.value:
            self._reserved.set_trusted(now, reserved)  # ints, at the engine's clock
        if in_use != self._in_use.value:
            self._in_use.set_trusted(now, in_use)
        if self._has_deadlines:
            deadline = self.policy.next_deadline()
            if deadline is not None and (again or deadline > now):
                # the usual answer: the pending wake-up covers it, or it falls after the end
                if (deadline if deadline > now else now + self._wakeup_ns) < self._wake_at:
                    self._schedule_worker(deadline)

    def _schedule_worker(self, deadline: int) -> None:
        """Wake the policy's worker at ``deadline``; work due now waits one wake-up latency
        (a policy's own timers already include it: see ``worker_delay_ns`` above)."""
        now = self.engine.now
        t = deadline if deadline > now else now + self.costs.worker_wakeup_ns
        ev = self._wake_event
        if ev is not None and Engine.is_pending(ev):
            if self._wake_at <= t:
                return
            self.engine.cancel(ev)
        if t >= self.end_ns:
            self._wake_event = None
            self._wake_at = self.end_ns
            return
        self._wake_at = t
        self._wake_event = self.engine.at(t, self._wake)

    def _wake(self) -> None:
        if self.engine.now > self._sample_due:
            self._sample()
        self._wake_event = None
        self._wake_at = self.end_ns
        before = self._priced()
        mem_before = self._memory_sig()
        ran = self.policy.run_deferred()
        self._steps["worker_wakeup"] += 1
        self.worker_runs += 1
        ns, _ = self._memory_cost(mem_before, self._memory_sig())
        self._work = work = self._priced()
        self.worker_ns += self.costs.worker_wakeup_ns + work - before + ns
        self._after_call(again=bool(ran))

    def _sample(self) -> None:
        """Record the state in force at the grid times the clock has passed. Nothing changes it
        between the simulator's calls, so the state before this call is exactly that state."""
        self._sample_due = self._sampler.sample(self.engine.now)

    # -- running --------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Start every workload at time 0, run until ``end_ns``, and return the result
        (:meth:`RunMetrics.to_json` plus the extras listed in :meth:`result`)."""
        if self._ran:
            raise SimulationError("a simulation runs once; build a new one to run again")
        self._ran = True
        for w in self.workloads:
            w.start(self)
        self.engine.run(until_ns=self.end_ns)
        return self.result()

    def result(self) -> dict[str, Any]:
        """The run's record. Beyond the schema of :meth:`RunMetrics.to_json`: ``steps`` are the
        raw step counts of the run (boot excluded); ``peak_inflight_bytes`` and
        ``avg_inflight_bytes`` are the bytes workloads had mapped through bounce buffers (the
        true need, independent of the policy); ``worker_ns`` and ``worker_runs`` the deferred
        work; ``counters`` and ``series`` (nearest-rank summaries) what workloads recorded;
        ``policy_stats`` the policy's own integer figures; ``events`` the engine's event count;
        ``unmaps`` the unmaps done (``maps`` counts attempts); ``time_series`` also holds the
        sampled columns of :data:`~swiotlb.sim.sampling.SERIES`, and ``occupancy`` the occupancy
        map when asked for."""
        if self._result is not None:
            return self._result
        m = self.metrics
        counters = self.policy.counters()
        m.observe_used_slots(counters.get("io_tlb_used_hiwater", 0))
        # the bytes copied are the copy_byte steps: counted once, on the metrics, during the run
        self._steps["copy_byte"] += m.bytes_copied
        start = self._memory_at_start
        end = self._memory_sig()
        enc = self._enc_stats
        delta = Counter({k: v - self._steps_at_start.get(k, 0) for k, v in self._steps.items()})
        delta["decrypt_page"] += end[3] - start[3]
        delta["encrypt_page"] += end[4] - start[4]
        delta["conversion_call"] += end[5] - start[5]
        delta["migrate_page"] += end[6] - start[6]
        m.steps = Counter({k: v for k, v in delta.items() if v})
        stats = self.policy.stats()
        m.decrypt_ops = enc.decrypt_ops - self._enc_at_start[0]
        m.encrypt_ops = enc.encrypt_ops - self._enc_at_start[1]
        m.pools_created = sum(int(stats.get(k, 0)) for k in _CREATED)
        m.pools_freed = sum(int(stats.get(k, 0)) for k in _FREED)
        m.oom_events = self._page_stats.oom_events - self._oom_at_start
        self._sampler.finish()
        doc = m.to_json(self.scenario, self.policy_name, self.seed, self.end_ns, grid_step_ns=self.grid_step_ns,
                        series=self._sampler.columns)
        if self._sampler.bins:
            doc["occupancy"] = self._sampler.occupancy_record()
        doc["peak_inflight_bytes"] = self._inflight_peak
        doc["avg_inflight_bytes"] = round_half_even(self._inflight_byte_ns + self._inflight_bytes * self.end_ns,
                                                    self.end_ns)
        doc["unmaps"] = self.unmaps
        doc["worker_ns"] = self.worker_ns
        doc["worker_runs"] = self.worker_runs
        doc["events"] = self.engine.events
        doc["counters"] = dict(sorted(self.counters.items()))
        doc["series"] = {k: self.series[k].summary() for k in sorted(self.series)}
        doc["policy_stats"] = {k: v for k, v in sorted(stats.items()) if type(v) is int}
        self._result = doc
        return doc


_CREATED = ("pools_created", "transient_created", "chunks_claimed", "dyn_created")
_FREED = ("pools_freed", "transient_freed", "chunks_returned", "dyn_freed")

_CAUSES = {
    MapFailure.FULL: "full",
    MapFailure.TOO_LARGE: "too_large",
    MapFailure.NO_POOL: "unaddressable",
    MapFailure.INVALID_SIZES: "too_large",
}


def _cause(failure: MapFailure) -> str:
    return _CAUSES[failure]


def _slot_work_pricer(costs: CostModel, steps: IoTlbSteps) -> Callable[[], int]:
    """A function giving the slot work counted in ``steps`` so far (:data:`CORE_STEPS`), priced.

    The simulator reads it after every map and unmap; explicit arithmetic on closed-over prices
    takes about half the time of ``sum(map(mul, counts, prices))``, and the counts are the
    tally's int attributes (struct fields in the compiled build), not mapping lookups.
    """
    prices: list[int] = [getattr(costs, f"{k}_ns") for k in CORE_STEPS]
    probe, mark, fixup, lock, walk = prices

    def priced() -> int:
        return (steps.slot_probe * probe + steps.slot_mark * mark + steps.list_fixup * fixup
                + steps.lock_acquire * lock + steps.pool_walk * walk)

    return priced
