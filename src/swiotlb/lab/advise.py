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
from typing import Any, Callable, Sequence

from swiotlb.core import DeviceParams, IoTlbMem, IoTlbPool, MapFailure, SlotMapping
from swiotlb.core.constants import IO_TLB_SEGSIZE, IO_TLB_SHIFT, SLOT_LOW_MASK
from swiotlb.core.sizing import parse_cmdline
from swiotlb.traces.canonical import CanonicalTrace
from swiotlb.traces.fidelity import PCI_SEG_BOUNDARY, bounced_rows, infer_min_align_masks
from swiotlb.traces.meta import CaptureMeta
from swiotlb.traces.workload import simulate_trace

DYNAMIC_POLICIES = ("linux-6.6", "adaptive", "lending", "rfc-v1")
DEFAULT_MARGIN = 0.25
MIB = 1 << 20
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
    trials: list[tuple[int, int]] = field(default_factory=list)  # (slots, failures) tried

    @property
    def recommendation(self) -> str:
        mib = self.recommended_slots << IO_TLB_SHIFT
        text = (
            f"Boot with {self.swiotlb} ({mib / MIB:.1f} MiB). The smallest static pool that served "
            f"this {self.kind} without a failure holds {self.min_slots} slots "
            f"({(self.min_slots << IO_TLB_SHIFT) / MIB:.1f} MiB)"
            + (f" in every one of {len(self.seeds)} seeds" if self.seeds else "")
            + f"; the line adds a {self.margin:.0%} margin. {self.driver} drives the need: it held "
            f"{self.driver_slots} of the {self.peak_inflight_slots} slots in flight at the peak."
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
            "trials": [{"slots": s, "failures": f} for s, f in self.trials],
            "recommendation": self.recommendation,
        }


def _unit(nareas: int) -> int:
    """Pool sizes come in whole segments per area (the kernel's area rounding, spec §6)."""
    return IO_TLB_SEGSIZE * nareas


