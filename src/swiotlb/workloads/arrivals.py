"""Open-loop arrivals: independent maps at Poisson times, released after a hold (or never).

Unlike fio, nothing here waits for the pool: a map that fails is simply lost (the simulator
counts it by cause), which is how callers that cannot retry, or do not, meet a full pool. The
``leak`` kind never unmaps at all: the slow exhaustion of S7 (rtl8192ee, 0.19 maps/s fills a
64 MiB pool in about a day) and the slow-release term that reproduces S5.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

from swiotlb.workloads.base import (
    DIRECTIONS,
    Checker,
    SimLike,
    SizeMix,
    Windows,
    cpu_draws,
    poisson_arrivals,
    size_draws,
    stop_of,
)


@dataclass(frozen=True)
class Poisson:
    """Maps at Poisson arrivals of ``rate_per_s``, each held ``hold_ns`` on average.

    The hold is exponential with mean ``hold_ns`` (None: exactly the device's service time for
    the size, i.e. the request's completion), counted from the map's ``ready_ns``. With
    ``burst_ns`` > 0 the rate is ``burst_rate_per_s`` during the first ``burst_ns`` of every
    ``period_ns`` from ``burst_at_ns`` (``period_ns`` 0: one burst): ``rate_per_s = 0`` gives
    on/off traffic. The CPU of each map is drawn uniformly (seeded).
    """

    kind: ClassVar[str] = "poisson"

    name: str
    device: str
    rate_per_s: float
    bs: SizeMix = ((4096, 1),)
    direction: str = "to_device"
    hold_ns: int | None = None
    may_sleep: bool = False
    start_ns: int = 0
    stop_ns: int | None = None
    offset: int = 0
    burst_rate_per_s: float = 0.0
    burst_ns: int = 0
    period_ns: int = 0
    burst_at_ns: int = 0

    def __post_init__(self) -> None:
        c = Checker(self.kind, self.name)
        c.str_("device", self.device)
        object.__setattr__(self, "rate_per_s", c.float_("rate_per_s", self.rate_per_s))
        object.__setattr__(self, "bs", c.size_mix("bs", self.bs))
        object.__setattr__(self, "direction", c.choice("direction", self.direction, tuple(DIRECTIONS)))
        c.opt_int("hold_ns", self.hold_ns)
        c.bool_("may_sleep", self.may_sleep)
        c.span(self.start_ns, self.stop_ns)
        c.int_("offset", self.offset)
        burst_rate = c.float_("burst_rate_per_s", self.burst_rate_per_s)
        object.__setattr__(self, "burst_rate_per_s", burst_rate)
        c.int_("burst_ns", self.burst_ns)
        c.int_("period_ns", self.period_ns)
        c.int_("burst_at_ns", self.burst_at_ns)
        c.window("burst_rate_per_s", burst_rate > 0, self.burst_ns, self.period_ns)
        if self.rate_per_s <= 0 and burst_rate <= 0:
            raise c.fail("rate_per_s", "> 0 (or burst_rate_per_s > 0 with burst_ns)", self.rate_per_s)

    def start(self, sim: SimLike) -> None:
        dev = sim.device(self.device)
        stop = stop_of(self.stop_ns, sim)
        if self.start_ns >= stop:
            return
        at, map_, unmap = sim.engine.at, sim.map, sim.unmap
        sizes = size_draws(sim.rng(f"{self.name}/bs"), self.bs, dev, sim.rng(f"{self.name}/jitter"))
        cpus = cpu_draws(sim.rng(f"{self.name}/cpu"), sim.cpus)
        dev_name, direction = self.device, DIRECTIONS[self.direction]
        may_sleep, offset = self.may_sleep, self.offset
        hold_ns = self.hold_ns
        expo = sim.rng(f"{self.name}/hold").expovariate
        inv_hold = 1.0 / hold_ns if hold_ns else 0.0

        def arrive() -> None:
            size, svc = next(sizes)
            m = map_(dev_name, size, direction, cpu=next(cpus), may_sleep=may_sleep, offset=offset)
            if m is None:
                return
            if hold_ns is None:
                hold = svc
            elif inv_hold:
                hold = int(expo(inv_hold))
            else:
                hold = 0
            at(m.ready_ns + hold, functools.partial(unmap, m))

        windows = Windows(self.burst_at_ns, self.burst_ns, self.period_ns) if self.burst_ns > 0 else None
        arrivals = poisson_arrivals(
            sim.rng(f"{self.name}/arrivals"), arrive, self.rate_per_s, self.start_ns, stop,
            windows, self.burst_rate_per_s,
        )
        sim.engine.add_source(arrivals, self.name)


@dataclass(frozen=True)
class Leak:
    """A driver that loses its mappings: Poisson maps at ``rate_per_s``, never unmapped (S7, S5).

    The default is S7's rtl8192ee RX leak, 4000-byte maps (two slots) at 0.19/s. Successful
    maps count ``{name}/leaked``; CPUs are drawn uniformly (seeded).
    """

    kind: ClassVar[str] = "leak"

    name: str
    device: str
    bs: SizeMix = ((4000, 1),)
    rate_per_s: float = 0.19
    direction: str = "from_device"
    may_sleep: bool = False
    start_ns: int = 0
    stop_ns: int | None = None

    def __post_init__(self) -> None:
        c = Checker(self.kind, self.name)
        c.str_("device", self.device)
        object.__setattr__(self, "bs", c.size_mix("bs", self.bs))
        rate = c.float_("rate_per_s", self.rate_per_s)
        if rate <= 0:
            raise c.fail("rate_per_s", "> 0", self.rate_per_s)
        object.__setattr__(self, "rate_per_s", rate)
        object.__setattr__(self, "direction", c.choice("direction", self.direction, tuple(DIRECTIONS)))
        c.bool_("may_sleep", self.may_sleep)
        c.span(self.start_ns, self.stop_ns)

    def start(self, sim: SimLike) -> None:
        dev = sim.device(self.device)
        stop = stop_of(self.stop_ns, sim)
        if self.start_ns >= stop:
            return
        map_, count = sim.map, sim.count
        sizes = size_draws(sim.rng(f"{self.name}/bs"), self.bs, dev, sim.rng(f"{self.name}/jitter"))
        cpus = cpu_draws(sim.rng(f"{self.name}/cpu"), sim.cpus)
        dev_name, direction, may_sleep = self.device, DIRECTIONS[self.direction], self.may_sleep
        key = f"{self.name}/leaked"

        def arrive() -> None:
            if map_(dev_name, next(sizes)[0], direction, cpu=next(cpus), may_sleep=may_sleep) is not None:
                count(key)

        arrivals = poisson_arrivals(sim.rng(f"{self.name}/arrivals"), arrive, self.rate_per_s, self.start_ns, stop)
        sim.engine.add_source(arrivals, self.name)
