"""Simulator speed end to end (issue 4, §7): DMA operations per second on scenario S1, per policy.

A benchmark, not a test: run it by hand.

    python benchmarks/simulate.py                     # every policy, the full S1 (3.5 s simulated)
    python benchmarks/simulate.py -p static -p adaptive --duration 1s --repeat 3
    python benchmarks/simulate.py --json              # {"policy": ops_per_second, ...}
    python benchmarks/simulate.py -p static --baseline /tmp/old/src --repeat 5 --clock cpu

An operation is one map or one unmap through :class:`swiotlb.sim.simulation.Simulation`: the
workload's callback, the bounce decision, the policy's slot search or release, step pricing,
the area-lock model, the footprint gauges and the metrics. Time is the time of ``run()`` only;
building the machine (the boot pool's slot arrays: 1 GiB = 524288 slots on S1) is reported
separately as ``setup``. Target: 300,000 operations per second for ``static`` and ``adaptive``.
Each figure is the best of ``--repeat`` runs.

The machine is shared and noisy, so compare ratios from one run, not figures from different
runs. ``--baseline DIR`` does that: ``DIR`` is another source tree (the ``src`` directory of a
checkout of an earlier commit, holding a ``swiotlb`` package), and every run of either tree
happens in a fresh process, the two trees taking turns, so that noise falls on both alike.
``--clock cpu`` times the process's CPU time instead of wall time, which another busy process
on the machine disturbs less.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

TARGET = 300_000
HERE = Path(__file__).resolve().parent.parent / "src"
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
STATES: dict[Path, str] = {}  # tree -> whether its run was compiled (from the workers)


def measure(policy: str, duration_ns: int | None, scenario: str, clock: str = "wall") -> tuple[float, float, int]:
    """``(setup seconds, run seconds, operations)`` of one run in this process."""
    from swiotlb.lab.runner import build_simulation
    from swiotlb.workloads.scenario import find_scenario

    now = CLOCKS[clock]
    spec = find_scenario(scenario)
    t0 = now()
    sim = build_simulation(spec, policy, duration_ns=duration_ns)
    t1 = now()
    result = sim.run()
    t2 = now()
    ops = result["maps"] + result["unmaps"]
    return t1 - t0, t2 - t1, ops


def build_state() -> str:
    """``compiled: yes (mypyc, ...)`` or ``compiled: no (pure Python)`` for the imported tree."""
    try:
        from swiotlb.native import describe
    except ImportError:  # a tree from before the optional mypyc build
        return "compiled: no (pure Python)"
    return describe()


def measure_in(tree: Path, policy: str, duration: str | None, scenario: str, clock: str) -> tuple[float, float, int]:
    """:func:`measure` in a fresh process that imports ``swiotlb`` from ``tree``."""
    cmd = [sys.executable, __file__, "--worker", "-p", policy, "--scenario", scenario, "--clock", clock]
    if duration:
        cmd += ["--duration", duration]
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    where, state, setup, run, ops = json.loads(out)
    STATES[tree] = state
    if not Path(where).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"{tree}: the run imported swiotlb from {where}")
    return setup, run, ops


def best(runs: list[tuple[float, float, int]]) -> tuple[float, float, int]:
    return min(runs, key=lambda r: r[1])


def main() -> None:
    from swiotlb.policies import POLICIES
    from swiotlb.workloads.units import parse_duration

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-p", "--policy", action="append", choices=sorted(POLICIES), help="repeatable; default: all")
    ap.add_argument("--scenario", default="S1")
    ap.add_argument("--duration", default=None, help="simulated time, e.g. 1s (default: the scenario's)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    ap.add_argument("--baseline", type=Path, help="another source tree to compare with, run by turns")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    duration = parse_duration(args.duration) if args.duration else None
    policies = args.policy or list(POLICIES)
    if args.worker:
        import swiotlb

        print(json.dumps([swiotlb.__file__, build_state(), *measure(policies[0], duration, args.scenario, args.clock)]))
        return
    if args.baseline is not None:
        compare(args.baseline, policies, args.duration, args.scenario, args.clock, args.repeat, args.json)
        return
    out: dict[str, float] = {}
    rows = []
    for policy in policies:
        setup, run, ops = best([measure(policy, duration, args.scenario, args.clock) for _ in range(args.repeat)])
        out[policy] = ops / run
        rows.append((policy, ops, setup, run, ops / run))
    if args.json:
        print(json.dumps(out, sort_keys=True))
        return
    print(f"{args.scenario} {args.duration or 'full'}, {args.clock} clock, best of {args.repeat}; {build_state()}")
    print(f"{'policy':<10} {'ops':>9} {'setup s':>8} {'run s':>7} {'ops/s':>10}  vs target {TARGET:,}")
    for policy, ops, setup, run, rate in rows:
        print(f"{policy:<10} {ops:>9,} {setup:>8.2f} {run:>7.2f} {rate:>10,.0f}  {rate / TARGET:.2f}x")


def compare(
    baseline: Path, policies: list[str], duration: str | None, scenario: str, clock: str, repeat: int, as_json: bool
) -> None:
    """Best-of-``repeat`` operations per second of ``baseline`` and of this tree, by turns."""
    runs: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
    for _ in range(repeat):
        for policy in policies:
            for name, tree in (("before", baseline), ("after", HERE)):
                runs.setdefault((policy, name), []).append(measure_in(tree, policy, duration, scenario, clock))
    rates = {}
    for policy in policies:
        (_, run_b, ops_b), (_, run_a, ops_a) = best(runs[policy, "before"]), best(runs[policy, "after"])
        rates[policy] = (ops_b, ops_b / run_b, ops_a, ops_a / run_a)
    if as_json:
        print(json.dumps({p: {"before": r[1], "after": r[3]} for p, r in rates.items()}, sort_keys=True))
        return
    print(f"{scenario} {duration or 'full'}, {clock} clock, best of {repeat}, before = {baseline}")
    print(f"before: {STATES.get(baseline)}; after: {STATES.get(HERE)}")
    print(f"{'policy':<10} {'ops':>9} {'before ops/s':>13} {'after ops/s':>12} {'after/before':>13}  vs target {TARGET:,}")
    for policy, (ops_b, rate_b, ops_a, rate_a) in rates.items():
        ops = f"{ops_a:,}" if ops_a == ops_b else f"{ops_b:,}/{ops_a:,}"
        print(f"{policy:<10} {ops:>9} {rate_b:>13,.0f} {rate_a:>12,.0f} {rate_a / rate_b:>13.2f}  {rate_a / TARGET:.2f}x")


if __name__ == "__main__":
    main()
