"""``swiotlb compare``: every scenario under every policy, side by side.

Runs are independent and deterministic, so they fan out over worker processes and the results do
not depend on how many there are. Each run gives the record of
:meth:`swiotlb.sim.simulation.Simulation.result`; a run a policy cannot do (``lending`` on a
machine without a bounce pool to lend from) gives a record with ``skipped`` and the reason.

Outputs under ``--out DIR``: ``results.json`` (every record, canonical JSON),
``results.parquet`` (one row per run, the scalar metrics flattened: ``failures_full``,
``map_ns_p99``, ``steps_slot_probe``, ...), ``timeseries.parquet`` (scenario, policy,
``t_ns`` and every column of the record's ``time_series`` on each run's grid) and
``occupancy.parquet`` (scenario, policy, ``t_ns``, ``bin``, ``used_permille``: the occupancy
maps, kept out of ``results.json`` because they are large).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swiotlb.lab.runner import check_policy, run_scenario
from swiotlb.sim.metrics import FAILURE_CAUSES
from swiotlb.sim.sampling import SERIES
from swiotlb.policies.config import ConfigError
from swiotlb.workloads.scenario import ScenarioSpec, builtin_scenarios, find_scenario, load_scenario

COLUMNS: tuple[tuple[str, str], ...] = (
    ("failures", "failed"),
    ("deferred", "deferred"),
    ("peak_footprint_bytes", "peak fp"),
    ("avg_footprint_bytes", "avg fp"),
    ("hiwater_slots", "hiwater"),
    ("map_ns_p50", "map ns p50"),
    ("map_ns_p99", "map ns p99"),
    ("lock_wait_ns_total", "lock wait ns"),
    ("decrypt_ops", "decrypt"),
    ("encrypt_ops", "encrypt"),
    ("pools_created", "pools+"),
    ("pools_freed", "pools-"),
    ("oom_events", "OOM"),
)
"""The table's metric columns (a flattened key, a heading); lower is better in every one.
"fp" is the bounce footprint: bytes reserved for bouncing."""

SIZE_COLUMNS = frozenset({"peak_footprint_bytes", "avg_footprint_bytes"})

TIME_SERIES: tuple[str, ...] = ("reserved_bytes", "in_use_bytes", *SERIES)
"""The columns of a record's ``time_series`` beside ``t_ns``, as ``timeseries.parquet`` holds them."""

OCCUPANCY_BINS = 64
"""Bins of the occupancy maps ``swiotlb compare`` records (for the report's heat maps)."""


@dataclass(frozen=True)
class Job:
    """One run to do: a scenario, a policy, overrides. It crosses to worker processes as the
    scenario's ``source`` (``builtin:S4`` or a file path), which the worker loads again."""

    scenario: ScenarioSpec
    policy: str
    seed: int | None = None
    duration_ns: int | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (_job_from_source, (self.scenario.source, self.policy, self.seed, self.duration_ns))


def _job_from_source(source: str, policy: str, seed: int | None, duration_ns: int | None) -> Job:
    spec = find_scenario(source.removeprefix("builtin:")) if source.startswith("builtin:") else load_scenario(source)
    return Job(spec, policy, seed, duration_ns)


def resolve(refs: Sequence[str]) -> list[ScenarioSpec]:
    """The scenarios named (ids, names or TOML paths), or every built-in when none are."""
    return [find_scenario(r) for r in refs] if refs else builtin_scenarios()


def plan(specs: Iterable[ScenarioSpec], policies: Sequence[str] = (), *, seed: int | None = None,
         duration_ns: int | None = None) -> list[Job]:
    """Every (scenario, policy) run: the policies given, else each scenario's own list."""
    jobs = []
    for spec in specs:
        for policy in policies or spec.policies:
            jobs.append(Job(spec, check_policy(spec, policy), seed, duration_ns))
    return jobs


def run_job(job: Job, occupancy_bins: int = 0) -> dict[str, Any]:
    """One run's record (with an ``occupancy`` map of that many bins if > 0); a policy this
    machine cannot have gives a ``skipped`` record."""
    try:
        return run_scenario(job.scenario, job.policy, seed=job.seed, duration_ns=job.duration_ns,
                            occupancy_bins=occupancy_bins)
    except ConfigError as exc:
        spec = job.scenario
        return {"scenario": spec.ref, "policy": job.policy, "seed": job.seed if job.seed is not None else spec.seed,
                "skipped": str(exc)}


