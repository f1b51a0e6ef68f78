"""``swiotlb run``, ``compare`` and ``scenarios``: records, tables, files, errors."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from swiotlb.lab.cli import main
from swiotlb.lab.compare import Job, adaptive_checks, checks_markdown, flatten, markdown_table, plan, resolve, run_jobs, table_rows, write_results
from swiotlb.workloads.scenario import builtin_scenarios

SMALL = """
name = "tiny-disk"
title = "a small pool under 128K reads"
checks = "nothing in particular"
duration = "20ms"
seed = 3
policies = ["static", "adaptive"]

[machine]
ram = "1G"
cpus = 2
cmdline = "swiotlb=2048,force"

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
requeue = "100us"
"""


@pytest.fixture
def small(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(SMALL)
    return path


def test_run_json_has_the_schema(small: Path) -> None:
    result = CliRunner().invoke(main, ["run", str(small), "--policy", "static", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["scenario"] == "tiny-disk" and record["policy"] == "static" and record["seed"] == 3
    assert record["failures"]["full"] > 0  # 48 x 128 KiB in flight, a 4 MiB pool
    assert record["maps"] == record["succeeded"] + sum(record["failures"].values())


def test_run_overrides_seed_and_duration(small: Path) -> None:
    result = CliRunner().invoke(main, ["run", str(small), "-p", "adaptive", "--seed", "9", "--duration", "5ms",
                                       "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["seed"] == 9 and record["end_ns"] == 5_000_000
    assert sum(record["failures"].values()) == 0  # adaptive grows instead


def test_run_prints_a_table_marking_the_best(small: Path) -> None:
    result = CliRunner().invoke(main, ["run", str(small)])
    assert result.exit_code == 0, result.output
    assert "tiny-disk" in result.output and "static" in result.output and "adaptive" in result.output
    assert "*" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["run", "S99"], "no built-in scenario"),
    (["run", "S4", "--policy", "bogus"], "unknown policy 'bogus'"),
    (["run", "S4", "--duration", "soon"], "soon"),
])
def test_bad_arguments_are_named(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0 and message in result.output


def test_scenarios_lists_the_builtins() -> None:
    result = CliRunner().invoke(main, ["scenarios"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for spec in builtin_scenarios():
        assert spec.id in result.output and spec.name in result.output


def test_compare_writes_json_and_parquet(small: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["compare", str(small), "--out", str(out), "-j", "1",
                                       "--markdown", str(tmp_path / "r.md")])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "r.md").read_text()
    assert md.startswith("### tiny-disk: a small pool") and "| static |" in md and "| adaptive |" in md
    records = json.loads((out / "results.json").read_text())
    assert [r["policy"] for r in records] == ["static", "adaptive"]
    table = pl.read_parquet(out / "results.parquet")
    assert table.height == 2 and {"failures_full", "map_ns_p99", "avg_footprint_bytes"} <= set(table.columns)
    assert table["failures_full"].to_list() == [r["failures"]["full"] for r in records]
    series = pl.read_parquet(out / "timeseries.parquet")
    assert series.height == sum(len(r["time_series"]["t_ns"]) for r in records)


def test_parallel_runs_give_the_same_records(small: Path) -> None:
    jobs = plan(resolve([str(small)]))
    assert run_jobs(jobs, workers=2) == run_jobs(jobs, workers=1)


def test_a_policy_the_machine_cannot_have_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "nopool.toml"
    path.write_text(SMALL.replace('cmdline = "swiotlb=2048,force"', 'cmdline = ""'))
    [record] = run_jobs([Job(resolve([str(path)])[0], "lending")])
    assert "skipped" in record and "bounce pool" in record["skipped"]
    rows = table_rows([record])
    assert rows[0][1] == record["skipped"]
    assert "skipped" in markdown_table([record])
    write_results([record], tmp_path / "out")  # a skipped run still writes valid files


def test_every_builtin_runs_briefly_under_every_policy() -> None:
    """Smoke: each built-in scenario, 5 ms of it, under each of its policies."""
    for spec in builtin_scenarios():
        for job in plan([spec], duration_ns=5_000_000):
            record = run_jobs([job])[0]
            where = (spec.ref, job.policy)
            if "skipped" in record:
                assert job.policy == "lending", where  # only lending needs a pool to lend from
                continue
            row = flatten(record)
            assert record["end_ns"] == 5_000_000 and record["time_series"]["t_ns"][-1] == 5_000_000, where
            assert row["maps"] == row["succeeded"] + row["failures"], where
            assert row["peak_footprint_bytes"] >= row["avg_footprint_bytes"] >= 0, where


def record(policy: str, avg: int, inflight: int, decrypts: int, full: int = 0) -> dict[str, object]:
    return {"scenario": "S9", "policy": policy, "avg_footprint_bytes": avg, "peak_inflight_bytes": inflight,
            "decrypt_ops": decrypts, "failures": {"full": full, "too_large": 0, "unaddressable": 0, "no_memory": 0}}


def test_adaptive_checks_compare_with_linux66_and_the_true_need() -> None:
    [c] = adaptive_checks([record("linux-6.6", 64 << 20, 10 << 20, 0, full=5),
                           record("adaptive", 15 << 20, 12 << 20, 2)])
    assert c["inflight_peak_bytes"] == 12 << 20  # the most any run had in flight
    assert c["zero_failures"] and c["within_1_5x_need"] and c["within_half_linux66"]
    assert not c["decrypts_at_most_linux66"]
    md = checks_markdown([c])
    assert "| S9 | 0 | 15.0 MiB | 12.0 MiB | yes |" in md and "**NO**" in md
    [c] = adaptive_checks([record("linux-6.6", 20 << 20, 10 << 20, 0), record("adaptive", 16 << 20, 10 << 20, 0)])
    assert not c["within_1_5x_need"] and not c["within_half_linux66"] and c["decrypts_at_most_linux66"]
