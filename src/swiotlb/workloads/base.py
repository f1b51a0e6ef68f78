"""What every workload generator shares: the simulator interface it sees, validation, draws.

The workloads of issue 4 are frozen dataclasses (hashable, comparable, readable from a scenario
file by introspecting their fields) whose ``start(sim)`` wires callbacks into the simulator's
engine. All mutable run state lives in closures created by ``start``, so one workload object can
be started in many simulations. The hot path is what the 300k ops/s target is measured on, so the
helpers here exist to keep per-I/O work down to a map call, a heap push and a few local lookups:
random draws come pre-drawn in batches (:func:`draws`), and open-loop arrival times from lazy
generators (:func:`poisson_arrivals`) fed to ``Engine.add_source``.
"""

from __future__ import annotations

import importlib
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from random import Random
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from swiotlb.dma.types import DmaDirection
from swiotlb.sim.engine import Engine
from swiotlb.sim.spec import NS_PER_S, DeviceSpec

__all__ = [
    "DIRECTIONS",
    "SizeMix",
    "SimLike",
    "SimMappingLike",
    "Windows",
    "Workload",
    "draws",
    "pending_sentinel",
    "poisson_arrivals",
]

SizeMix = tuple[tuple[int, int], ...]
"""``((size_bytes, weight), ...)``; a single size is ``((4096, 1),)``."""

DIRECTIONS: dict[str, DmaDirection] = {
    "to_device": DmaDirection.TO_DEVICE,
    "from_device": DmaDirection.FROM_DEVICE,
    "bidirectional": DmaDirection.BIDIRECTIONAL,
}
"""The direction strings of scenario files and the DMA API values they stand for."""

DRAW_BATCH = 1024
"""Values drawn per refill of a :func:`draws` stream: big enough to amortise ``choices``."""


class SimMappingLike(Protocol):
    """The fields of ``swiotlb.sim.simulation.SimMapping`` a workload reads."""

    @property
    def size(self) -> int: ...

    @property
    def ready_ns(self) -> int: ...


class SimLike(Protocol):
    """The part of ``swiotlb.sim.simulation.Simulation`` a workload may use (the issue-4 contract).

    A protocol rather than the class itself so that workloads can be unit-tested against a small
    fake simulator and type-checked without importing the simulator's internals.
    """

    engine: Engine
    end_ns: int
    cpus: int

    @property
    def now(self) -> int: ...

    @property
    def pages(self) -> Any: ...

    def rng(self, name: str) -> Random: ...

    def device(self, name: str) -> DeviceSpec: ...

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
        then: Callable[[Any], object] | None = None,
    ) -> Any: ...

    def unmap(self, m: Any, *, cpu: int | None = None) -> None: ...

    def observe(self, key: str, value: int) -> None: ...

    def count(self, key: str, n: int = 1) -> None: ...


@runtime_checkable
class Workload(Protocol):
    """A workload: a named, immutable description that schedules its work when started.

    ``kind`` is the scenario file's ``kind =`` value and the key in ``WORKLOADS``; ``start`` is
    called once, at time 0 of the run, by ``Simulation.add``/``run``.
    """

    kind: ClassVar[str]

    @property
    def name(self) -> str: ...

    def start(self, sim: SimLike) -> None: ...


_LOCAL_PENDING = object()


def pending_sentinel() -> object:
    """The simulator's ``PENDING`` (what ``map(..., then=...)`` returns for a deferred map).

    Resolved when a workload starts, not at import, so the workloads load without the simulator
    module; a stand-in object is returned when it is absent (the unit tests' fake uses this one).
    """
    try:
        simulation = importlib.import_module("swiotlb.sim.simulation")
    except ImportError:
        return _LOCAL_PENDING
    return getattr(simulation, "PENDING", _LOCAL_PENDING)


