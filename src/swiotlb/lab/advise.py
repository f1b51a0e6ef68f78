"""``swiotlb advise``: the smallest static pool that serves a workload, as a ``swiotlb=`` line.

For a trace the answer comes from the exact allocator: the recorded allocations and releases
are replayed (in file order, as :mod:`swiotlb.traces.fidelity` does) on pools of growing size
until none fails, so fragmentation and the area split count, not only the peak in flight.
For a scenario the static policy runs in the simulator for every seed. Either way a margin is
added, the dynamic designs are run on the same work, and the device that holds most of the
pool at the peak is named.
"""

from __future__ import annotations

import dataclasses
import heapq
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from swiotlb.core import DeviceParams, IoTlbMem, IoTlbPool, MapFailure, SlotMapping, get_profile
from swiotlb.core.constants import IO_TLB_SEGSIZE, IO_TLB_SHIFT
from swiotlb.core.sizing import parse_cmdline, plan_boot_pool
from swiotlb.traces.canonical import CanonicalTrace
from swiotlb.traces.fidelity import PCI_SEG_BOUNDARY, bounced_rows, infer_min_align_masks
from swiotlb.traces.meta import CaptureMeta
from swiotlb.traces.stats import slots_for
from swiotlb.traces.workload import simulate_trace

DYNAMIC_POLICIES = ("linux-6.6", "adaptive", "lending", "rfc-v1")
DEFAULT_MARGIN = 0.25
MIB = 1 << 20
MAX_POOL_SLOTS = 1 << 24  # 32 GiB: beyond this no static pool is a sensible answer
_SWIOTLB_ARG = re.compile(r"(^|\s)swiotlb=\S*")


class Unservable(ValueError):
    """Failures that no static pool size removes (maps over 256 KiB, unreachable devices)."""


@dataclass
class Advice:
    """The answer, with the evidence behind it."""

    target: str
    kind: str  # "trace" or "scenario"
    min_slots: int  # the smallest pool (slots) with zero failures
    recommended_slots: int
    margin: float
    nareas: int
    swiotlb: str  # the kernel command-line argument
    force: bool
    peak_inflight_slots: int
    driver: str  # the device holding the most slots at the peak
    driver_slots: int
    per_device_peak_slots: dict[str, int]
    seeds: list[int] = field(default_factory=list)
    dynamic: dict[str, dict[str, int]] = field(default_factory=dict)
    trials: list[Trial] = field(default_factory=list)  # every pool size tried, in order

    @property
    def recommendation(self) -> str:
        mib = self.recommended_slots << IO_TLB_SHIFT
        used = max((t.hiwater for t in self.trials if t.slots == self.recommended_slots), default=0)
        text = (
            f"Boot with {self.swiotlb} ({mib / MIB:.1f} MiB). The smallest static pool that served "
            f"this {self.kind} without a failure holds {self.min_slots} slots "
            f"({(self.min_slots << IO_TLB_SHIFT) / MIB:.1f} MiB)"
            + (f" in every one of {len(self.seeds)} seeds" if self.seeds else "")
            + f"; at {self.recommended_slots} slots the peak use of {used} slots leaves the "
            f"{self.margin:.0%} margin (since 6.0 the kernel rounds a pool up to a power of two). {self.driver} "
            f"drives the need: it held {self.driver_slots} of the {self.peak_inflight_slots} slots "
            "in flight at the peak."
        )
        clean = {k: v for k, v in self.dynamic.items() if not v["failures"]}
        best = min(clean.items(), key=lambda kv: (kv[1]["avg_footprint_bytes"], kv[0]), default=None)
        if best is not None:
            name, rec = best
            avg = rec["avg_footprint_bytes"]
            verdict = "less" if avg < mib else "more"
            text += (
                f" Of the dynamic designs without failures, {name} holds the least: "
                f"{avg / MIB:.1f} MiB on average (peak {rec['peak_footprint_bytes'] / MIB:.1f} MiB), "
                f"{verdict} than this static pool."
            )
        failing = sorted(k for k, v in self.dynamic.items() if v["failures"])
        if failing:
            text += " " + ", ".join(failing) + (" fails" if len(failing) == 1 else " fail") + " on it."
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "kind": self.kind,
            "min_slots": self.min_slots,
            "min_bytes": self.min_slots << IO_TLB_SHIFT,
            "recommended_slots": self.recommended_slots,
            "recommended_bytes": self.recommended_slots << IO_TLB_SHIFT,
            "margin": self.margin,
            "nareas": self.nareas,
            "swiotlb": self.swiotlb,
            "peak_inflight_slots": self.peak_inflight_slots,
            "driver": self.driver,
            "driver_slots": self.driver_slots,
            "per_device_peak_slots": dict(sorted(self.per_device_peak_slots.items())),
            "seeds": self.seeds,
            "dynamic": self.dynamic,
            "trials": [{"slots": t.slots, "failures": t.failures, "hiwater": t.hiwater} for t in self.trials],
            "recommendation": self.recommendation,
        }


