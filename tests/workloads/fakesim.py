"""A small stand-in for ``swiotlb.sim.simulation.Simulation``: the contract's API, no policies.

It runs the real :class:`~swiotlb.sim.engine.Engine` and :class:`~swiotlb.sim.rng.RngStreams`, so
workloads meet the same scheduling and randomness as in a real run, but ``map`` succeeds or fails
by a rule the test sets (a byte capacity, or any function), and every call is logged, so tests can
check exactly what a generator asked for and when.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from swiotlb.dma.types import DmaDirection
from swiotlb.memory import PageAllocator
from swiotlb.sim.engine import Engine
from swiotlb.sim.rng import RngStreams
from swiotlb.sim.spec import NS_PER_S, DeviceSpec
from swiotlb.workloads.base import pending_sentinel

PENDING = pending_sentinel()

Rule = Callable[["FakeSim", str, int, DmaDirection, bool], "bool | str"]
"""``rule(sim, device, size, direction, may_sleep)``: True (map), False (fail) or "defer"."""


@dataclass(eq=False)
class FakeMapping:
    device: str
    size: int
    direction: DmaDirection
    dma_addr: int
    bounced: bool
    ready_ns: int
    cpu: int
    mapped_ns: int
    unmapped_ns: int | None = None


class FakeSim:
    """The contract's ``Simulation`` surface; ``calls`` logs ``("map"|"unmap"|"fail"|"defer", ...)``."""

    def __init__(
        self,
        devices: Iterable[DeviceSpec] = (DeviceSpec("d0", latency_ns=10_000),),
        *,
        seed: int = 1,
        end_ns: int = NS_PER_S,
        cpus: int = 4,
        capacity: int | None = None,
        rule: Rule | None = None,
        map_ns: int = 0,
        defer_ns: int = 50_000,
        pages: PageAllocator | None = None,
    ) -> None:
        self.engine = Engine()
        self.end_ns = end_ns
        self.cpus = cpus
        self.streams = RngStreams(seed)
        self.devices = {d.name: d for d in devices}
        self.capacity = capacity
        self.rule = rule
        self.map_ns = map_ns
        self.defer_ns = defer_ns
        self._pages = pages
        self.calls: list[tuple[Any, ...]] = []
        self.maps: list[FakeMapping] = []
        self.live: dict[int, FakeMapping] = {}
        self.live_bytes = 0
        self.peak_live = 0
        self.counters: Counter[str] = Counter()
        self.samples: defaultdict[str, list[int]] = defaultdict(list)
        self.workloads: list[Any] = []
        self._next_addr = 1 << 32

    # -- the contract's API ----------------------------------------------------------------
    @property
    def now(self) -> int:
        return self.engine.now

    @property
    def pages(self) -> PageAllocator:
        assert self._pages is not None, "this FakeSim was built without pages="
        return self._pages

    def rng(self, name: str) -> Any:
        return self.streams.substream(name)

    def device(self, name: str) -> DeviceSpec:
        try:
            return self.devices[name]
        except KeyError:
            raise KeyError(f"no device {name!r}; known: {', '.join(sorted(self.devices))}") from None

    def _allowed(self, device: str, size: int, direction: DmaDirection, may_sleep: bool) -> bool | str:
        if self.rule is not None:
            return self.rule(self, device, size, direction, may_sleep)
        return self.capacity is None or self.live_bytes + size <= self.capacity

    def _make(self, device: str, size: int, direction: DmaDirection, cpu: int) -> FakeMapping:
        m = FakeMapping(device, size, direction, self._next_addr, True, self.now + self.map_ns, cpu, self.now)
        self._next_addr += 1 << 20
        self.maps.append(m)
        self.live[id(m)] = m
        self.live_bytes += size
        self.peak_live = max(self.peak_live, len(self.live))
        self.calls.append(("map", self.now, device, size, direction.name, cpu, m.dma_addr))
        return m

    def map(
        self, device: str, size: int, direction: DmaDirection, *, cpu: int = 0, may_sleep: bool = False,
        offset: int = 0, phys: int | None = None, attrs: int = 0, then: Callable[[Any], object] | None = None,
    ) -> Any:
        self.device(device)
        assert isinstance(direction, DmaDirection) and 0 <= cpu < self.cpus and size > 0
        verdict = self._allowed(device, size, direction, may_sleep)
        if verdict == "defer" and then is not None:
            self.calls.append(("defer", self.now, device, size, direction.name, cpu))

            def later() -> None:
                ok = self.capacity is None or self.live_bytes + size <= self.capacity
                then(self._make(device, size, direction, cpu) if ok else None)

            self.engine.after(self.defer_ns, later)
            return PENDING
        if verdict is True:
            return self._make(device, size, direction, cpu)
        self.calls.append(("fail", self.now, device, size, direction.name, cpu))
        self.counters["map_failed"] += 1
        return None

    def unmap(self, m: FakeMapping, *, cpu: int | None = None) -> None:
        if id(m) not in self.live:
            raise RuntimeError(f"double unmap of {m.dma_addr:#x}")
        assert self.now >= m.ready_ns, "unmapped before the map was ready"
        del self.live[id(m)]
        self.live_bytes -= m.size
        m.unmapped_ns = self.now
        self.calls.append(("unmap", self.now, m.device, m.size, m.direction.name, m.dma_addr))

    def observe(self, key: str, value: int) -> None:
        assert value >= 0
        self.samples[key].append(value)

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] += n

    # -- driving ---------------------------------------------------------------------------
    def add(self, workload: Any) -> FakeSim:
        self.workloads.append(workload)
        return self

    def run(self) -> FakeSim:
        for w in self.workloads:
            w.start(self)
        self.engine.run(until_ns=self.end_ns)
        return self

    # -- test helpers ----------------------------------------------------------------------
    def every(self, period_ns: int, fn: Callable[[], object], start_ns: int = 0) -> None:
        """Call ``fn`` every ``period_ns`` from ``start_ns`` (a probe; schedule it before run)."""
        self.engine.add_source(((t, fn) for t in range(start_ns, self.end_ns, period_ns)), "probe")

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == kind]
