"""``swiotlb report`` and ``compare --report``: every figure, labelled axes, best marked, errors,
byte-identical output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from swiotlb.lab.cli import main
from swiotlb.lab.compare import COLUMNS, table_rows
from swiotlb.lab.report import ReportError, build_report, figure_ids, load_occupancy, summary_table
from tests.conftest import REPO

FIGURE = re.compile(r'<figure id="([^"]+)" data-figure="([^"]+)" data-scenario="([^"]+)"'
                    r'(?: data-policy="([^"]+)")?>\n(<svg.*?</svg>)\n<figcaption>', re.S)


def records(results: Path) -> list[dict]:  # type: ignore[type-arg]
    data: list[dict] = json.loads((results / "results.json").read_text())  # type: ignore[type-arg]
    return data


def figures(page: str) -> dict[str, tuple[str, str, str | None, str]]:
    return {m[1]: (m[2], m[3], m[4], m[5]) for m in FIGURE.finditer(page)}


def texts(svg: str) -> str:
    """The text of an SVG's labels (``svg.fonttype`` none keeps them as <text>)."""
    return " ".join(re.findall(r"<text[^>]*>([^<]*)</text>", svg))


def test_every_expected_figure_is_drawn(report_dir: Path) -> None:
    page = (report_dir / "report.html").read_text()
    recs = records(report_dir)
    got = figures(page)
    expected = figure_ids(recs)
    assert list(got) == expected  # in page order, nothing more and nothing less
    kinds = {"footprint", "failures", "fragmentation", "map-cost"}
    for scenario in ("report-mini", "S4"):
        assert {k for k, s, _, _ in got.values() if s == scenario} == kinds | {"occupancy"}
        policies = {p for k, s, p, _ in got.values() if s == scenario and k == "occupancy"}
        assert policies == {r["policy"] for r in recs if r["scenario"] == scenario and "skipped" not in r}
    for _, _, _, svg in got.values():
        assert 'viewBox="' in svg and "<path" in svg


def test_axes_say_what_and_in_which_unit(report_dir: Path) -> None:
    got = figures((report_dir / "report.html").read_text())
    labels = {
        "footprint": ["time (ms)", "reserved for bouncing", "in use by mappings"],
        "failures": ["time (ms)", "maps", "failed maps (all causes), cumulative", "deferred maps, cumulative"],
        "fragmentation": ["time (ms)", "% of slots", "runs", "KiB"],
        "map-cost": ["modelled CPU time per map (ns, log scale)", "% of maps", "1 µs"],
        "occupancy": ["time (ms)", "offset in the pools (MiB)", "slots in use (%)"],
    }
    for fig_id, (kind, _, _, svg) in got.items():
        text = texts(svg)
        for label in labels[kind]:
            assert label in text, (fig_id, label)
        if kind == "footprint":
            assert re.search(r"\b(KiB|MiB|GiB)\b", text), fig_id
        if kind != "map-cost":
            assert "policy" in text or kind == "occupancy", fig_id  # the legend


def test_the_plots_are_of_the_runs_data(report_dir: Path) -> None:
    """Each policy's line is in the legend, and the heat map is a real image of the right run."""
    got = figures((report_dir / "report.html").read_text())
    for r in records(report_dir):
        if r["scenario"] != "report-mini":
            continue
        for kind in ("footprint", "failures", "fragmentation", "map-cost"):
            assert r["policy"] in texts(got[f"report-mini-{kind}"][3])
        heat = got[f"report-mini-occupancy-{r['policy'].replace('.', '-')}"][3]
        assert "<image" in heat and "data:image/png;base64," in heat


def test_the_summary_marks_each_columns_best(report_dir: Path) -> None:
    page = (report_dir / "report.html").read_text()
    recs = [r for r in records(report_dir) if r["scenario"] == "report-mini"]
    table = summary_table(recs)
    rows = table_rows(recs)
    assert table.count('class="best"') == sum(best for _, _, cells in rows for _, best in cells) > 0
    for _, heading in COLUMNS:
        assert f"<th>{heading}</th>" in table
    assert table in page
    static = next(cells for policy, _, cells in rows if policy == "static")
    assert static[0] == (f"{sum(recs[0]['failures'].values()):,}", False)  # static fails; others do not
    assert '<td class="best" title="best in column">★ 0</td>' in table


def test_a_skipped_run_is_a_row_of_its_own(tmp_path: Path) -> None:
    skipped = {"scenario": "x", "policy": "lending", "seed": 1, "skipped": "no pool to lend"}
    table = summary_table([skipped])
    assert 'colspan="13">skipped: no pool to lend</td>' in table
    (tmp_path / "results.json").write_text(json.dumps([skipped]))
    page = build_report(tmp_path, tmp_path / "report.html").read_text()
    assert figure_ids([skipped]) == [] and "<figure" not in page and "0 of 1 policies ran" in page


