"""Sweep speed-up (issue 7, §3): a 64-cell sweep on 1 and on 2 local workers; target >= 1.7x on 2.

A benchmark, not a test: run it by hand.

    python benchmarks/sweep.py                  # 1 and 2 workers, about 70 s on 2 cores
    python benchmarks/sweep.py --dask           # also 2 workers on a Dask LocalCluster
    python benchmarks/sweep.py --repeat 2 --json

The grid is S14 (throttle-vs-net) for 800 ms simulated under static, linux-6.6, adaptive and
rfc-v1, with 128 MiB and 256 MiB pools and 8 seeds: 4 x 2 x 8 = 64 cells of about 0.45-1.0 s
each. Every measurement runs the whole sweep into a fresh directory through
:func:`swiotlb.lab.sweep.run_sweep`, so the time includes starting the workers, the Parquet
files and the manifest. One worker runs the cells in this process; more run them in a
:class:`~concurrent.futures.ProcessPoolExecutor` (spawned workers). The results of every
configuration are checked to be identical. With ``--repeat`` the configurations take turns
(1, 2, 1, 2, ...) so that the machine's drift falls on both alike, and the speed-up is the
ratio of the medians. The machine is shared and noisy: compare figures from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

TARGET = 1.7
SPEC = """
[sweep]
name = "bench"
scenarios = ["S14"]
policies = ["static", "linux-6.6", "adaptive", "rfc-v1"]
pool_sizes = ["128M", "256M"]
seeds = {count = 8}
duration = "800ms"
"""


def measure(workers: int, dask: bool, root: Path, tag: str) -> tuple[float, float | None, object]:
    """Seconds for the whole sweep, the CPU seconds it used (this process and its worker
    processes; None on Dask, whose workers are not our children) and its results (a polars
    DataFrame)."""
    import tomllib

    from swiotlb.lab.sweep import load_results, parse_sweep, run_sweep

    spec = parse_sweep(tomllib.loads(SPEC), "bench.toml")
    assert len(spec.cells) == 64, len(spec.cells)

    out = root / tag
    c0 = os.times()
    t0 = time.perf_counter()
    report = run_sweep(spec, out, workers=workers, dask="local" if dask else None)
    elapsed = time.perf_counter() - t0
    c1 = os.times()
    assert report.computed == 64 and not report.errors, report
    cpu = (c1.user + c1.system + c1.children_user + c1.children_system
           - c0.user - c0.system - c0.children_user - c0.children_system)
    return elapsed, None if dask else cpu, load_results(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=1, help="Rounds of every configuration (default 1).")
    parser.add_argument("--dask", action="store_true", help="Also time 2 workers on a Dask LocalCluster.")
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    args = parser.parse_args()
    configs: list[tuple[str, int, bool]] = [("1 worker", 1, False), ("2 workers", 2, False)]
    if args.dask:
        configs.append(("2 Dask workers", 2, True))
    times: dict[str, list[float]] = {name: [] for name, _, _ in configs}
    cores: dict[str, list[float]] = {name: [] for name, _, _ in configs}
    load_before = os.getloadavg()
    reference = None
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as tmp:
        for r in range(args.repeat):
            for name, workers, dask in configs:
                elapsed, cpu, frame = measure(workers, dask, Path(tmp), f"{r}-{workers}-{int(dask)}")
                times[name].append(elapsed)
                if cpu is not None:
                    cores[name].append(cpu / elapsed)
                if reference is None:
                    reference = frame
                else:
                    assert frame.equals(reference), f"{name}: results differ from the first run"  # type: ignore[attr-defined]
                if not args.json:
                    used = "" if cpu is None else f", {cpu / elapsed:.2f} CPUs busy on average"
                    print(f"round {r + 1}: {name}: {elapsed:.1f} s{used}", flush=True)
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    base = medians["1 worker"]
    speedups = {name: base / m for name, m in medians.items()}
    result = {"cells": 64, "cpus": os.cpu_count(), "seconds": medians, "speedup": speedups, "target": TARGET,
              "met": speedups["2 workers"] >= TARGET, "identical_results": True,
              "cpus_busy": {name: statistics.median(c) for name, c in cores.items() if c},
              "load_average_before": load_before[0], "load_average_after": os.getloadavg()[0]}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"64 cells on {os.cpu_count()} CPUs (median of {args.repeat} round(s)); results identical in every run; "
          f"1-min load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after")
    for name, m in medians.items():
        print(f"  {name:15s} {m:6.1f} s   {base / m:4.2f}x")
    verdict = "met" if result["met"] else "NOT met"
    print(f"speed-up on 2 workers: {speedups['2 workers']:.2f}x (target >= {TARGET}x: {verdict})")


if __name__ == "__main__":
    main()