def smallest_passing(lo: int, unit: int, failures: Callable[[int], int], trials: list[tuple[int, int]]) -> int:
    """The smallest multiple of ``unit`` >= ``lo`` with ``failures(n) == 0`` (doubling, then
    bisection; failures are taken as non-increasing in the pool size)."""
    n = max(unit, -(-lo // unit) * unit)
    bad = 0
    while True:
        f = failures(n)
        trials.append((n, f))
        if f == 0:
            break
        bad = n
        n *= 2
        if n > 1 << 24:  # 32 GiB of slots: nothing this workload does fits
            raise ValueError("no static pool up to 32 GiB serves this workload without failures")
    good = n
    while good - bad > unit:
        mid = (bad + good) // 2 // unit * unit
        if mid <= bad:
            break
        f = failures(mid)
        trials.append((mid, f))
        if f == 0:
            good = mid
        else:
            bad = mid
    return good


def swiotlb_arg(slots: int, force: bool, nareas: int) -> str:
    """``swiotlb=<slots>[,<areas>][,force]`` as the kernel parses it (checked by our parser)."""
    text = f"swiotlb={slots}" + (f",{nareas}" if nareas > 1 else "") + (",force" if force else "")
    param = parse_cmdline(text)
    assert param is not None and param.nslabs == slots, text
    return text


# -- traces ----------------------------------------------------------------------------------
def _trace_failures(
    trace: CanonicalTrace, devs: list[DeviceParams], nslabs: int, nareas: int, start: int, bounced: list[bool]
) -> int:
    """Failures of a straight replay of every allocation on a pool of ``nslabs`` slots."""
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
    return fails


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
        off = c["phys_addr"][row] & masks.get(names[dev], 0) & SLOT_LOW_MASK
        n = (c["size"][row] + off + SLOT_LOW_MASK) >> IO_TLB_SHIFT
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
    nareas = pool.nareas if pool is not None else 1
    start = pool.start if pool is not None else 1 << 30
    through = bounced_rows(trace, pool)
    peak, at_peak, own = _trace_peaks(trace, full, through)
    trials: list[tuple[int, int]] = []

    def failures(n: int) -> int:
        if progress is not None:
            progress(f"static pool of {n} slots")
        return _trace_failures(trace, devs, n, nareas, start, through)

    unit = _unit(nareas)
    min_slots = smallest_passing(peak, unit, failures, trials)
    recommended = -(-int(min_slots * (1 + margin)) // unit) * unit
    force = meta.force if meta is not None else True
    driver = max(at_peak, key=lambda d: (at_peak[d], d)) if at_peak else "-"
    dynamic: dict[str, dict[str, int]] = {}
    for policy in policies:
        if progress is not None:
            progress(f"simulating {policy}")
        dynamic[policy] = _dynamic_summary(simulate_trace(trace, policy, meta=meta, masks=full))
    return Advice(
        target=trace.source, kind="trace", min_slots=min_slots, recommended_slots=recommended,
        margin=margin, nareas=nareas, swiotlb=swiotlb_arg(recommended, force, nareas), force=force,
        peak_inflight_slots=peak, driver=driver, driver_slots=at_peak.get(driver, 0),
        per_device_peak_slots=own, dynamic=dynamic, trials=trials,
    )


# -- scenarios -------------------------------------------------------------------------------
def _with_pool(cmdline: str, slots: int, nareas: int, force: bool) -> str:
    rest = _SWIOTLB_ARG.sub(" ", cmdline).strip()
    return (rest + " " + swiotlb_arg(slots, force, nareas)).strip()


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
            off = int(m.phys) & self.masks.get(device, 0) & SLOT_LOW_MASK
            return (int(m.size) + off + SLOT_LOW_MASK) >> IO_TLB_SHIFT

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

        sim.map, sim.unmap = wrapped_map, wrapped_unmap

    def add(self, device: str, n: int) -> None:
        h = self.held[device] = self.held.get(device, 0) + n
        if h > self.own.get(device, 0):
            self.own[device] = h
        self.total += n
        if self.total > self.peak:
            self.peak = self.total
            self.at_peak = dict(self.held)


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
    nareas = machine.cpus  # the kernel's default area count: one per CPU, rounded (spec §6)
    nareas = 1 << (nareas - 1).bit_length()
    masks = {d.name: d.min_align_mask for d in spec.devices}
    gauge_peak = 0
    at_peak: dict[str, int] = {}
    own: dict[str, int] = {}

    def run(slots: int | None, seed: int, policy: str = "static") -> dict[str, Any]:
        nonlocal gauge_peak, at_peak
        s = spec
        if slots is not None:
            cmd = _with_pool(machine.cmdline, slots, nareas, force)
            s = dataclasses.replace(spec, machine=dataclasses.replace(machine, cmdline=cmd))
        sim = build_simulation(s, policy, seed=seed, duration_ns=duration_ns)
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
    trials: list[tuple[int, int]] = []

    def failures(n: int) -> int:
        total = 0
        for seed in seeds:
            if progress is not None:
                progress(f"static pool of {n} slots, seed {seed}")
            failed = run(n, seed)["failures"]
            fixed = {k: v for k, v in failed.items() if k in ("too_large", "unaddressable") and v}
            if fixed:
                raise Unservable(
                    f"{spec.ref}, seed {seed}: "
                    + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sorted(fixed.items()))
                    + " maps fail whatever the pool size (too large: over 256 KiB; unaddressable: "
                    "the pool is out of the device's reach)"
                )
            total += sum(failed.values())
            if total:
                break
        return total

    unit = _unit(nareas)
    min_slots = smallest_passing(max(gauge_peak, 1), unit, failures, trials)
    recommended = -(-int(min_slots * (1 + margin)) // unit) * unit
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
        target=spec.ref, kind="scenario", min_slots=min_slots, recommended_slots=recommended,
        margin=margin, nareas=nareas, swiotlb=swiotlb_arg(recommended, force, nareas), force=force,
        peak_inflight_slots=gauge_peak, driver=driver, driver_slots=at_peak.get(driver, 0),
        per_device_peak_slots=own, seeds=list(seeds), dynamic=dynamic, trials=trials,
    )
