"""The ``swiotlb`` command line."""

from __future__ import annotations

import sys

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


if __name__ == "__main__":  # pragma: no cover
    main()