def run_jobs(jobs: Sequence[Job], *, workers: int = 1,
             progress: Callable[[Job, dict[str, Any]], None] | None = None,
             occupancy_bins: int = 0) -> list[dict[str, Any]]:
    """Run ``jobs`` (in ``workers`` processes when > 1); records come back in ``jobs`` order."""
    results: list[dict[str, Any] | None] = [None] * len(jobs)
    if workers <= 1 or len(jobs) <= 1:
        for i, job in enumerate(jobs):
            results[i] = record = run_job(job, occupancy_bins)
            if progress:
                progress(job, record)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(run_job, job, occupancy_bins): i for i, job in enumerate(jobs)}
            for fut in as_completed(futures):
                i = futures[fut]
                results[i] = record = fut.result()
                if progress:
                    progress(jobs[i], record)
    return [r for r in results if r is not None]


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


# -- flattening and files ---------------------------------------------------------------------
def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """The scalar metrics of a record as one flat row (nested keys joined with ``_``)."""
    row: dict[str, Any] = {}
    for key, value in record.items():
        if key in ("time_series", "series", "counters", "policy_stats"):
            continue
        if isinstance(value, dict):
            for sub, v in value.items():
                if not isinstance(v, (dict, list)):
                    row[f"{key}_{sub}"] = v
        elif not isinstance(value, list):
            row[key] = value
    if "failures_full" in row:
        row["failures"] = sum(row[f"failures_{c}"] for c in FAILURE_CAUSES)
    return row


def write_results(records: Sequence[dict[str, Any]], out: Path) -> list[Path]:
    """``results.json``, ``results.parquet``, ``timeseries.parquet`` and ``occupancy.parquet``
    under ``out``. A record's ``occupancy`` map goes to the last, not to ``results.json``."""
    import polars as pl

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results.json", out / "results.parquet", out / "timeseries.parquet", out / "occupancy.parquet"]
    lean = [{k: v for k, v in r.items() if k != "occupancy"} for r in records]
    paths[0].write_text(json.dumps(lean, sort_keys=True, indent=1) + "\n")
    rows = [flatten(r) for r in lean]
    keys = sorted({k for r in rows for k in r})
    table = pl.DataFrame([{k: r.get(k) for k in keys} for r in rows], infer_schema_length=None)
    table.write_parquet(paths[1], compression="zstd")
    ts_schema = {"scenario": pl.String, "policy": pl.String, "t_ns": pl.Int64, **dict.fromkeys(TIME_SERIES, pl.Int64)}
    occ_schema = {"scenario": pl.String, "policy": pl.String, "t_ns": pl.Int64, "bin": pl.Int16,
                  "used_permille": pl.Int16}
    series, maps = [], []
    for r in records:
        ts = r.get("time_series")
        if not ts:
            continue
        n = len(ts["t_ns"])
        series.append(pl.DataFrame({
            "scenario": [r["scenario"]] * n, "policy": [r["policy"]] * n, "t_ns": ts["t_ns"],
            **{c: ts.get(c, [None] * n) for c in TIME_SERIES}}, schema=ts_schema))
        occ = r.get("occupancy")
        if occ:
            bins, grid = occ["bins"], occ["used_permille"]
            maps.append(pl.DataFrame({
                "scenario": [r["scenario"]] * (n * bins), "policy": [r["policy"]] * (n * bins),
                "t_ns": [t for t in ts["t_ns"] for _ in range(bins)], "bin": list(range(bins)) * n,
                "used_permille": [v for row in grid for v in row]}, schema=occ_schema))
    (pl.concat(series) if series else pl.DataFrame(schema=ts_schema)).write_parquet(paths[2], compression="zstd")
    (pl.concat(maps) if maps else pl.DataFrame(schema=occ_schema)).write_parquet(paths[3], compression="zstd")
    return paths


# -- the terminal table -----------------------------------------------------------------------
def format_bytes(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} B"


def table_rows(records: Sequence[dict[str, Any]]) -> list[tuple[str, str | None, list[tuple[str, bool]]]]:
    """``(policy, skipped reason or None, [(cell text, is the column's best), ...])`` per record.

    Lower is better in every column; a column where all runs agree marks no best.
    """
    rows = [flatten(r) for r in records]
    live = [r for r in rows if "skipped" not in r]
    out: list[tuple[str, str | None, list[tuple[str, bool]]]] = []
    for row in rows:
        if "skipped" in row:
            out.append((row["policy"], str(row["skipped"]), []))
            continue
        cells = []
        for key, _ in COLUMNS:
            v = row.get(key)
            values = {r[key] for r in live if r.get(key) is not None}
            text = "-" if v is None else format_bytes(v) if key in SIZE_COLUMNS else f"{v:,}"
            cells.append((text, v is not None and len(values) > 1 and v == min(values)))
        out.append((row["policy"], None, cells))
    return out


