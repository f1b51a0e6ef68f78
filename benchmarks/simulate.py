"""Simulator speed end to end (issue 4, §7): DMA operations per second on scenario S1, per policy.

A benchmark, not a test: run it by hand.

    python benchmarks/simulate.py                     # every policy, the full S1 (3.5 s simulated)
    python benchmarks/simulate.py -p static -p adaptive --duration 1s --repeat 3
    python benchmarks/simulate.py --json              # {"policy": ops_per_second, ...}

An operation is one map or one unmap through :class:`swiotlb.sim.simulation.Simulation`: the
workload's callback, the bounce decision, the policy's slot search or release, step pricing,
the area-lock model, the footprint gauges and the metrics. Time is wall time of ``run()`` only;
building the machine (the boot pool's slot arrays: 1 GiB = 524288 slots on S1) is reported
separately as ``setup``. Target: 300,000 operations per second for ``static`` and ``adaptive``.
Each figure is the best of ``--repeat`` runs; the machine is shared and noisy, so compare ratios
from one run, not figures from different runs.
"""

from __future__ import annotations

import argparse
import json
import time

from swiotlb.lab.runner import build_simulation
from swiotlb.policies import POLICIES
from swiotlb.workloads.scenario import find_scenario
from swiotlb.workloads.units import parse_duration

TARGET = 300_000


def measure(policy: str, duration_ns: int | None, scenario: str) -> tuple[float, float, int]:
    """``(setup seconds, run seconds, operations)`` of one run."""
    spec = find_scenario(scenario)
    t0 = time.perf_counter()
    sim = build_simulation(spec, policy, duration_ns=duration_ns)
    t1 = time.perf_counter()
    result = sim.run()
    t2 = time.perf_counter()
    ops = result["maps"] + result["unmaps"]
    return t1 - t0, t2 - t1, ops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-p", "--policy", action="append", choices=sorted(POLICIES), help="repeatable; default: all")
    ap.add_argument("--scenario", default="S1")
    ap.add_argument("--duration", default=None, help="simulated time, e.g. 1s (default: the scenario's)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    duration = parse_duration(args.duration) if args.duration else None
    out: dict[str, float] = {}
    rows = []
    for policy in args.policy or list(POLICIES):
        best = None
        for _ in range(args.repeat):
            setup, run, ops = measure(policy, duration, args.scenario)
            if best is None or run < best[1]:
                best = (setup, run, ops)
        assert best is not None
        setup, run, ops = best
        out[policy] = ops / run
        rows.append((policy, ops, setup, run, ops / run))
    if args.json:
        print(json.dumps(out, sort_keys=True))
        return
    print(f"{'policy':<10} {'ops':>9} {'setup s':>8} {'run s':>7} {'ops/s':>10}  vs target {TARGET:,}")
    for policy, ops, setup, run, rate in rows:
        print(f"{policy:<10} {ops:>9,} {setup:>8.2f} {run:>7.2f} {rate:>10,.0f}  {rate / TARGET:.2f}x")


if __name__ == "__main__":
    main()
