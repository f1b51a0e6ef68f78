"""A recorded trace as a simulator workload: the kernel's maps and unmaps at their own times.

This is how a real capture compares the designs: every policy sees the same allocations
(at the ``swiotlb_bounced`` time, on the recorded CPU, of the recorded buffer) and the same
releases (at the unmap time). What the trace cannot say is chosen here and documented:

* a map the kernel refused (``dma_addr=ffffffffffffffff``) and an orphan entry of a failed
  ``dma_map_sg`` are real demand; a design that serves them releases them at once, because
  the driver retried and the retry is a later map of the trace;
* maps no unmap closes (the capture ended) stay mapped to the end of the run.
"""

from __future__ import annotations

import heapq
from functools import partial
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from swiotlb.dma.types import DmaDirection
from swiotlb.sim.spec import DeviceSpec, MachineSpec
from swiotlb.traces.canonical import CanonicalTrace
from swiotlb.traces.fidelity import PCI_SEG_BOUNDARY
from swiotlb.traces.meta import CaptureMeta

_DIRECTIONS = {d.name: d for d in DmaDirection}
TAIL_NS = 1_000_000  # the run continues this long after the last event


@dataclass(frozen=True)
class TraceRun:
    """The machine, devices and length of a simulation that replays ``trace``."""

    machine: MachineSpec
    devices: tuple[DeviceSpec, ...]
    duration_ns: int
    start_ns: int


def trace_machine(
    trace: CanonicalTrace, meta: CaptureMeta | None, masks: dict[str, int], *, cmdline: str | None = None,
    profile: str = "v6.12",
) -> TraceRun:
    """A machine like the captured one: its RAM, CPUs and command line (``swiotlb=`` included)."""
    cols = trace.columns
    n = len(trace)
    cpus = max(cols["cpu"], default=0) + 1
    if n:
        cpus = max(cpus, max(cols["unmap_cpu"]) + 1)
    ram = 0
    line = cmdline if cmdline is not None else "swiotlb=force"
    if meta is not None:
        cpus = max(cpus, meta.cpus or 1)
        ram = meta.ram_bytes or 0
        if cmdline is None and meta.cmdline:
            line = meta.cmdline
    top = max((cols["phys_addr"][i] + cols["size"][i] for i in range(n)), default=0)
    ram = max(ram, 1 << max(top - 1, 1 << 24).bit_length())
    times = [t for t in cols["alloc_ns"]] + [t for t in cols["unmap_ns"] if t >= 0]
    start = min(times, default=0)
    duration = max(times, default=0) - start + TAIL_NS
    devices = tuple(
        DeviceSpec(name, dma_bits=64, min_align_mask=masks.get(name, 0), seg_boundary_mask=PCI_SEG_BOUNDARY)
        for name in trace.devices
    )
    return TraceRun(MachineSpec(ram=ram, cpus=cpus, profile=profile, cmdline=line), devices, duration, start)


class TraceWorkload:
    """Feeds a canonical trace's allocations and releases into a simulation, lazily."""

    def __init__(self, trace: CanonicalTrace, start_ns: int, name: str = "trace") -> None:
        self.trace = trace
        self.start_ns = start_ns
        self.name = name

    def start(self, sim: Any) -> None:
        sim.engine.add_source(self._events(sim), self.name)

    def _events(self, sim: Any) -> Iterator[tuple[int, Callable[[], None]]]:
        t = self.trace
        cols = t.columns
        names = t.names
        kinds = names["kind"]
        orphan = kinds.index("orphan") if "orphan" in kinds else -1
        t0 = self.start_ns
        live: dict[int, Any] = {}
        frees: list[tuple[int, int, int, int]] = []  # (time, line, entry, row)
        cpus = sim.cpus

        def do_map(row: int) -> None:
            dev = names["device"][cols["device"][row]]
            direction = _DIRECTIONS.get(names["dir"][cols["dir"][row]], DmaDirection.BIDIRECTIONAL)
            if direction is DmaDirection.NONE:
                direction = DmaDirection.BIDIRECTIONAL
            m = sim.map(dev, cols["size"][row], direction, cpu=cols["cpu"][row] % cpus, phys=cols["phys_addr"][row])
            if m is None:
                return
            if cols["failed"][row] or cols["kind"][row] == orphan:
                sim.unmap(m)  # served here although the kernel refused it: the retry is later
            elif cols["unmap_line"][row] >= 0:
                live[row] = m

        def do_unmap(row: int) -> None:
            m = live.pop(row, None)
            if m is not None:
                sim.unmap(m, cpu=cols["unmap_cpu"][row] % cpus)

        for row in range(len(t)):
            when = cols["alloc_ns"][row] - t0
            at = (when, cols["alloc_line"][row])
            while frees and frees[0][:2] < at:  # file order among events of the same time
                f = heapq.heappop(frees)
                yield f[0], partial(do_unmap, f[3])
            yield when, partial(do_map, row)
            if cols["unmap_line"][row] >= 0 and not cols["failed"][row]:
                heapq.heappush(frees, (cols["unmap_ns"][row] - t0, cols["unmap_line"][row], cols["entry"][row], row))
        while frees:
            f = heapq.heappop(frees)
            yield f[0], partial(do_unmap, f[3])


def simulate_trace(
    trace: CanonicalTrace,
    policy: str,
    *,
    meta: CaptureMeta | None = None,
    masks: dict[str, int] | None = None,
    cmdline: str | None = None,
    policy_options: dict[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the trace under ``policy``: the simulator's result record (docs/simulator.md)."""
    from swiotlb.sim.simulation import Simulation

    run = trace_machine(trace, meta, masks or {}, cmdline=cmdline)
    sim = Simulation(
        run.machine, run.devices, policy=policy, policy_options=policy_options, seed=seed,
        duration_ns=run.duration_ns, scenario=f"trace:{trace.source}",
    )
    sim.add(TraceWorkload(trace, run.start_ns))
    return sim.run()
