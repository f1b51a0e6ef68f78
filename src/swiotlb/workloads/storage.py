"""Closed-loop block I/O, as fio drives it: the storage load of S1, S5, S11, S12 and S14.

Each of ``jobs`` jobs keeps ``iodepth`` I/Os in flight: an I/O is mapped, completes after the
device's service time and is unmapped, and its slot immediately (or after ``think_ns``) submits
the next one. This is what makes bounce-buffer demand self-limiting in the block layer: a full
pool does not lose I/Os, it requeues them (``BLK_STS_RESOURCE``, retried after ``requeue_ns``),
which shows up as latency, not as errors (S14's "throttled storage").

Sequential and random patterns behave the same here: the model has no block addresses or caches,
only sizes, directions and timing; ``rw`` only chooses the read/write mix.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from swiotlb.dma.types import DmaDirection
from swiotlb.workloads.base import (
    Checker,
    SimLike,
    SizeMix,
    Windows,
    draws,
    pending_sentinel,
    size_draws,
    stop_of,
)

RW_MODES = ("read", "write", "randread", "randwrite", "rw", "randrw")


@dataclass(frozen=True)
class Fio:
    """``jobs`` fio jobs of ``iodepth`` each on ``device`` (S1 J1-J3, S5, S11, S12, S14).

    ``burst_iodepth`` > 0 switches the depth to it during the first ``burst_ns`` of every
    ``period_ns`` from ``burst_at_ns`` (``period_ns`` 0: a single burst), S12's grow-then-shrink
    load; I/Os already in flight when a burst ends complete normally. ``defer`` passes a
    callback to the map so a policy may queue it (FreeBSD-style deferral, S14 (c)); it only
    matters with ``may_sleep``. Observes ``{name}/latency_ns`` (submit to completion, requeue
    waits included) and counts ``{name}/ios`` and ``{name}/requeued``.
    """

    kind: ClassVar[str] = "fio"

    name: str
    device: str
    bs: SizeMix = ((4096, 1),)
    rw: str = "randread"
    rwmixread: int = 50
    iodepth: int = 1
    jobs: int = 1
    start_ns: int = 0
    stop_ns: int | None = None
    think_ns: int = 0
    may_sleep: bool = False
    defer: bool = False
    requeue_ns: int = 3_000_000
    offset: int = 0
    cpu: int | None = None
    burst_iodepth: int = 0
    burst_ns: int = 0
    period_ns: int = 0
    burst_at_ns: int = 0

    def __post_init__(self) -> None:
        c = Checker(self.kind, self.name)
        c.str_("device", self.device)
        object.__setattr__(self, "bs", c.size_mix("bs", self.bs))
        c.choice("rw", self.rw, RW_MODES)
        c.int_("rwmixread", self.rwmixread)
        if self.rwmixread > 100:
            raise c.fail("rwmixread", "a percentage in 0..100", self.rwmixread)
        c.int_("iodepth", self.iodepth, 1)
        c.int_("jobs", self.jobs, 1)
        c.span(self.start_ns, self.stop_ns)
        c.int_("think_ns", self.think_ns)
        c.bool_("may_sleep", self.may_sleep)
        c.bool_("defer", self.defer)
        c.int_("requeue_ns", self.requeue_ns, 1)
        c.int_("offset", self.offset)
        c.opt_int("cpu", self.cpu)
        c.int_("burst_iodepth", self.burst_iodepth)
        c.int_("burst_ns", self.burst_ns)
        c.int_("period_ns", self.period_ns)
        c.int_("burst_at_ns", self.burst_at_ns)
        c.window("burst_iodepth", self.burst_iodepth > 0, self.burst_ns, self.period_ns)

    def _directions(self, sim: SimLike) -> Any:
        mode = self.rw.removeprefix("rand")
        if mode == "read":
            return itertools.repeat(DmaDirection.FROM_DEVICE)
        if mode == "write":
            return itertools.repeat(DmaDirection.TO_DEVICE)
        return draws(
            sim.rng(f"{self.name}/rw"),
            [DmaDirection.FROM_DEVICE, DmaDirection.TO_DEVICE],
            [float(self.rwmixread), float(100 - self.rwmixread)],
        )

    def start(self, sim: SimLike) -> None:
        """Create ``jobs x max(iodepth, burst_iodepth)`` lanes and start ``iodepth`` of each."""
        c = Checker(self.kind, self.name)
        if self.cpu is not None:
            c.cpu(self.cpu, sim)
        dev = sim.device(self.device)
        stop = stop_of(self.stop_ns, sim)
        if self.start_ns >= stop:
            return
        engine = sim.engine
        at = engine.at
        end = sim.end_ns
        map_, unmap, observe, count = sim.map, sim.unmap, sim.observe, sim.count
        pending = pending_sentinel()
        sizes = size_draws(sim.rng(f"{self.name}/bs"), self.bs, dev, sim.rng(f"{self.name}/jitter"))
        dirs = self._directions(sim)
        dev_name, may_sleep, offset = self.device, self.may_sleep, self.offset
        requeue, think, defer = self.requeue_ns, self.think_ns, self.defer
        lat_key, ios_key, requeued_key = f"{self.name}/latency_ns", f"{self.name}/ios", f"{self.name}/requeued"

        bursty = self.burst_iodepth > 0
        lanes_per_job = max(self.iodepth, self.burst_iodepth) if bursty else self.iodepth
        depth = [self.iodepth]  # the current depth per job, changed at burst boundaries
        idle: list[bool] = []  # per lane: not running an I/O (declined at its last chance)
        issues: list[Callable[[], None]] = []
        cpu_free = [0] * self.jobs  # per job: when its CPU finishes the last map it submitted

        def make_lane(k: int, idx: int, cpu: int, job: int) -> Callable[[], None]:
            m: Any = None
            t0 = size = svc = 0
            d = DmaDirection.FROM_DEVICE

            def issue() -> None:
                nonlocal t0, size, svc, d
                now = engine.now
                if idx >= depth[0] or now >= stop:
                    idle[k] = True
                    return
                size, svc = next(sizes)
                d = next(dirs)
                t0 = now
                attempt()

            def attempt() -> None:
                nonlocal m
                r = map_(dev_name, size, d, cpu=cpu, may_sleep=may_sleep, offset=offset, then=then)
                if r is None:
                    count(requeued_key)
                    t = engine.now + requeue
                    if t < end:
                        at(t, attempt)
                elif r is not pending:
                    m = r
                    cpu_free[job] = r.ready_ns
                    at(r.ready_ns + svc, complete)

            def mapped(r: Any) -> None:
                """A deferred map's outcome (``then=``): as in :func:`attempt`."""
                nonlocal m
                if r is None:
                    count(requeued_key)
                    t = engine.now + requeue
                    if t < end:
                        at(t, attempt)
                else:
                    m = r
                    cpu_free[job] = max(cpu_free[job], r.ready_ns)
                    at(r.ready_ns + svc, complete)

            def complete() -> None:
                unmap(m)
                now = engine.now
                observe(lat_key, now - t0)
                count(ios_key)
                if not think:
                    issue()
                elif now + think < stop:
                    at(now + think, issue)
                else:
                    idle[k] = True

            then = mapped if defer else None
            return issue

        for j in range(self.jobs):
            cpu = self.cpu if self.cpu is not None else j % sim.cpus
            for i in range(lanes_per_job):
                idle.append(True)
                issues.append(make_lane(len(issues), i, cpu, j))

        def fill(j: int, k: int) -> None:
            """Start job ``j``'s idle lanes from lane ``k`` on, one at a time: like fio
            (``iodepth_batch_submit=1``), a job submits its next I/O once the CPU has finished
            mapping the previous one, so a queue fills over the maps' modelled CPU time."""
            last = j * lanes_per_job + min(depth[0], lanes_per_job)
            while k < last:
                lane = k
                k += 1
                if idle[lane]:
                    idle[lane] = False
                    issues[lane]()
                    if cpu_free[j] > engine.now and k < last:
                        at(cpu_free[j], lambda: fill(j, k))
                        return

        def wake() -> None:
            """Start every idle lane below the current depth (at the start and burst starts)."""
            for j in range(self.jobs):
                fill(j, j * lanes_per_job)

        if not bursty:
            at(self.start_ns, wake)
            return
        windows = Windows(self.burst_at_ns, self.burst_ns, self.period_ns)
        normal, burst = self.iodepth, self.burst_iodepth

        def boundary() -> None:
            depth[0] = burst if windows.state(engine.now)[0] else normal
            wake()

        engine.add_source(((t, boundary) for t, _ in windows.boundaries(self.start_ns, stop)), f"{self.name}/bursts")
