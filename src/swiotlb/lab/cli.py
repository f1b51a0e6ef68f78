"""The ``swiotlb`` command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from swiotlb.core import PROFILES


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="swiotlb")
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
              show_default=True, help="Directory for results.json, results.parquet, timeseries.parquet.")
@click.option("--jobs", "-j", "workers", type=click.IntRange(min=1), default=None,
              help="Worker processes (default: CPUs, at most 8).")
@click.option("--markdown", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the tables and the adaptive design's checks as Markdown to this file.")
def compare_cmd(scenarios: tuple[str, ...], policies: tuple[str, ...], seed: int | None, duration: int | None,
                out: Path, workers: int | None, markdown: Path | None) -> None:
    """Run every built-in scenario (or those named) under every policy and compare them."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from swiotlb.lab.compare import Job, default_workers, run_jobs, scenario_table, write_results

    specs = _scenarios(scenarios)
    jobs = _jobs(specs, policies, seed, duration)
    console = _console()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("simulating", total=len(jobs))

        def done(job: Job, record: dict) -> None:  # type: ignore[type-arg]
            progress.update(task, advance=1, description=f"{job.scenario.ref} {job.policy}")

        records = run_jobs(jobs, workers=workers or default_workers(), progress=done)
    for spec in specs:
        mine = [r for r in records if r["scenario"] == spec.ref]
        console.print(scenario_table(spec.ref, spec.title, mine))
    paths = write_results(records, out)
    if markdown is not None:
        from swiotlb.lab.compare import results_markdown

        markdown.write_text(results_markdown(specs, records))
        paths.append(markdown)
    console.print("results: " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":  # pragma: no cover
    main()