# -- validation ------------------------------------------------------------------------------
class Checker:
    """Builds the ``kind 'name': field must be ..., got ...`` ValueErrors of one workload."""

    __slots__ = ("who",)

    def __init__(self, kind: str, name: object) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{kind}: name must be a non-empty string, got {name!r}")
        self.who = f"{kind} {name!r}"

    def fail(self, field: str, need: str, got: object) -> ValueError:
        return ValueError(f"{self.who}: {field} must be {need}, got {got!r}")

    def int_(self, field: str, value: object, lo: int = 0) -> int:
        """``value`` as an int >= ``lo`` (bools rejected)."""
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(field, "an integer", value)
        if value < lo:
            raise self.fail(field, f">= {lo}", value)
        return int(value)

    def opt_int(self, field: str, value: object, lo: int = 0) -> int | None:
        return None if value is None else self.int_(field, value, lo)

    def float_(self, field: str, value: object, lo: float = 0.0, hi: float = math.inf) -> float:
        """``value`` as a finite float in ``[lo, hi]``; ints are accepted."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(field, "a number", value)
        v = float(value)
        if not lo <= v <= hi or math.isnan(v) or math.isinf(v):
            bounds = f">= {lo:g}" if hi == math.inf else f"in [{lo:g}, {hi:g}]"
            raise self.fail(field, f"a finite number {bounds}", value)
        return v

    def bool_(self, field: str, value: object) -> bool:
        if not isinstance(value, bool):
            raise self.fail(field, "true or false", value)
        return value

    def str_(self, field: str, value: object) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(field, "a non-empty string", value)
        return value

    def choice(self, field: str, value: object, options: Sequence[str]) -> str:
        if isinstance(value, DmaDirection) and value.name.lower() in options:
            return value.name.lower()
        if not isinstance(value, str) or value not in options:
            raise self.fail(field, "one of " + ", ".join(repr(o) for o in options), value)
        return value

    def size_mix(self, field: str, value: object) -> SizeMix:
        """A size mix as a tuple of ``(size, weight)`` int tuples; a bare int is one size."""
        if isinstance(value, int) and not isinstance(value, bool):
            value = ((value, 1),)
        if not isinstance(value, (tuple, list)) or not value:
            raise self.fail(field, "a non-empty list of (size_bytes, weight) pairs", value)
        out = []
        for item in value:
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise self.fail(field, "a list of (size_bytes, weight) pairs", value)
            size, weight = item
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise self.fail(field, "sizes that are integers >= 1", value)
            if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
                raise self.fail(field, "weights that are integers >= 0", value)
            out.append((int(size), int(weight)))
        if sum(w for _, w in out) <= 0:
            raise self.fail(field, "weights that sum to more than 0", value)
        return tuple(out)

    def window(self, on: str, enabled: bool, burst_ns: int, period_ns: int) -> None:
        """Burst windows: ``burst_ns`` > 0 when enabled, and at most ``period_ns`` (0: one burst)."""
        if enabled and burst_ns <= 0:
            raise self.fail("burst_ns", f"> 0 when {on} is set", burst_ns)
        if period_ns and burst_ns > period_ns:
            raise self.fail("burst_ns", f"<= period_ns ({period_ns})", burst_ns)

    def span(self, start_ns: int, stop_ns: int | None) -> None:
        """``start_ns`` an int >= 0, ``stop_ns`` None or an int after it: every generator's window."""
        self.int_("start_ns", start_ns)
        self.opt_int("stop_ns", stop_ns)
        if stop_ns is not None and stop_ns <= start_ns:
            raise self.fail("stop_ns", f"> start_ns ({start_ns})", stop_ns)

    def cpu(self, value: int, sim: SimLike) -> None:
        if value >= sim.cpus:
            raise self.fail("cpu", f"< the machine's {sim.cpus} CPUs", value)


def stop_of(stop_ns: int | None, sim: SimLike) -> int:
    """The effective stop time: ``stop_ns`` or the end of the run, whichever is first."""
    return sim.end_ns if stop_ns is None else min(stop_ns, sim.end_ns)


# -- random draws ----------------------------------------------------------------------------
T = TypeVar("T")


def draws(rng: Random, population: Sequence[T], weights: Sequence[float] | None = None) -> Iterator[T]:
    """An endless stream of weighted picks from ``population``, for ``next()`` in hot paths.

    Values are drawn ``DRAW_BATCH`` at a time with ``Random.choices`` on cumulative weights; a
    population of one value draws nothing at all (``itertools.repeat``-like), so a fixed size or
    direction costs no randomness and leaves the stream untouched.
    """
    live = [(v, w) for v, w in zip(population, weights or [1.0] * len(population)) if w > 0]
    if len(live) == 1:
        return itertools.repeat(live[0][0])
    values = [v for v, _ in live]
    cum: list[float] = []
    total = 0.0
    for _, w in live:
        total += w
        cum.append(total)
    choices = rng.choices

    def batch() -> list[T]:
        return choices(values, cum_weights=cum, k=DRAW_BATCH)

    # all C after the first call: a batch list at a time, flattened without a Python frame per value
    return itertools.chain.from_iterable(iter(batch, None))