def test_same_results_same_bytes(report_dir: Path, tmp_path: Path) -> None:
    """Twice in this process, and once in another with another hash seed."""
    first = build_report(report_dir, tmp_path / "a.html").read_bytes()
    assert build_report(report_dir, tmp_path / "b.html").read_bytes() == first
    assert first == (report_dir / "report.html").read_bytes()
    env = dict(os.environ, PYTHONHASHSEED="12345")
    code = ("import sys; from pathlib import Path; from swiotlb.lab.report import build_report; "
            "build_report(Path(sys.argv[1]), Path(sys.argv[2]))")
    subprocess.run([sys.executable, "-c", code, str(report_dir), str(tmp_path / "c.html")], env=env, check=True,
                   cwd=REPO)
    assert (tmp_path / "c.html").read_bytes() == first


def test_the_page_needs_nothing_from_outside(report_dir: Path) -> None:
    page = (report_dir / "report.html").read_text()
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert set(re.findall(r"https?://[\w.-]+", page)) == {"http://www.w3.org"}  # SVG namespaces only
    assert not re.search(r'(src|href)="(https?:|//|file:)', page)
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))  # many inline SVGs, no id shared


def test_without_occupancy_maps_the_rest_still_draws(report_dir: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "results.json").write_text((report_dir / "results.json").read_text())
    page = build_report(bare, bare / "report.html").read_text()
    assert list(figures(page)) == figure_ids(records(bare), occupancy=set())
    assert "no occupancy map recorded" in page
    assert set(load_occupancy(report_dir)) == {(r["scenario"], r["policy"]) for r in records(report_dir)
                                                if "skipped" not in r}


def test_results_from_before_the_sampled_series_still_draw(report_dir: Path, tmp_path: Path) -> None:
    old = []
    for r in records(report_dir):
        r = {k: v for k, v in r.items() if k != "map_ns_hist"}
        r["time_series"] = {k: r["time_series"][k] for k in ("step_ns", "t_ns", "reserved_bytes", "in_use_bytes")}
        old.append(r)
    (tmp_path / "results.json").write_text(json.dumps(old))
    page = build_report(tmp_path, tmp_path / "report.html").read_text()
    got = figures(page)
    assert list(got) == figure_ids(old, occupancy=set())
    assert "not recorded" in texts(got["S4-failures"][3]) and "not recorded" in texts(got["S4-map-cost"][3])
    assert "MiB" in texts(got["S4-footprint"][3])


@pytest.mark.parametrize("content, message", [
    (None, "results.json: not found"),
    ("{not json", "results.json: not a results file"),
    ("{}", "expected a non-empty list"),
    ("[]", "expected a non-empty list"),
    ('[{"policy": "static"}]', "record 0 has no scenario and policy"),
    ('[{"scenario": "S1", "policy": "static", "end_ns": 5}]', "record 0 (S1, static) has no time series"),
])
def test_a_bad_results_directory_is_a_clear_error(tmp_path: Path, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / "results.json").write_text(content)
    with pytest.raises(ReportError, match=re.escape(message)) as info:
        build_report(tmp_path, tmp_path / "report.html")
    assert str(tmp_path) in info.value.message
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 1 and f"Error: {tmp_path}" in result.output and message in result.output
    assert not (tmp_path / "report.html").exists()


def test_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["report", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and f"{tmp_path / 'nowhere'}: not a directory" in result.output


def test_a_bad_occupancy_file_is_a_clear_error(report_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text((report_dir / "results.json").read_text())
    (tmp_path / "occupancy.parquet").write_text("not parquet")
    with pytest.raises(ReportError, match="occupancy.parquet: not an occupancy file"):
        build_report(tmp_path, tmp_path / "report.html")


def test_report_command_writes_where_asked(report_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["report", str(report_dir), "-o", str(tmp_path / "x" / "r.html")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x" / "r.html").read_bytes() == (report_dir / "report.html").read_bytes()
    assert f"report: {tmp_path / 'x' / 'r.html'}" in result.output


def test_compare_report_writes_the_page_beside_the_results(tmp_path: Path) -> None:
    from tests.lab.conftest import REPORT_SCENARIO

    toml = tmp_path / "mini.toml"
    toml.write_text(REPORT_SCENARIO)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["compare", str(toml), "-p", "static", "-p", "adaptive", "--duration", "5ms",
                                       "--out", str(out), "-j", "1", "--report"])
    assert result.exit_code == 0, result.output
    assert str(out / "report.html") in result.output and str(out / "occupancy.parquet") in result.output
    page = (out / "report.html").read_text()
    assert list(figures(page)) == figure_ids(records(out))
    assert "occupancy" not in records(out)[0]  # the maps live in occupancy.parquet only
