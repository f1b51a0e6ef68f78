"""The ``swiotlb`` command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from swiotlb.core import PROFILES
from swiotlb.native import describe


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="swiotlb", message=f"%(prog)s, version %(version)s; {describe()}")
def main() -> None:
    """A laboratory for Linux SWIOTLB bounce buffering."""


@main.group()
def vectors() -> None:
    """Golden slot-allocator vectors produced by the kernel's own code."""


@vectors.command("check")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--profile",
    type=click.Choice(sorted(PROFILES)),
    default=None,
    help="Replay every case with this kernel profile instead of the one the case names.",
)
@click.option("--literal", is_flag=True, help="Use the probe-by-probe kernel loop instead of the fast search.")
@click.option("--quiet", "-q", is_flag=True, help="Print only failures and the summary line.")
def vectors_check(paths: tuple[str, ...], profile: str | None, literal: bool, quiet: bool) -> None:
    """Replay vector files (or directories of *.jsonl) and compare with the kernel.

    Prints one line per failing case with its first mismatching op, then
    'N passed, M failed'; exits 1 if any case failed.
    """
    from rich.progress import Progress

    from swiotlb.lab.vectors import VectorFormatError, check_paths

    passed = failed = 0
    show_progress = not quiet and sys.stderr.isatty()
    try:
        with Progress(transient=True, disable=not show_progress) as progress:
            task = progress.add_task("replaying", total=None)
            for result in check_paths(paths, profile, fast=not literal):
                progress.advance(task)
                if result.passed:
                    passed += 1
                else:
                    failed += 1
                    click.echo(f"FAIL {result.name} ({result.source}): {result.mismatch}")
    except (VectorFormatError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{passed} passed, {failed} failed")
    if failed:
        sys.exit(1)


# -- the simulator ---------------------------------------------------------------------------
def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    from swiotlb.workloads.units import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _scenarios(refs: tuple[str, ...]) -> list:  # type: ignore[type-arg]
    from swiotlb.lab.compare import resolve
    from swiotlb.workloads.scenario import ScenarioError

    try:
        return resolve(refs)
    except ScenarioError as exc:
        raise click.ClickException(str(exc)) from None


def _jobs(specs: list, policies: tuple[str, ...], seed: int | None, duration: int | None) -> list:  # type: ignore[type-arg]
    """Every (scenario, policy) run with the command line's overrides; a bad policy is a usage error."""
    from swiotlb.lab.compare import plan
    from swiotlb.workloads.scenario import ScenarioError

    try:
        return plan(specs, policies, seed=seed, duration_ns=duration)
    except ScenarioError as exc:
        raise click.ClickException(str(exc)) from None


def _console() -> Any:
    """A rich console; when the output is not a terminal, wide enough for the tables."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)


_POLICY = click.option("--policy", "-p", "policies", multiple=True,
                       help="Run this policy (repeatable); default: the scenario's list (every policy).")
_SEED = click.option("--seed", type=click.IntRange(min=0), default=None, help="Override the scenario's seed.")
_DURATION = click.option("--duration", callback=_duration, default=None,
                         help="Override the scenario's duration (e.g. 500ms, 10s).")


@main.command("scenarios")
def scenarios_cmd() -> None:
    """List the built-in scenarios: id, name, duration, what each checks."""
    from rich.table import Table

    from swiotlb.workloads.scenario import builtin_scenarios
    from swiotlb.workloads.units import format_duration

    table = Table(show_lines=True)
    for col in ("id", "name", "duration", "checks"):
        table.add_column(col)
    for spec in builtin_scenarios():
        table.add_row(spec.id or "", spec.name, format_duration(spec.duration_ns), spec.checks)
    _console().print(table)


@main.command("run")
@click.argument("scenario")
@_POLICY
@_SEED
@_DURATION
@click.option("--json", "as_json", is_flag=True, help="Print the result records as JSON (one per policy).")
def run_cmd(scenario: str, policies: tuple[str, ...], seed: int | None, duration: int | None, as_json: bool) -> None:
    """Run SCENARIO (a built-in id or name, or a TOML file) under its policies."""
    import json

    from swiotlb.lab.compare import run_job, scenario_table

    specs = _scenarios((scenario,))
    records = [run_job(job) for job in _jobs(specs, policies, seed, duration)]
    if as_json:
        click.echo(json.dumps(records if len(records) > 1 else records[0], sort_keys=True, indent=1))
        return
    _console().print(scenario_table(specs[0].ref, specs[0].title, records))


@main.command("compare")
@click.argument("scenarios", nargs=-1)
@_POLICY
@_SEED
@_DURATION
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("results"),
              show_default=True,
              help="Directory for results.json, results.parquet, timeseries.parquet, occupancy.parquet.")
@click.option("--jobs", "-j", "workers", type=click.IntRange(min=1), default=None,
              help="Worker processes (default: CPUs, at most 8).")
@click.option("--markdown", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the tables and the adaptive design's checks as Markdown to this file.")
@click.option("--report", "with_report", is_flag=True,
              help="Also write OUT/report.html, the HTML report with plots (as `swiotlb report OUT` does).")
def compare_cmd(scenarios: tuple[str, ...], policies: tuple[str, ...], seed: int | None, duration: int | None,
                out: Path, workers: int | None, markdown: Path | None, with_report: bool) -> None:
    """Run every built-in scenario (or those named) under every policy and compare them."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from swiotlb.lab.compare import OCCUPANCY_BINS, Job, default_workers, run_jobs, scenario_table, write_results

    specs = _scenarios(scenarios)
    jobs = _jobs(specs, policies, seed, duration)
    console = _console()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("simulating", total=len(jobs))

        def done(job: Job, record: dict) -> None:  # type: ignore[type-arg]
            progress.update(task, advance=1, description=f"{job.scenario.ref} {job.policy}")

        records = run_jobs(jobs, workers=workers or default_workers(), progress=done, occupancy_bins=OCCUPANCY_BINS)
    for spec in specs:
        mine = [r for r in records if r["scenario"] == spec.ref]
        console.print(scenario_table(spec.ref, spec.title, mine))
    paths = write_results(records, out)
    if markdown is not None:
        from swiotlb.lab.compare import results_markdown

        markdown.write_text(results_markdown(specs, records))
        paths.append(markdown)
    if with_report:
        from swiotlb.lab.report import build_report

        paths.append(build_report(out, out / "report.html"))
    console.print("results: " + ", ".join(str(p) for p in paths))


# -- real traces ------------------------------------------------------------------------------
_MASK = click.option("--mask", "masks", multiple=True, metavar="DEVICE=MASK",
                     help="A device's min_align_mask (repeatable); default: inferred from the trace.")
_META = click.option("--meta", "meta_path", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="The capture's NAME.meta.json (default: the one beside the trace, if any).")
_SKIP_BAD = click.option("--skip-bad", is_flag=True, help="Count malformed lines instead of stopping at the first.")


def _load_trace(path: str, skip_bad: bool) -> Any:
    """A canonical trace from text (parsed with a spinner), Parquet or JSONL; errors name file:line."""
    from swiotlb.traces.reader import TraceParseError
    from swiotlb.traces.store import TraceStoreError, load_trace

    try:
        with _console_err().status(f"reading {path}"):
            trace = load_trace(path, skip_bad=skip_bad)
    except (TraceParseError, TraceStoreError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    bad = trace.info.get("bad_lines", 0)
    if bad:
        click.echo(f"warning: skipped {bad} malformed line(s) of {path}; first: "
                   f"{trace.info['bad_examples'][0]}", err=True)
    return trace


def _console_err() -> Any:
    from rich.console import Console

    return Console(stderr=True)


@main.group("trace")
def trace_group() -> None:
    """Real kernel traces: convert to the canonical form, summarise."""


@trace_group.command("convert")
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@_SKIP_BAD
def trace_convert(source: str, out: str, skip_bad: bool) -> None:
    """Parse and pair a text trace (tracefs, trace-cmd report, perf script; gzip or not) into
    OUT (.parquet, or .jsonl for small traces)."""
    from swiotlb.traces.store import TraceStoreError, write_trace

    trace = _load_trace(source, skip_bad)
    try:
        path = write_trace(trace, out)
    except TraceStoreError as exc:
        raise click.ClickException(str(exc)) from None
    p = trace.pairing
    click.echo(f"{path}: {len(trace):,} mapping rows, {len(trace.workloads)} workloads, "
               f"{p.orphans} orphan entries, {p.unmatched_unmaps} unmatched unmaps, "
               f"{p.open_at_end} open at the end, {trace.info.get('lost_events', 0)} lost events")


@trace_group.command("stats")
@click.argument("trace", type=click.Path(exists=True, dir_okay=False))
@_MASK
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
@_SKIP_BAD
def trace_stats_cmd(trace: str, masks: tuple[str, ...], as_json: bool, skip_bad: bool) -> None:
    """Per device and per workload: mappings, sizes, peak bytes and slots in flight, lifetimes,
    bounce rate."""
    import json

    from swiotlb.lab.replay import parse_masks
    from swiotlb.traces.fidelity import infer_min_align_masks
    from swiotlb.traces.meta import MetaError
    from swiotlb.traces.stats import render_stats, trace_stats

    try:
        mask_map = parse_masks(masks)
    except MetaError as exc:
        raise click.ClickException(str(exc)) from None
    canonical = _load_trace(trace, skip_bad)
    full = infer_min_align_masks(canonical)
    full.update(mask_map)
    stats = trace_stats(canonical, full)
    if as_json:
        click.echo(json.dumps(stats, sort_keys=True, indent=1))
        return
    console = _console()
    for table in render_stats(stats):
        console.print(table)


@main.command("replay")
@click.argument("trace", type=click.Path(exists=True, dir_okay=False))
@_META
@click.option("--pool", "pool_option", default=None, metavar="START:SIZE[:AREAS]",
              help="The kernel's pool when there is no metadata, e.g. 0x6fa00000:64M:1.")
@_MASK
@click.option("--policy", "-p", "policies", multiple=True,
              help="static (default: the exact allocator against the kernel's addresses) or any "
                   "design, simulated (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (a list for several policies).")
@_SKIP_BAD
def replay_cmd(trace: str, meta_path: str | None, pool_option: str | None, masks: tuple[str, ...],
               policies: tuple[str, ...], as_json: bool, skip_bad: bool) -> None:
    """Replay TRACE (text, .parquet or .jsonl): with static, check the model against the kernel's
    own bounce addresses and counters; with other policies, show what each would have done."""
    import json

    from swiotlb.lab.replay import (
        choose_pool,
        fidelity,
        load_meta_option,
        parse_masks,
        policy_record,
        render_fidelity,
        render_policies,
    )
    from swiotlb.policies import POLICIES
    from swiotlb.traces.meta import MetaError

    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        raise click.BadParameter(f"unknown policy {unknown[0]!r}; known: {', '.join(sorted(POLICIES))}",
                                 param_hint="--policy")
    try:
        meta = load_meta_option(trace, meta_path)
        mask_map = parse_masks(masks)
        if "static" in (policies or ("static",)):
            choose_pool(meta, pool_option)  # before a long parse: say now what is missing
    except MetaError as exc:
        raise click.ClickException(str(exc)) from None
    canonical = _load_trace(trace, skip_bad)
    results: list[dict[str, Any]] = []
    console = _console()
    sim_records = []
    for policy in policies or ("static",):
        if policy == "static":
            try:
                res = fidelity(canonical, meta, pool_option, mask_map)
            except (MetaError, ValueError) as exc:
                raise click.ClickException(str(exc)) from None
            record = {"policy": "static", **res.to_json()}
            results.append(record)
            if not as_json:
                render_fidelity(res, console)
        else:
            with _console_err().status(f"simulating {policy}"):
                record = policy_record(canonical, policy, meta, mask_map)
            results.append(record)
            sim_records.append(record)
    if as_json:
        click.echo(json.dumps(results if len(results) > 1 else results[0], sort_keys=True, indent=1))
    elif sim_records:
        render_policies(sim_records, console)


@main.command("advise")
@click.argument("target")
@_META
@_MASK
@click.option("--margin", type=click.FloatRange(min=0.0, max=4.0), default=0.25, show_default=True,
              help="Head room added to the smallest pool that never failed.")
@click.option("--seeds", type=click.IntRange(min=1, max=64), default=3, show_default=True,
              help="Seeds a scenario must pass (0..N-1).")
@_DURATION
@click.option("--json", "as_json", is_flag=True, help="Print the advice as JSON.")
@_SKIP_BAD
def advise_cmd(target: str, meta_path: str | None, masks: tuple[str, ...], margin: float, seeds: int,
               duration: int | None, as_json: bool, skip_bad: bool) -> None:
    """Size a static pool for TARGET (a trace file, or a scenario id, name or TOML file): the
    swiotlb= line with zero failures plus a margin, what each dynamic design would hold, and
    the device that drives the need."""
    import json

    from swiotlb.lab.advise import advise_scenario, advise_trace
    from swiotlb.lab.replay import load_meta_option, parse_masks
    from swiotlb.traces.meta import MetaError

    status = _console_err().status("advising")

    def progress(text: str) -> None:
        status.update(text)

    is_trace = Path(target).is_file() and not target.endswith(".toml")
    with status:
        if is_trace:
            try:
                meta = load_meta_option(target, meta_path)
                mask_map = parse_masks(masks)
            except MetaError as exc:
                raise click.ClickException(str(exc)) from None
            trace = _load_trace(target, skip_bad)
            try:
                advice = advise_trace(trace, meta, masks=mask_map, margin=margin, progress=progress)
            except ValueError as exc:
                raise click.ClickException(str(exc)) from None
        else:
            spec = _scenarios((target,))[0]
            try:
                advice = advise_scenario(spec, seeds=range(seeds), margin=margin, duration_ns=duration,
                                         progress=progress)
            except ValueError as exc:
                raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(advice.to_json(), sort_keys=True, indent=1))
        return
    from rich.table import Table

    from swiotlb.lab.compare import format_bytes

    console = _console()
    console.print(f"[bold]{advice.swiotlb}[/bold]")
    t = Table(title=f"what each design holds on {advice.target}")
    for c in ("design", "average", "peak", "failures"):
        t.add_column(c, justify="right")
    size = advice.recommended_slots << 11
    t.add_row(f"static ({advice.swiotlb})", format_bytes(size), format_bytes(size), "0")
    for name, rec in advice.dynamic.items():
        t.add_row(name, format_bytes(rec["avg_footprint_bytes"]), format_bytes(rec["peak_footprint_bytes"]),
                  str(rec["failures"]))
    console.print(t)
    console.print(advice.recommendation)


@main.group("bench")
def bench_group() -> None:
    """Measurement you can trust: the package's dma_map_benchmark, paired A/B rounds."""


def _add_commands() -> None:
    from swiotlb.lab.bench_ab import ab_cmd, show_cmd
    from swiotlb.lab.bench_map import map_cmd
    from swiotlb.lab.capture import capture_cmd
    from swiotlb.lab.report import report_cmd
    from swiotlb.lab.sweep_cli import sweep_group

    main.add_command(capture_cmd)
    main.add_command(report_cmd)
    main.add_command(sweep_group)
    bench_group.add_command(ab_cmd)
    bench_group.add_command(show_cmd)
    bench_group.add_command(map_cmd)


_add_commands()


if __name__ == "__main__":  # pragma: no cover
    main()
