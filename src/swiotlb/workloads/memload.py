"""Background memory load: the rest of the system competing for the pages a pool grows into.

No DMA: a :class:`~swiotlb.memory.load.BackgroundLoad` on the machine's page allocator, stepped
on a fixed period, so that dynamic pools meet fragmented memory (S4's 8-34 MiB contiguous buffers,
S12's growth) and footprint scenarios see what memory a pool returns to (S6).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar

from swiotlb.memory.load import BackgroundLoad
from swiotlb.workloads.base import Checker, SimLike


def ramp_target(points: tuple[tuple[int, int], ...]) -> Callable[[int], int]:
    """Bytes at time ``t`` on the piecewise-linear ``(t_ns, bytes)`` curve, flat beyond its ends.

    Equal times give a step; integer arithmetic, so the target never depends on float rounding.
    """
    ts = [t for t, _ in points]
    bs = [b for _, b in points]

    def target(now: int) -> int:
        i = bisect.bisect_right(ts, now)
        if i == 0:
            return bs[0]
        if i == len(ts):
            return bs[-1]
        t0, t1, b0, b1 = ts[i - 1], ts[i], bs[i - 1], bs[i]
        return b0 + (b1 - b0) * (now - t0) // (t1 - t0)

    return target


@dataclass(frozen=True)
class Background:
    """Page cache, anonymous and kernel memory held next to the DMA path (S6, S4, S12).

    Holds ``target_bytes``, or follows ``ramp`` (``(t_ns, bytes)`` points, linear in between,
    flat outside) when given; stepped every ``step_ns`` from time 0, at most
    ``max_bytes_per_step`` of change per step. ``movable_fraction`` and ``order_mix``
    (``(order, weight)``) are those of :class:`~swiotlb.memory.load.BackgroundLoad`. The load's
    pages belong to owner ``background/{name}``; each step observes ``{name}/resident_bytes``.
    """

    kind: ClassVar[str] = "background"

    name: str
    target_bytes: int = 0
    ramp: tuple[tuple[int, int], ...] = ()
    step_ns: int = 100_000_000
    movable_fraction: float = 0.9
    order_mix: tuple[tuple[int, float], ...] = ((0, 1.0),)
    max_bytes_per_step: int | None = None

    def __post_init__(self) -> None:
        c = Checker(self.kind, self.name)
        c.int_("target_bytes", self.target_bytes)
        if not isinstance(self.ramp, (tuple, list)):
            raise c.fail("ramp", "a list of (t_ns, bytes) points", self.ramp)
        ramp = []
        for point in self.ramp:
            if not isinstance(point, (tuple, list)) or len(point) != 2:
                raise c.fail("ramp", "a list of (t_ns, bytes) points", self.ramp)
            ramp.append((c.int_("ramp time", point[0]), c.int_("ramp bytes", point[1])))
        if any(a[0] > b[0] for a, b in zip(ramp, ramp[1:])):
            raise c.fail("ramp", "points in non-decreasing time", self.ramp)
        object.__setattr__(self, "ramp", tuple(ramp))
        c.int_("step_ns", self.step_ns, 1)
        object.__setattr__(self, "movable_fraction", c.float_("movable_fraction", self.movable_fraction, 0.0, 1.0))
        if not isinstance(self.order_mix, (tuple, list)) or not self.order_mix:
            raise c.fail("order_mix", "a non-empty list of (order, weight) pairs", self.order_mix)
        mix = []
        for item in self.order_mix:
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise c.fail("order_mix", "a list of (order, weight) pairs", self.order_mix)
            mix.append((c.int_("order_mix order", item[0]), c.float_("order_mix weight", item[1])))
        orders = [o for o, _ in mix]
        if len(set(orders)) != len(orders):
            raise c.fail("order_mix", "distinct orders", self.order_mix)
        if sum(w for _, w in mix) <= 0:
            raise c.fail("order_mix", "weights that sum to more than 0", self.order_mix)
        object.__setattr__(self, "order_mix", tuple(mix))
        c.opt_int("max_bytes_per_step", self.max_bytes_per_step, 1)

    def start(self, sim: SimLike) -> None:
        c = Checker(self.kind, self.name)
        pages = sim.pages
        for order, _ in self.order_mix:
            if order > pages.max_order:
                raise c.fail("order_mix", f"orders <= the allocator's max order {pages.max_order}", self.order_mix)
        target = ramp_target(self.ramp) if self.ramp else None
        load = BackgroundLoad(
            pages,
            sim.rng(self.name),
            movable_fraction=self.movable_fraction,
            order_mix=dict(self.order_mix),
            owner=f"background/{self.name}",
            max_bytes_per_step=self.max_bytes_per_step,
            target_bytes=None if target else self.target_bytes,
            target=target,
        )
        engine, observe, key = sim.engine, sim.observe, f"{self.name}/resident_bytes"

        def step() -> None:
            observe(key, load.step(engine.now))

        def times() -> Iterator[tuple[int, Callable[[], None]]]:
            t, step_ns, end = 0, self.step_ns, sim.end_ns
            while t < end:
                yield t, step
                t += step_ns

        engine.add_source(times(), self.name)
