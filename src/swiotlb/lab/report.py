"""``swiotlb report``: a ``swiotlb compare`` results directory as one self-contained HTML page.

The page opens offline: no scripts, no links to fetch, every figure an inline SVG
(:mod:`swiotlb.lab.report_figures`). Per scenario it shows the summary table (the same cells as
the terminal's, best per column marked), the bounce footprint over time, failures and deferrals
over time, pool occupancy and fragmentation over time, the distribution of map cost, and a heat
map per policy of where in its pools the used slots lie. The same results give the same bytes.

Every figure is a ``<figure>`` with an ``id`` and ``data-figure``, ``data-scenario`` (and for
the heat maps ``data-policy``) attributes, so that a test can find each one.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

SCENARIO_FIGURES: tuple[tuple[str, str], ...] = (
    ("footprint", "Bounce footprint: bytes reserved for bouncing (pools, transient pools, per-mapping "
                  "buffers) and bytes of it in use by mappings, sampled on the run's time grid."),
    ("failures", "Failed maps (every cause) and maps deferred to wait for room, counted from the start "
                 "of the run."),
    ("fragmentation", "Pool occupancy and fragmentation: the share of pool slots in use (transient pools "
                      "included), the number of free runs in the standing pools (counted within 128-slot "
                      "segments, as the allocator sees them) and the longest of them. Many runs and a short "
                      "longest run mean a fragmented pool; a mapping needs one run as long as itself."),
    ("map-cost", "Distribution of the modelled CPU time per map (slot work, memory work, copy), from "
                 "log2 buckets; a bucket is drawn as the share of all maps of the run."),
)
"""The per-scenario figures, in page order: ``(kind, caption)``."""

OCCUPANCY_CAPTION = ("Where the used slots lie: the standing pools in address order, cut into equal bins, "
                     "coloured by the share of slots in use at each grid time. Grey is memory the policy did "
                     "not hold at that time (its pools were smaller then).")


class ReportError(click.ClickException):
    """A results directory that cannot be reported on; the message names the path."""


@dataclass(frozen=True)
class Scenario:
    """One scenario's runs, in the order ``compare`` wrote them."""

    ref: str
    title: str
    records: list[dict[str, Any]]

    @property
    def slug(self) -> str:
        return slug(self.ref)

    @property
    def live(self) -> list[dict[str, Any]]:
        return [r for r in self.records if "skipped" not in r]

    @property
    def end_ns(self) -> int:
        return max((int(r["end_ns"]) for r in self.live), default=1)


def slug(text: str) -> str:
    """``text`` as an HTML id fragment."""
    return re.sub(r"[^A-Za-z0-9_]+", "-", text).strip("-") or "x"


# -- loading ---------------------------------------------------------------------------------
def load_records(results_dir: Path) -> list[dict[str, Any]]:
    """The records of ``results_dir/results.json``, checked enough to draw them."""
    if not results_dir.is_dir():
        raise ReportError(f"{results_dir}: not a directory; give the --out directory of swiotlb compare")
    path = results_dir / "results.json"
    try:
        records = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(f"{path}: not found; is {results_dir} the --out directory of swiotlb compare?") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: not a results file ({exc})") from None
    if not isinstance(records, list) or not records:
        raise ReportError(f"{path}: expected a non-empty list of run records")
    for i, r in enumerate(records):
        if not isinstance(r, dict) or not isinstance(r.get("scenario"), str) or not isinstance(r.get("policy"), str):
            raise ReportError(f"{path}: record {i} has no scenario and policy")
        if "skipped" in r:
            continue
        ts = r.get("time_series")
        if (not isinstance(ts, dict) or not isinstance(r.get("end_ns"), int)
                or not all(isinstance(ts.get(k), list) for k in ("t_ns", "reserved_bytes", "in_use_bytes"))):
            raise ReportError(f"{path}: record {i} ({r['scenario']}, {r['policy']}) has no time series")
    return records


