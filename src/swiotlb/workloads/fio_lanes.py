"""The lanes of a :class:`~swiotlb.workloads.storage.Fio` workload: its per-I/O hot path.

:meth:`Fio.start` lives here, as a module-level function, so that the optional mypyc build
(``swiotlb.native``) can compile its closures: mypyc cannot compile the dataclass itself (it
turns the ``ClassVar`` ``kind`` into a field) nor closures in methods of classes it does not
compile. The code is :meth:`Fio.start`'s, except that a real :class:`Simulation` is called
directly rather than through bound methods (see ``sim_`` below).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from swiotlb.dma.types import DmaDirection
from swiotlb.sim.simulation import Simulation
from swiotlb.workloads.base import Checker, SimLike, Windows, pending_sentinel, size_draws, stop_of

if TYPE_CHECKING:
    from swiotlb.workloads.storage import Fio

__all__ = ["start_lanes"]


def start_lanes(fio: Fio, sim: SimLike) -> None:
    """Create ``jobs x max(iodepth, burst_iodepth)`` lanes and start ``iodepth`` of each."""
    c = Checker(fio.kind, fio.name)
    if fio.cpu is not None:
        c.cpu(fio.cpu, sim)
    dev = sim.device(fio.device)
    stop = stop_of(fio.stop_ns, sim)
    if fio.start_ns >= stop:
        return
    engine = sim.engine
    at = engine.at
    end = sim.end_ns
    map_, unmap, observe, count = sim.map, sim.unmap, sim.observe, sim.count
    # The simulator itself (not a test's fake, nor a view that wraps it) is called as ``sim_.map``:
    # compiled (mypyc), that is a direct call with no parsing of its keyword arguments, where a
    # bound method is a generic call (about 3 % of a compiled run). Same calls, same order.
    sim_ = sim if type(sim) is Simulation else None
    pending = pending_sentinel()
    sizes = size_draws(sim.rng(f"{fio.name}/bs"), fio.bs, dev, sim.rng(f"{fio.name}/jitter"))
    dirs = fio._directions(sim)
    dev_name, may_sleep, offset = fio.device, fio.may_sleep, fio.offset
    requeue, think, defer = fio.requeue_ns, fio.think_ns, fio.defer
    lat_key, ios_key, requeued_key = f"{fio.name}/latency_ns", f"{fio.name}/ios", f"{fio.name}/requeued"

    bursty = fio.burst_iodepth > 0
    lanes_per_job = max(fio.iodepth, fio.burst_iodepth) if bursty else fio.iodepth
    depth = [fio.iodepth]  # the current depth per job, changed at burst boundaries
    idle: list[bool] = []  # per lane: not running an I/O (declined at its last chance)
    issues: list[Callable[[], None]] = []
    cpu_free = [0] * fio.jobs  # per job: when its CPU finishes the last map it submitted

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
            r: Any
            if sim_ is not None:
                r = sim_.map(dev_name, size, d, cpu=cpu, may_sleep=may_sleep, offset=offset, then=then)
            else:
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
            if sim_ is not None:
                sim_.unmap(m)
            else:
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

    for j in range(fio.jobs):
        cpu = fio.cpu if fio.cpu is not None else j % sim.cpus
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
        for j in range(fio.jobs):
            fill(j, j * lanes_per_job)

    if not bursty:
        at(fio.start_ns, wake)
        return
    windows = Windows(fio.burst_at_ns, fio.burst_ns, fio.period_ns)
    normal, burst = fio.iodepth, fio.burst_iodepth

    def boundary() -> None:
        depth[0] = burst if windows.state(engine.now)[0] else normal
        wake()

    engine.add_source(((t, boundary) for t, _ in windows.boundaries(fio.start_ns, stop)), f"{fio.name}/bursts")