def scenario_table(spec_ref: str, title: str, records: Sequence[dict[str, Any]]) -> Any:
    """A rich Table: one row per policy, the :data:`COLUMNS`, each column's best in bold green
    with a star."""
    from rich.table import Table

    table = Table(title=f"{spec_ref}: {title}", title_justify="left")
    table.add_column("policy")
    for _, heading in COLUMNS:
        table.add_column(heading, justify="right")
    for policy, skipped, cells in table_rows(records):
        if skipped is not None:
            table.add_row(policy, f"[dim]skipped: {skipped}[/dim]", *[""] * (len(COLUMNS) - 1))
        else:
            table.add_row(policy, *[f"[bold green]*{t}[/bold green]" if b else t for t, b in cells])
    return table


def markdown_table(records: Sequence[dict[str, Any]]) -> str:
    """The same table in Markdown (for docs/results.md); each column's best in bold."""
    lines = ["| policy | " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * (len(COLUMNS) + 1)]
    for policy, skipped, cells in table_rows(records):
        if skipped is not None:
            lines.append(f"| {policy} | skipped: {skipped} |" + " |" * (len(COLUMNS) - 1))
        else:
            lines.append(f"| {policy} | " + " | ".join(f"**{t}**" if b else t for t, b in cells) + " |")
    return "\n".join(lines)


# -- the adaptive design's checks (issue 4, §6) ------------------------------------------------
CHECKED_SCENARIOS = ("S1", "S4", "S6", "S12")
"""Where issue 4, §6 requires the checks of :func:`adaptive_checks` to hold."""


def adaptive_checks(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per scenario with an ``adaptive`` and a ``linux-6.6`` run: the four §6 checks.

    ``need`` is the scenario's true in-flight peak: the most bytes any policy's run had mapped
    through bounce buffers at once (a policy that fails maps sees less, never more).
    """
    out = []
    by = {(r["scenario"], r["policy"]): r for r in records if "skipped" not in r}
    for scenario in dict.fromkeys(r["scenario"] for r in records):
        ada, lin = by.get((scenario, "adaptive")), by.get((scenario, "linux-6.6"))
        if ada is None or lin is None:
            continue
        need = max(r["peak_inflight_bytes"] for (s, _), r in by.items() if s == scenario)
        avg = ada["avg_footprint_bytes"]
        out.append({
            "scenario": scenario,
            "failures": sum(ada["failures"].values()),
            "avg_footprint_bytes": avg,
            "inflight_peak_bytes": need,
            "linux66_avg_footprint_bytes": lin["avg_footprint_bytes"],
            "decrypt_ops": ada["decrypt_ops"],
            "linux66_decrypt_ops": lin["decrypt_ops"],
            "zero_failures": sum(ada["failures"].values()) == 0,
            "within_1_5x_need": 2 * avg <= 3 * need,
            "within_half_linux66": 2 * avg <= lin["avg_footprint_bytes"],
            "decrypts_at_most_linux66": ada["decrypt_ops"] <= lin["decrypt_ops"],
        })
    return out


def checks_markdown(checks: Sequence[dict[str, Any]]) -> str:
    """:func:`adaptive_checks` as a Markdown table (yes/NO per check)."""
    def yn(ok: bool) -> str:
        return "yes" if ok else "**NO**"

    lines = ["| scenario | failures | avg footprint | in-flight peak | ≤ 1.5× peak | linux-6.6 avg | ≤ ½ linux-6.6 "
             "| decrypts | linux-6.6 decrypts | ≤ linux-6.6 |", "|" + "---|" * 10]
    for c in checks:
        lines.append(
            f"| {c['scenario']} | {c['failures']:,} | {format_bytes(c['avg_footprint_bytes'])} | "
            f"{format_bytes(c['inflight_peak_bytes'])} | {yn(c['within_1_5x_need'])} | "
            f"{format_bytes(c['linux66_avg_footprint_bytes'])} | {yn(c['within_half_linux66'])} | "
            f"{c['decrypt_ops']:,} | {c['linux66_decrypt_ops']:,} | {yn(c['decrypts_at_most_linux66'])} |")
    return "\n".join(lines)


def results_markdown(specs: Sequence[ScenarioSpec], records: Sequence[dict[str, Any]]) -> str:
    """Every scenario's table, then the adaptive checks: what ``--markdown`` writes."""
    parts = []
    for spec in specs:
        mine = [r for r in records if r["scenario"] == spec.ref]
        if mine:
            parts.append(f"### {spec.ref}: {spec.title}\n\n{markdown_table(mine)}\n")
    checks = adaptive_checks(records)
    required = [c for c in checks if c["scenario"] in CHECKED_SCENARIOS]
    others = [c for c in checks if c["scenario"] not in CHECKED_SCENARIOS]
    if required:
        parts.append("### adaptive against the checks of issue 4, §6\n\n" + checks_markdown(required) + "\n")
    if others:
        parts.append("### the same checks on the other scenarios (not required)\n\n" + checks_markdown(others) + "\n")
    return "\n".join(parts)