def load_occupancy(results_dir: Path) -> dict[tuple[str, str], Any]:
    """``(scenario, policy) -> (grid times x bins) per mille`` from ``occupancy.parquet``; empty
    when the file is absent (results of an older ``compare``)."""
    path = results_dir / "occupancy.parquet"
    if not path.exists():
        return {}
    import numpy as np
    import polars as pl

    try:
        frame = pl.read_parquet(path, columns=["scenario", "policy", "t_ns", "bin", "used_permille"])
    except Exception as exc:  # polars raises several kinds for a bad file
        raise ReportError(f"{path}: not an occupancy file ({exc})") from None
    out: dict[tuple[str, str], Any] = {}
    for (scenario, policy), part in frame.sort(["scenario", "policy", "t_ns", "bin"]).group_by(
            ["scenario", "policy"], maintain_order=True):
        bins = int(part["bin"].max()) + 1  # type: ignore[arg-type]
        values = part["used_permille"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        if len(values) % bins:
            raise ReportError(f"{path}: {scenario} {policy}: {len(values)} values do not fill {bins} bins")
        out[str(scenario), str(policy)] = values.reshape(-1, bins)
    return out


def _titles() -> dict[str, str]:
    from swiotlb.workloads.scenario import builtin_scenarios

    return {spec.ref: spec.title for spec in builtin_scenarios()}


def scenarios(records: Sequence[dict[str, Any]]) -> list[Scenario]:
    """The records grouped by scenario, in first-appearance order, with built-in titles."""
    titles = _titles()
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(r["scenario"], []).append(r)
    return [Scenario(ref, titles.get(ref, ""), rs) for ref, rs in groups.items()]


def figure_ids(records: Sequence[dict[str, Any]], occupancy: set[tuple[str, str]] | None = None) -> list[str]:
    """The ids of every figure the page has, in page order: the per-scenario figures, then a heat
    map per run with an occupancy map (``occupancy`` lists them; None: every live run)."""
    ids = []
    for sc in scenarios(records):
        if not sc.live:
            continue
        ids += [f"{sc.slug}-{kind}" for kind, _ in SCENARIO_FIGURES]
        for r in sc.live:
            if occupancy is None or (sc.ref, r["policy"]) in occupancy:
                ids.append(f"{sc.slug}-occupancy-{slug(r['policy'])}")
    return ids


# -- HTML ------------------------------------------------------------------------------------
_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1180px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2.2em; border-bottom: 1px solid #ccc; padding-bottom: .2em; }
nav li { margin: .1em 0; } .facts { color: #555; }
table.summary { border-collapse: collapse; margin: .8em 0; font-variant-numeric: tabular-nums; }
.table-wrap { overflow-x: auto; }
table.summary th, table.summary td { border: 1px solid #ddd; padding: .25em .55em; text-align: right;
  white-space: nowrap; }
table.summary th:first-child, table.summary td:first-child { text-align: left; }
table.summary thead th { background: #f3f3f3; }
td.best { background: #dff3df; font-weight: 600; } td.skipped { color: #777; text-align: left; white-space: normal; }
figure { margin: 1em 0; } figure svg { display: block; max-width: 100%; height: auto; }
figcaption { color: #555; font-size: .92em; max-width: 60em; }
.heatmaps { display: grid; grid-template-columns: repeat(auto-fill, minmax(500px, 1fr)); gap: 0 1.2em; }
.note { color: #777; font-style: italic; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def summary_table(records: Sequence[dict[str, Any]]) -> str:
    """The scenario's table as HTML: the cells of :func:`swiotlb.lab.compare.table_rows`, the
    best of each column (lower is better) marked with a star and a class."""
    from swiotlb.lab.compare import COLUMNS, table_rows

    head = "".join(f"<th>{_e(h)}</th>" for _, h in COLUMNS)
    rows = []
    for policy, skipped, cells in table_rows(records):
        if skipped is not None:
            rows.append(f'<tr><td>{_e(policy)}</td><td class="skipped" colspan="{len(COLUMNS)}">'
                        f"skipped: {_e(skipped)}</td></tr>")
            continue
        tds = "".join(f'<td class="best" title="best in column">★ {_e(t)}</td>' if best else f"<td>{_e(t)}</td>"
                      for t, best in cells)
        rows.append(f"<tr><td>{_e(policy)}</td>{tds}</tr>")
    return (f'<div class="table-wrap"><table class="summary"><thead><tr><th>policy</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _figure(fig_id: str, kind: str, scenario: str, svg: str, caption: str, policy: str | None = None) -> str:
    data = f' data-policy="{_e(policy)}"' if policy is not None else ""
    return (f'<figure id="{_e(fig_id)}" data-figure="{_e(kind)}" data-scenario="{_e(scenario)}"{data}>\n'
            f"{svg}\n<figcaption>{_e(caption)}</figcaption></figure>")


def _duration(ns: int) -> str:
    from swiotlb.workloads.units import format_duration

    return format_duration(ns)


def scenario_section(sc: Scenario, occupancy: dict[tuple[str, str], Any]) -> str:
    """One scenario's heading, facts, table and figures."""
    from swiotlb.lab import report_figures as rf

    runs = [rf.Run(r["policy"], r, occupancy.get((sc.ref, r["policy"]))) for r in sc.live]
    end = sc.end_ns
    seeds = sorted({str(r.get("seed")) for r in sc.records})
    heading = f"{sc.ref}: {sc.title}" if sc.title else sc.ref
    ran = f"{_duration(end)} simulated, seed {_e(', '.join(seeds))}; " if runs else ""
    parts = [f'<section id="scenario-{sc.slug}">', f"<h2>{_e(heading)}</h2>",
             f'<p class="facts">{ran}{len(sc.live)} of {len(sc.records)} policies ran. Lower is better in every '
             "column; ★ marks each column's best.</p>", summary_table(sc.records)]
    if runs:
        makers = {
            "footprint": lambda: rf.footprint_figure(runs, end),
            "failures": lambda: rf.failures_figure(runs, end),
            "fragmentation": lambda: rf.fragmentation_figure(runs, end),
            "map-cost": lambda: rf.map_cost_figure(runs),
        }
        for kind, caption in SCENARIO_FIGURES:
            fig_id = f"{sc.slug}-{kind}"
            parts.append(_figure(fig_id, kind, sc.ref, rf.to_svg(makers[kind](), fig_id), caption))
        heat = []
        for run in runs:
            total = run.column("total_slots")
            if run.occupancy is None or total is None or run.occupancy.shape[0] != len(total):
                heat.append(f'<p class="note">{_e(run.policy)}: no occupancy map recorded.</p>')
                continue
            fig_id = f"{sc.slug}-occupancy-{slug(run.policy)}"
            svg = rf.to_svg(rf.occupancy_figure(run, end), fig_id)
            heat.append(_figure(fig_id, "occupancy", sc.ref, svg, OCCUPANCY_CAPTION, policy=run.policy))
        parts.append("<h3>Pool occupancy by offset</h3>")
        parts.append('<div class="heatmaps">' + "\n".join(heat) + "</div>")
    parts.append("</section>")
    return "\n".join(parts)


def render(records: Sequence[dict[str, Any]], occupancy: dict[tuple[str, str], Any]) -> str:
    """The whole page."""
    groups = scenarios(records)
    policies = list(dict.fromkeys(r["policy"] for r in records))
    nav = "".join(f'<li><a href="#scenario-{sc.slug}">{_e(sc.ref)}</a>{": " + _e(sc.title) if sc.title else ""}'
                  "</li>" for sc in groups)
    body = "\n".join(scenario_section(sc, occupancy) for sc in groups)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>swiotlb compare report</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        "<h1>swiotlb compare report</h1>\n"
        f'<p class="facts">{len(records)} runs: {len(groups)} scenarios under {_e(", ".join(policies))}. '
        "Every figure is drawn from the run's own records; time series are sampled exactly at 100 "
        "grid times per run. docs/report.md says how to read each figure.</p>\n"
        f"<nav><ul>{nav}</ul></nav>\n{body}\n</body>\n</html>\n"
    )


def build_report(results_dir: Path, out_file: Path) -> Path:
    """Write the report of ``results_dir`` (a ``swiotlb compare --out`` directory) to ``out_file``."""
    results_dir, out_file = Path(results_dir), Path(out_file)
    records = load_records(results_dir)
    page = render(records, load_occupancy(results_dir))
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(page, encoding="utf-8")
    return out_file


@click.command("report")
@click.argument("results_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The HTML file to write (default: RESULTS_DIR/report.html).")
def report_cmd(results_dir: Path, out_file: Path | None) -> None:
    """Write one self-contained HTML report of a `swiotlb compare` results directory."""
    path = build_report(results_dir, out_file or results_dir / "report.html")
    click.echo(f"report: {path}")
