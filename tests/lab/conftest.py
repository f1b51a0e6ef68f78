"""A small ``swiotlb compare`` results directory with its report, shared by the report tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from swiotlb.lab.compare import OCCUPANCY_BINS, plan, resolve, run_jobs, write_results
from swiotlb.lab.report import build_report

REPORT_SCENARIO = """
name = "report-mini"
title = "a small pool under deferrable 128K reads"
checks = "the report draws every figure"
duration = "30ms"
seed = 5
policies = ["static", "linux-6.6", "adaptive", "rfc-v1", "lending"]

[machine]
ram = "1G"
cpus = 2
cmdline = "swiotlb=2048,force"

[policy.adaptive]
max_total_slabs = 2048   # 4 MiB for 6 MiB in flight: it defers once it has grown to the cap
transient = false

[[device]]
name = "vda"
latency = "50us"
bandwidth = "4G"

[[workload]]
kind = "fio"
name = "j"
device = "vda"
bs = "128K"
rw = "read"
iodepth = 24
jobs = 2
may_sleep = true
defer = true
requeue = "100us"
"""


@pytest.fixture(scope="session")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Results of the mini scenario (static fails, linux-6.6 and lending grow, adaptive grows to its
    cap and then defers) and 40 ms of S4 (large display frames), with ``report.html`` built."""
    root = tmp_path_factory.mktemp("report")
    toml = root / "report-mini.toml"
    toml.write_text(REPORT_SCENARIO)
    jobs = plan(resolve([str(toml)])) + plan(resolve(["S4"]), duration_ns=40_000_000)
    out = root / "results"
    write_results(run_jobs(jobs, workers=2, occupancy_bins=OCCUPANCY_BINS), out)
    build_report(out, out / "report.html")
    return out