@dataclass(frozen=True)
class Trial:
    """One pool size tried: the slots the kernel makes, the failures and the peak slots used."""

    slots: int
    failures: int
    hiwater: int


Evaluate = Callable[[int], tuple[int, int]]  # pool slots -> (failures, hiwater)


def search_pool(
    lo: int, kernel_pool: Callable[[int], int], evaluate: Evaluate, margin: float, pow2: bool,
    trials: list[Trial],
) -> tuple[int, int]:
    """``(smallest, recommended)``: the smallest pool the kernel makes that serves the work with
    zero failures, and the smallest that also keeps ``margin`` above its peak use.

    Only sizes the kernel really makes are tried. ``kernel_pool(n)`` is the pool that
    ``swiotlb=n`` gives. Since areas arrived (6.0) the kernel rounds the slot count up to a power
    of two (``round_up_default_nslabs``, spec §1.4), so those kernels are searched over powers of
    two (``pow2``), skipping any the kernel does not honour as given: in a CoCo guest
    ``swiotlb=32768`` equals the default and the 6% rule still applies (spec §1.3). Older
    kernels take any multiple of 128 slots: doubling, then bisection. Failures are taken as
    non-increasing with the pool size.
    """

    def run(n: int) -> Trial:
        for t in trials:
            if t.slots == n:
                return t
        f, h = evaluate(n)
        trial = Trial(n, f, h)
        trials.append(trial)
        return trial

    def honoured(n: int) -> bool:
        return kernel_pool(n) == n

    def sizes(start: int) -> Iterator[int]:
        n = max(start, IO_TLB_SEGSIZE)
        n = 1 << (n - 1).bit_length() if pow2 else -(-n // IO_TLB_SEGSIZE) * IO_TLB_SEGSIZE
        while n <= MAX_POOL_SLOTS:
            if honoured(n):
                yield n
            n = n * 2 if pow2 else n * 2
        raise Unservable("no static pool up to 32 GiB serves this workload without failures")

    bad = 0
    for n in sizes(lo):
        if run(n).failures == 0:
            good = n
            break
        bad = n
    if not pow2:  # bisection over multiples of 128 between the last failure and the first success
        while good - bad > IO_TLB_SEGSIZE:
            mid = (bad + good) // 2 // IO_TLB_SEGSIZE * IO_TLB_SEGSIZE
            if mid <= bad or not honoured(mid):
                break
            if run(mid).failures == 0:
                good = mid
            else:
                bad = mid
    smallest = good
    for n in sizes(smallest):
        t = run(n)
        if t.failures == 0 and t.hiwater * (1 + margin) <= n:
            return smallest, n
        if not pow2:  # the exact size with the margin, rounded to a segment, then checked
            want = -(-int(t.hiwater * (1 + margin)) // IO_TLB_SEGSIZE) * IO_TLB_SEGSIZE
            if honoured(want) and run(want).failures == 0:
                return smallest, want
    raise Unservable("no static pool up to 32 GiB serves this workload with the margin")


def with_pool(cmdline: str, slots: int) -> str:
    """``cmdline`` with its ``swiotlb=`` replaced by ``swiotlb=<slots>``, keeping the area count
    and ``force``/``noforce`` it gave (other parameters stay as they were)."""
    param = parse_cmdline(cmdline) if cmdline else None
    arg = f"swiotlb={slots}"
    if param is not None and param.nareas is not None:
        arg += f",{param.nareas}"
    if param is not None and param.force:
        arg += ",force"
    if param is not None and param.noforce:
        arg += ",noforce"
    rest = " ".join(_SWIOTLB_ARG.sub(" ", cmdline).split())
    return (rest + " " + arg).strip()


def swiotlb_line(cmdline: str, slots: int) -> str:
    """Just the ``swiotlb=`` argument :func:`with_pool` puts on ``cmdline``."""
    return with_pool(cmdline, slots).split()[-1]


# -- traces ----------------------------------------------------------------------------------
def _trace_failures(
    trace: CanonicalTrace, devs: list[DeviceParams], nslabs: int, nareas: int, start: int, bounced: list[bool]
) -> tuple[int, int]:
    """Failures and peak slots used in a straight replay of every allocation on one pool."""
    mem = IoTlbMem([IoTlbPool(start, nslabs, nareas)], "v6.12", force_bounce=True)
    c = trace.columns
    alloc_line, unmap_line, entry, dev_col = c["alloc_line"], c["unmap_line"], c["entry"], c["device"]
    cpu, phys, size, failed = c["cpu"], c["phys_addr"], c["size"], c["failed"]
    kinds = trace.names["kind"]
    orphan = kinds.index("orphan") if "orphan" in kinds else -1
    kind = c["kind"]
    frees: list[tuple[int, int, int, int]] = []
    release = mem.release_slots
    fails = too_large = 0
    for row in range(len(alloc_line)):
        if not bounced[row]:
            continue
        line = alloc_line[row]
        while frees and frees[0][0] < line:
            _, _, r, addr = heapq.heappop(frees)
            release(devs[dev_col[r]], addr)
        dev = devs[dev_col[row]]
        res = mem.tbl_map_single(dev, phys[row], size[row], 0, cpu=cpu[row])
        if not isinstance(res, SlotMapping):
            fails += 1
            too_large += res.cause is MapFailure.TOO_LARGE
        elif failed[row] or kind[row] == orphan or unmap_line[row] < 0:
            release(dev, res.tlb_addr)  # demand the kernel refused: its retry is a later map
        else:
            heapq.heappush(frees, (unmap_line[row], entry[row], row, res.tlb_addr))
    if too_large:
        raise Unservable(
            f"{too_large} maps need more than 128 contiguous slots (256 KiB): no static pool serves "
            "them; the driver must split them, or the device needs an IOMMU or CMA"
        )
    return fails, mem.used_hiwater


def _trace_peaks(
    trace: CanonicalTrace, masks: dict[str, int], bounced: list[bool]
) -> tuple[int, dict[str, int], dict[str, int]]:
    """Peak slots in flight, each device's share at that moment, and each device's own peak."""
    c = trace.columns
    names = trace.names["device"]
    events: list[tuple[int, int, int, int]] = []  # (line, order, device, +/- slots)
    for row in range(len(trace)):
        if not bounced[row] or c["failed"][row] or c["unmap_line"][row] < 0:
            continue
        dev = c["device"][row]
        n = slots_for(c["size"][row], c["phys_addr"][row], masks.get(names[dev], 0))
        events.append((c["alloc_line"][row], 1, dev, n))
        events.append((c["unmap_line"][row], 0, dev, -n))
    events.sort()
    held = [0] * len(names)
    own = [0] * len(names)
    total = peak = 0
    at_peak = list(held)
    for _, _, dev, n in events:
        held[dev] += n
        total += n
        if held[dev] > own[dev]:
            own[dev] = held[dev]
        if total > peak:
            peak = total
            at_peak = list(held)
    return peak, dict(zip(names, at_peak)), dict(zip(names, own))


def _dynamic_summary(record: dict[str, Any]) -> dict[str, int]:
    return {
        "avg_footprint_bytes": int(record["avg_footprint_bytes"]),
        "peak_footprint_bytes": int(record["peak_footprint_bytes"]),
        "failures": int(sum(record["failures"].values())),
        "decrypt_ops": int(record["decrypt_ops"]),
    }


def advise_trace(
    trace: CanonicalTrace,
    meta: CaptureMeta | None,
    *,
    masks: dict[str, int] | None = None,
    margin: float = DEFAULT_MARGIN,
    policies: Sequence[str] = DYNAMIC_POLICIES,
    progress: Callable[[str], None] | None = None,
) -> Advice:
    """Advice for a recorded workload (the capture's areas, or one area without metadata)."""
    pool = meta.pool if meta is not None else None
    full = infer_min_align_masks(trace, pool=pool)
    full.update(masks or {})
    devs = [DeviceParams(full.get(name, 0), PCI_SEG_BOUNDARY) for name in trace.names["device"]]
    start = pool.start if pool is not None else 1 << 30
    through = bounced_rows(trace, pool)
    peak, at_peak, own = _trace_peaks(trace, full, through)
    force = meta.force if meta is not None else True
    cmdline = meta.cmdline if meta is not None and meta.cmdline else ("swiotlb=force" if force else "")
    ram = (meta.ram_bytes if meta is not None else None) or 4 << 30
    cpus = (meta.cpus if meta is not None else None) or max(max(trace.columns["cpu"], default=0) + 1, 1)

    def plan(n: int) -> tuple[int, int]:
        """(slots, areas) of the pool the captured machine's kernel makes for ``swiotlb=n``."""
        p = plan_boot_pool(ram_bytes=ram, possible_cpus=cpus, cmdline=with_pool(cmdline, n))
        return p.nslabs, max(p.nareas, 1)

    def evaluate(n: int) -> tuple[int, int]:
        if progress is not None:
            progress(f"static pool of {n} slots")
        return _trace_failures(trace, devs, n, plan(n)[1], start, through)

    trials: list[Trial] = []
    smallest, recommended = search_pool(peak, lambda n: plan(n)[0], evaluate, margin, True, trials)
    driver = max(at_peak, key=lambda d: (at_peak[d], d)) if at_peak else "-"
    dynamic: dict[str, dict[str, int]] = {}
    for policy in policies:
        if progress is not None:
            progress(f"simulating {policy}")
        dynamic[policy] = _dynamic_summary(simulate_trace(trace, policy, meta=meta, masks=full))
    return Advice(
        target=trace.source, kind="trace", min_slots=smallest, recommended_slots=recommended,
        margin=margin, nareas=plan(recommended)[1], swiotlb=swiotlb_line(cmdline, recommended), force=force,
        peak_inflight_slots=peak, driver=driver, driver_slots=at_peak.get(driver, 0),
        per_device_peak_slots=own, dynamic=dynamic, trials=trials,
    )


# -- scenarios -------------------------------------------------------------------------------
class _DeviceGauge:
    """Wraps a simulation's map and unmap to follow slots in flight per device."""

    def __init__(self, sim: Any, masks: dict[str, int]) -> None:
        self.held: dict[str, int] = {}
        self.own: dict[str, int] = {}
        self.total = self.peak = 0
        self.at_peak: dict[str, int] = {}
        self.masks = masks
        inner_map, inner_unmap = sim.map, sim.unmap

        def slots(device: str, m: Any) -> int:
            return slots_for(int(m.size), int(m.phys), self.masks.get(device, 0))

        def wrapped_map(device: str, size: int, direction: Any, **kw: Any) -> Any:
            then = kw.get("then")
            if then is not None:
                def on_done(m: Any) -> object:
                    if m is not None and m.bounced:
                        self.add(device, slots(device, m))
                    return then(m)
                kw["then"] = on_done
            m = inner_map(device, size, direction, **kw)
            if m is not None and getattr(m, "bounced", False):
                self.add(device, slots(device, m))
            return m

        def wrapped_unmap(m: Any, **kw: Any) -> None:
            inner_unmap(m, **kw)
            if m.bounced:
                self.add(m.device, -slots(m.device, m))

        # The workloads see a view of ``sim`` with these two replaced (the simulation itself
        # is left alone: in the mypyc build its methods cannot be reassigned).
        view = _SimView(sim, wrapped_map, wrapped_unmap)
        sim.workloads[:] = [_StartOn(w, view) for w in sim.workloads]

    def add(self, device: str, n: int) -> None:
        h = self.held[device] = self.held.get(device, 0) + n
        if h > self.own.get(device, 0):
            self.own[device] = h
        self.total += n
        if self.total > self.peak:
            self.peak = self.total
            self.at_peak = dict(self.held)


class _SimView:
    """A simulation as its workloads see it, with ``map`` and ``unmap`` replaced."""

    def __init__(self, sim: Any, map_: Callable[..., Any], unmap: Callable[..., None]) -> None:
        self._sim = sim
        self.map = map_
        self.unmap = unmap

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sim, name)


class _StartOn:
    """A workload that is started on a :class:`_SimView` instead of the simulation."""

    def __init__(self, workload: Any, view: _SimView) -> None:
        self.workload = workload
        self.name = getattr(workload, "name", None)
        self._view = view

    def start(self, sim: Any) -> None:
        self.workload.start(self._view)


def advise_scenario(
    spec: Any,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    margin: float = DEFAULT_MARGIN,
    duration_ns: int | None = None,
    policies: Sequence[str] = DYNAMIC_POLICIES,
    progress: Callable[[str], None] | None = None,
) -> Advice:
    """Advice for a scenario: zero failures under ``static`` in every seed."""
    from swiotlb.lab.runner import build_simulation

    machine = spec.machine
    param = parse_cmdline(machine.cmdline) if machine.cmdline else None
    force = bool(param is not None and param.force)
    masks = {d.name: d.min_align_mask for d in spec.devices}
    gauge_peak = 0
    at_peak: dict[str, int] = {}
    own: dict[str, int] = {}

    def sized(slots: int) -> Any:
        cmd = with_pool(machine.cmdline, slots)
        return dataclasses.replace(spec, machine=dataclasses.replace(machine, cmdline=cmd))

    def kernel_pool(n: int) -> tuple[int, int]:
        """(slots, areas) of the boot pool this machine's kernel makes for ``swiotlb=n``."""
        mem = build_simulation(sized(n), "static", seed=0, duration_ns=duration_ns).policy.mem
        return mem.nslabs, (mem.pools[-1].nareas if mem.pools else 1)

    def run(slots: int | None, seed: int, policy: str = "static") -> dict[str, Any]:
        nonlocal gauge_peak, at_peak
        sim = build_simulation(spec if slots is None else sized(slots), policy, seed=seed, duration_ns=duration_ns)
        gauge = _DeviceGauge(sim, masks) if policy == "static" and slots is None else None
        record = sim.run()
        if gauge is not None:
            for dev, n in gauge.own.items():
                own[dev] = max(own.get(dev, 0), n)
            if gauge.peak > gauge_peak:
                gauge_peak, at_peak = gauge.peak, dict(gauge.at_peak)
        return record

    for seed in seeds:  # the scenario's own pool first: it gives the peak in flight per device
        if progress is not None:
            progress(f"static, seed {seed}, the scenario's own pool")
        run(None, seed)

    def evaluate(n: int) -> tuple[int, int]:
        """Failures summed over the seeds (stopping at the first that fails), the highest hiwater."""
        total = hiwater = 0
        for seed in seeds:
            if progress is not None:
                progress(f"static pool of {n} slots, seed {seed}")
            record = run(n, seed)
            failed = record["failures"]
            fixed = {k: v for k, v in failed.items() if k in ("too_large", "unaddressable") and v}
            if fixed:
                raise Unservable(
                    f"{spec.ref}, seed {seed}: "
                    + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sorted(fixed.items()))
                    + " maps fail whatever the pool size (too large: over 256 KiB; unaddressable: "
                    "the pool is out of the device's reach)"
                )
            total += sum(failed.values())
            hiwater = max(hiwater, int(record["hiwater_slots"]))
            if total:
                break
        return total, hiwater

    trials: list[Trial] = []
    pow2 = get_profile(machine.profile).areas
    smallest, recommended = search_pool(
        max(gauge_peak, 1), lambda n: kernel_pool(n)[0], evaluate, margin, pow2, trials
    )
    dynamic: dict[str, dict[str, int]] = {}
    for policy in policies:
        sums: dict[str, int] = {}
        for seed in seeds:
            if progress is not None:
                progress(f"simulating {policy}, seed {seed}")
            for k, v in _dynamic_summary(run(None, seed, policy)).items():
                sums[k] = sums.get(k, 0) + v
        dynamic[policy] = {k: v // len(seeds) if k != "failures" else v for k, v in sums.items()}
    driver = max(at_peak, key=lambda d: (at_peak[d], d)) if at_peak else "-"
    return Advice(
        target=spec.ref, kind="scenario", min_slots=smallest, recommended_slots=recommended,
        margin=margin, nareas=kernel_pool(recommended)[1], swiotlb=swiotlb_line(machine.cmdline, recommended),
        force=force, peak_inflight_slots=gauge_peak, driver=driver, driver_slots=at_peak.get(driver, 0),
        per_device_peak_slots=own, seeds=list(seeds), dynamic=dynamic, trials=trials,
    )
