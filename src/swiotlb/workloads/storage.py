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
from dataclasses import dataclass
from typing import Any, ClassVar

from swiotlb.dma.types import DmaDirection
from swiotlb.workloads.base import Checker, SimLike, SizeMix, draws
from swiotlb.workloads.fio_lanes import start_lanes

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
        start_lanes(self, sim)  # in its own module, which the mypyc build compiles

