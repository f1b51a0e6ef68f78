"""The ``swiotlb sweep`` command group: ``swiotlb sweep SPEC.toml`` runs a sweep and
``swiotlb sweep summarize DIR`` summarizes one. ``cli.py`` registers :data:`sweep_group`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click


class _SweepGroup(click.Group):
    """A group whose first argument is a subcommand (``summarize``, ``run``) or else the sweep
    file of ``run``: ``swiotlb sweep SPEC.toml -j 4`` is ``swiotlb sweep run SPEC.toml -j 4``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["run", *args]
        return super().parse_args(ctx, args)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage(ctx.command_path, "SPEC.toml [OPTIONS]  |  summarize DIR [OPTIONS]")


def _console() -> Any:
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)


@click.group("sweep", cls=_SweepGroup, context_settings={"help_option_names": ["-h", "--help"]})
def sweep_group() -> None:
    """Grids of runs: scenarios x policies x pool sizes x knobs x seeds (docs/sweeps.md).

    `swiotlb sweep SPEC.toml` runs the cells not yet finished (see `swiotlb sweep run -h`);
    `swiotlb sweep summarize DIR` gives the metrics across seeds.
    """


@sweep_group.command("run")
@click.argument("spec_path", metavar="SPEC.toml", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output directory (default: sweep-<spec name>).")
@click.option("--jobs", "-j", "workers", type=click.IntRange(min=1), default=None,
              help="Worker processes, or Dask workers with --dask local (default: CPUs).")
@click.option("--dask", "dask", metavar="ADDRESS", default=None,
              help="Run on a Dask cluster: 'local' starts a LocalCluster, else a scheduler address "
                   "(tcp://host:8786).")
@click.option("--limit", type=click.IntRange(min=0), default=None,
              help="Run at most this many of the unfinished cells, then stop (resume later).")
@click.option("--dry-run", is_flag=True, help="Check the file and print the cells; run nothing.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def sweep_run_cmd(spec_path: Path, out: Path | None, workers: int | None, dask: str | None, limit: int | None,
                  dry_run: bool, quiet: bool) -> None:
    """Run the sweep in SPEC.toml; finished cells are kept, so re-running resumes it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from swiotlb.lab.sweep import SweepError, default_workers, load_sweep, run_sweep

    try:
        spec = load_sweep(spec_path)
    except SweepError as exc:
        raise click.ClickException(str(exc)) from None
    out = out or Path(f"sweep-{spec.name}")
    if dry_run:
        for cell in spec.cells:
            click.echo(f"{cell.id}  {cell.describe()}")
        click.echo(f"{len(spec.cells)} cells, sweep hash {spec.hash}")
        return
    n = workers or default_workers()
    console = _console()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    where = f"Dask ({dask})" if dask else f"{n} process{'es' if n > 1 else ''}" if n > 1 else "this process"
    try:
        with Progress(*columns, console=console, transient=True, disable=quiet) as progress:
            task = progress.add_task(f"sweep {spec.name} on {where}", total=len(spec.cells))

            def started(total: int, done: int) -> None:
                progress.update(task, total=total, completed=done)

            def advance(cell: Any, kind: str) -> None:
                progress.advance(task)
                if kind == "error":
                    progress.console.print(f"[red]error[/red] in {cell.id} ({cell.describe()})")

            report = run_sweep(spec, out, workers=n, dask=dask, limit=limit, progress=advance, started=started)
    except SweepError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        click.echo(f"interrupted; the finished cells are kept in {out}: run the same command to resume", err=True)
        sys.exit(130)
    parts = [f"{report.total} cells: {report.computed} computed", f"{report.already} already done"]
    if report.adopted:
        parts.append(f"{report.adopted} recovered")
    if report.remaining:
        parts.append(f"{report.remaining} left (--limit)")
    if report.errors:
        parts.append(f"{len(report.errors)} failed")
    click.echo(", ".join(parts) + f" in {report.elapsed_s:.1f} s; results in {out}")
    for cell, error in report.errors[:10]:
        click.echo(f"  {cell.id} ({cell.describe()}): {error}", err=True)
    if report.errors:
        sys.exit(1)


@sweep_group.command("summarize")
@click.argument("out", metavar="DIR", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--confidence", type=click.FloatRange(min=0.5, max=0.999), default=0.95, show_default=True,
              help="Confidence level of the t-intervals.")
def sweep_summarize_cmd(out: Path, as_json: bool, confidence: float) -> None:
    """Per scenario, policy, pool and knobs: the metrics across seeds with confidence intervals,
    and the smallest pool size with zero failures in every seed."""
    from swiotlb.lab.sweep import SweepError
    from swiotlb.lab.sweep_summary import summarize, tables

    try:
        summary = summarize(out, confidence)
    except SweepError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(summary, indent=1, sort_keys=True))
        return
    console = _console()
    for table in tables(summary):
        console.print(table)