def size_draws(rng: Random, mix: SizeMix, dev: DeviceSpec, jitter: Random) -> Iterator[tuple[int, int]]:
    """``(size, service time)`` pairs drawn from ``mix``: ``service_ns(size)`` is precomputed,
    and a device with ``latency_jitter_ns`` adds its spread from the ``jitter`` stream (which
    a device without it leaves untouched)."""
    pairs = draws(rng, [(s, dev.service_ns(s)) for s, _ in mix], [float(w) for _, w in mix])
    spread = dev.latency_jitter_ns
    if not spread:
        return pairs
    randint = jitter.randint
    return ((size, svc + randint(0, spread)) for size, svc in pairs)


def cpu_draws(rng: Random, cpus: int) -> Iterator[int]:
    """Uniformly random CPUs (open-loop arrivals land wherever the interrupt or caller runs)."""
    return draws(rng, range(cpus))


def direction_of(name: str) -> DmaDirection:
    return DIRECTIONS[name]


# -- time ------------------------------------------------------------------------------------
class Windows:
    """Burst windows: the first ``burst_ns`` of every ``period_ns`` from ``at_ns`` (0: one burst).

    Used by fio (``burst_iodepth``) and poisson (``burst_rate_per_s``) for the on/off load of
    S12 (bursts of 10 s every 10 min) and S14.
    """

    __slots__ = ("at_ns", "burst_ns", "period_ns")

    def __init__(self, at_ns: int, burst_ns: int, period_ns: int) -> None:
        self.at_ns, self.burst_ns, self.period_ns = at_ns, burst_ns, period_ns

    def state(self, t: int) -> tuple[bool, int | None]:
        """Whether ``t`` is inside a burst, and when that changes next (None: never)."""
        at, burst, period = self.at_ns, self.burst_ns, self.period_ns
        if t < at:
            return False, at
        if period <= 0:
            return (True, at + burst) if t < at + burst else (False, None)
        base = t - (t - at) % period
        if t < base + burst:
            return True, base + burst
        return False, base + period

    def boundaries(self, start: int, stop: int) -> Iterator[tuple[int, bool]]:
        """``(time, in_burst)`` at ``start`` and at every change after it, before ``stop``."""
        t: int | None = start
        while t is not None and t < stop:
            inside, nxt = self.state(t)
            yield t, inside
            t = nxt


Arrivals = Iterator[tuple[int, Callable[[], object]]]
"""What ``Engine.add_source`` reads: ``(time_ns, callback)`` in non-decreasing time."""


def poisson_arrivals(
    rng: Random, fn: Callable[[], object], rate_per_s: float, start_ns: int, stop_ns: int,
    windows: Windows | None = None, burst_rate_per_s: float = 0.0,
) -> Arrivals:
    """``(t, fn)`` at the arrivals of a Poisson process in ``[start_ns, stop_ns)`` (int ns).

    One callback for every arrival: whatever varies per arrival is drawn by ``fn`` itself.

    With ``windows`` the rate is ``burst_rate_per_s`` inside bursts and ``rate_per_s`` outside:
    a piecewise-constant rate, sampled exactly by restarting the exponential gap at each rate
    change (memorylessness); a zero rate skips to the next change (on/off arrivals).
    """
    rand, log = rng.random, math.log  # expovariate's formula, inlined: a call less per arrival
    t = float(start_ns)
    stop = float(stop_ns)
    if windows is None:
        if rate_per_s <= 0:
            return
        gap = NS_PER_S / rate_per_s  # mean gap, ns
        while True:
            t -= log(1.0 - rand()) * gap
            if t >= stop:
                return
            yield int(t), fn
    while t < stop:
        inside, change = windows.state(int(t))
        edge = stop if change is None else min(float(change), stop)
        rate = burst_rate_per_s if inside else rate_per_s
        if rate <= 0:
            t = edge
            continue
        gap = NS_PER_S / rate
        while True:
            nt = t - log(1.0 - rand()) * gap
            if nt >= edge:
                t = edge
                break
            t = nt
            yield int(t), fn

