"""Exact samples of a run's state on its time-series grid: failures and deferrals so far, pool
occupancy and fragmentation, and (on request) where in the pools the used slots lie.

The state changes only inside the simulator's calls (a map, an unmap, a worker run), so the
state in force at a grid time ``t`` is the state just before the first call later than ``t``.
The simulator compares its clock with :attr:`GridSampler.due` at the start of each call and
calls :meth:`GridSampler.sample` when the clock has passed it: one comparison per call, and no
engine events (their count is part of the result).
"""

from __future__ import annotations

from typing import Any

from swiotlb.policies.base import BouncePolicy
from swiotlb.sim.metrics import RunMetrics, round_half_even

SERIES: tuple[str, ...] = ("failed_maps", "deferred_maps", "total_slots", "transient_slots", "used_slots",
                           "free_runs", "largest_free_run")
"""The sampled columns, in :meth:`GridSampler.read` order: maps failed so far (every cause), maps
deferred so far, slots in the standing pools (``io_tlb_nslabs``) and in transient pools, slots in
use (``io_tlb_used``, transient pools included), and the free runs in the standing pools and the
longest of them (slots), all summed over the policy's allocators."""


class GridSampler:
    """Samples a policy's allocators and a run's metrics at the multiples of ``step_ns`` in
    ``[start_ns, end_ns]``.

    With ``bins`` > 0 it also records an occupancy map: the standing pools in address order,
    as one slot range cut into ``bins`` equal bins, and per bin the used slots in per mille
    (None for a bin with no slots: no pool, or fewer slots than bins).
    """

    __slots__ = ("policy", "metrics", "step_ns", "end_ns", "bins", "due", "columns", "occupancy")

    def __init__(self, policy: BouncePolicy, metrics: RunMetrics, step_ns: int, end_ns: int, *,
                 start_ns: int = 0, bins: int = 0) -> None:
        if step_ns <= 0 or bins < 0:
            raise ValueError(f"step_ns must be > 0 and bins >= 0, got {step_ns} and {bins}")
        self.policy = policy
        self.metrics = metrics
        self.step_ns = step_ns
        self.end_ns = end_ns
        self.bins = bins
        self.due = -(-start_ns // step_ns) * step_ns  # the next grid time not yet sampled
        self.columns: dict[str, list[int]] = {name: [] for name in SERIES}
        self.occupancy: list[list[int | None]] = []

    def sample(self, now: int) -> int:
        """Record the current state at every grid time before ``now`` not yet recorded, and
        return the next :attr:`due` time (past ``end_ns`` once the grid is done)."""
        due, step, end = self.due, self.step_ns, self.end_ns
        if due < now and due <= end:
            row = self.read()
            heat = self.heat_row() if self.bins else None
            columns = [self.columns[name] for name in SERIES]
            while due < now and due <= end:
                for column, value in zip(columns, row):
                    column.append(value)
                if heat is not None:
                    self.occupancy.append(heat)
                due += step
            self.due = due
        return self.due

    def finish(self) -> None:
        """Record the grid times left: the run is over, so the last state holds to the end."""
        self.sample(self.end_ns + 1)

    def read(self) -> tuple[int, ...]:
        """The current values of :data:`SERIES`."""
        m = self.metrics
        total = transient = used = runs = longest = 0
        for mem in self.policy.allocators():
            total += mem.nslabs
            transient += mem.transient_nslabs
            used += mem.total_used
            for pool in mem.pools:  # transient pools each hold one buffer: no room for others
                r, n = pool.free_run_stats()
                runs += r
                if n > longest:
                    longest = n
        return sum(m.failures.values()), m.deferred, total, transient, used, runs, longest

    def heat_row(self) -> list[int | None]:
        """Used slots per bin of the standing pools, in per mille."""
        pools = sorted((p for mem in self.policy.allocators() for p in mem.pools), key=lambda p: p.start)
        total = sum(p.nslabs for p in pools)
        bins = self.bins
        row: list[int | None] = []
        i, base = 0, 0  # the pool holding the bin's start, and its first slot's global index
        for k in range(bins):
            lo, hi = k * total // bins, (k + 1) * total // bins
            if hi == lo:
                row.append(None)
                continue
            used, at = 0, lo
            while at < hi:
                while at >= base + pools[i].nslabs:
                    base += pools[i].nslabs
                    i += 1
                pool = pools[i]
                upto = min(hi, base + pool.nslabs)
                used += pool.used_between(at - base, upto - base)
                at = upto
            row.append(round_half_even(used * 1000, hi - lo))
        return row

    def occupancy_record(self) -> dict[str, Any]:
        """The occupancy map for the result: ``{bins, used_permille}``, one row per grid time."""
        return {"bins": self.bins, "used_permille": [list(r) for r in self.occupancy]}
