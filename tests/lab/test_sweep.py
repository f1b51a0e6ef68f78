"""``swiotlb sweep``: the file format, cells and ids, local and Dask runs, resume, summaries."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from swiotlb.lab.sweep import (
    CELLS_DIR,
    MANIFEST,
    SweepError,
    load_results,
    load_sweep,
    parse_sweep,
    pool_label,
    run_sweep,
    with_pool,
)
from swiotlb.lab.sweep_cli import sweep_group
from swiotlb.lab.sweep_summary import interval, summarize

# S14 for 100 ms: a 128 MiB static pool fails (256 maps "full" in both seeds), 256 MiB does not;
# linux-6.6 grows and never fails. Each cell takes about 0.2 s.
TINY = """
[sweep]
scenarios = ["S14"]
policies = ["static", "linux-6.6"]
pool_sizes = ["128M", "256M"]
seeds = {count = 2}
duration = "100ms"
"""


def write(tmp_path: Path, text: str, name: str = "sw.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- the file ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "key", "expected"), [
    ("x = 1\n[sweep]\nscenarios = ['S6']\n", "x", "unknown key"),
    ("[knobs.adaptive]\ngrowth_factor = 2.0\n", "sweep", "missing; expected a [sweep] table"),
    ("[sweep]\npolicies = ['static']\n", "sweep.scenarios", "missing"),
    ("[sweep]\nscenarios = ['S6']\nfoo = 1\n", "sweep.foo", "unknown key; valid keys: name, scenarios"),
    ("[sweep]\nscenarios = []\n", "sweep.scenarios", "expected a non-empty list"),
    ("[sweep]\nscenarios = ['S99']\n", "sweep.scenarios[0]", "no built-in scenario"),
    ("[sweep]\nscenarios = ['S6', 'idle-embedded']\n", "sweep.scenarios[1]", "repeats sweep.scenarios[0]"),
    ("[sweep]\nscenarios = ['S6']\npolicies = ['static', 'foo']\n", "sweep.policies[1]", "unknown policy 'foo'"),
    ("[sweep]\nscenarios = ['S6']\npool_sizes = ['17K']\n", "sweep.pool_sizes[0]", "whole number of 2 KiB slots"),
    ("[sweep]\nscenarios = ['S6']\npool_sizes = ['lots']\n", "sweep.pool_sizes[0]", "expected a size"),
    ("[sweep]\nscenarios = ['S6']\npool_sizes = [0]\n", "sweep.pool_sizes[0]", "positive number of slots"),
    ("[sweep]\nscenarios = ['S6']\npool_sizes = ['16M', 8192]\n", "sweep.pool_sizes[1]", "repeats"),
    ("[sweep]\nscenarios = ['S6']\nseeds = [0, -1]\n", "sweep.seeds[1]", "expected an integer >= 0"),
    ("[sweep]\nscenarios = ['S6']\nseeds = {count = 0}\n", "sweep.seeds.count", "expected an integer >= 1"),
    ("[sweep]\nscenarios = ['S6']\nseeds = {n = 3}\n", "sweep.seeds.n", "unknown key"),
    ("[sweep]\nscenarios = ['S6']\nduration = '1.5ns'\n", "sweep.duration", "whole number of nanoseconds"),
    ("[sweep]\nscenarios = ['S6']\nduration = '10'\n", "sweep.duration", "expected a duration"),
    ("[sweep]\nscenarios = ['S6']\npolicies = ['static']\n[knobs.adaptive]\ngrowth_factor = 2.0\n",
     "knobs.adaptive", "not in sweep.policies"),
    ("[sweep]\nscenarios = ['S6']\n[knobs.adaptive]\ngrowth = 2.0\n", "knobs.adaptive.growth",
     "has no such knob; knobs: initial_slabs"),
    ("[sweep]\nscenarios = ['S6']\n[knobs.adaptive]\ngrowth_factor = [2.0, 'x']\n",
     "knobs.adaptive.growth_factor[1]", "expected a number, got 'x'"),
    ("[sweep]\nscenarios = ['S6']\n[knobs.adaptive]\nidle = ['1s', '1.5ns']\n", "knobs.adaptive.idle[1]",
     "whole number of nanoseconds"),
    ("[sweep]\nscenarios = ['S6']\n[knobs.adaptive]\nhigh_watermark = [0.5, 2.0]\n", "knobs.adaptive",
     "with scenario S6 and high_watermark=2.0: "),
    ("[sweep]\nscenarios = ['S6'\n", "", "not valid TOML"),
])
def test_a_bad_file_names_the_file_the_key_and_the_need(tmp_path: Path, text: str, key: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SweepError) as info:
        load_sweep(path)
    message = str(info.value)
    assert message.startswith(f"{path}: " + (f"{key}: " if key else "")), message
    assert expected in message, message
    result = CliRunner().invoke(sweep_group, [str(path), "--dry-run"])
    assert result.exit_code == 1 and expected in result.output


def test_cells_are_the_product_and_knob_axes_apply_to_their_policy(tmp_path: Path) -> None:
    spec = load_sweep(write(tmp_path, """
[sweep]
scenarios = ["S6", "S14"]
policies = ["static", "adaptive"]
pool_sizes = ["default", "16M", 16384]
seeds = [0, 5, 7]
duration = "200ms"
[knobs.adaptive]
growth_factor = [2.0, 3.0]
idle = "10s"
"""))
    # static: 2 scenarios x 3 pools x 3 seeds; adaptive: the same x 2 growth factors
    assert len(spec.cells) == 2 * 3 * 3 + 2 * 3 * 2 * 3
    assert len({c.id for c in spec.cells}) == len(spec.cells)
    static = [c for c in spec.cells if c.policy == "static"]
    adaptive = [c for c in spec.cells if c.policy == "adaptive"]
    assert all(c.knobs == () for c in static)
    assert {c.knobs for c in adaptive} == {(("growth_factor", g), ("idle_ns", 10_000_000_000)) for g in (2.0, 3.0)}
    assert {c.pool_slots for c in spec.cells} == {None, 8192, 16384}
    assert {c.pool_label for c in spec.cells} == {"default", "16M", "32M"}
    assert {c.duration_ns for c in spec.cells} == {200_000_000}
    assert {c.seed for c in spec.cells} == {0, 5, 7}
    assert all(len(c.id) == 20 and int(c.id, 16) >= 0 for c in spec.cells)


def test_ids_depend_on_the_parameters_not_on_their_spelling_or_order(tmp_path: Path) -> None:
    a = load_sweep(write(tmp_path, TINY, "a.toml"))
    b = load_sweep(write(tmp_path, """
[sweep]
scenarios = ["throttle-vs-net"]
policies = ["linux-6.6", "static"]
pool_sizes = [131072, 65536]
seeds = [1, 0]
duration_ns = 100000000
""", "b.toml"))
    assert a.hash == b.hash and {c.id for c in a.cells} == {c.id for c in b.cells}
    c = load_sweep(write(tmp_path, TINY.replace('"100ms"', '"101ms"'), "c.toml"))
    assert not {x.id for x in c.cells} & {x.id for x in a.cells} and c.hash != a.hash


def test_a_scenario_file_is_found_beside_the_sweep_and_its_text_is_in_the_id(tmp_path: Path) -> None:
    scen = tmp_path / "sub" / "mine.toml"
    scen.parent.mkdir()
    body = """
name = "mine"
duration = "50ms"
policies = ["static"]
[machine]
ram = "1G"
cpus = 2
cmdline = "swiotlb=2048,force"
[[device]]
name = "vda"
[[workload]]
kind = "fio"
name = "j"
device = "vda"
"""
    scen.write_text(body)
    sweep = write(tmp_path / "sub", '[sweep]\nscenarios = ["mine.toml"]\n')
    first = load_sweep(sweep)
    assert [c.scenario for c in first.cells] == ["mine"] and first.cells[0].seed == 1
    scen.write_text(body.replace('"50ms"', '"60ms"'))
    assert load_sweep(sweep).cells[0].id != first.cells[0].id


def test_with_pool_keeps_areas_and_force() -> None:
    assert with_pool("", 4096) == "swiotlb=4096"
    assert with_pool("swiotlb=force", 4096) == "swiotlb=4096,force"
    assert with_pool("quiet swiotlb=32768,1,force mem=4G", 8192) == "quiet mem=4G swiotlb=8192,1,force"
    assert pool_label(8192) == "16M" and pool_label(None) == "default" and pool_label(1) == "2K"


# -- running -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny sweep in two worker processes (through the command line)."""
    tmp = tmp_path_factory.mktemp("sweep")
    spec = write(tmp, TINY, "tiny.toml")
    out = tmp / "local"
    result = CliRunner().invoke(sweep_group, [str(spec), "--out", str(out), "-j", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "8 cells: 8 computed, 0 already done" in result.output
    return spec, out


def test_local_pool_and_dask_localcluster_give_identical_results(local_run: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("distributed", reason="dask[distributed] is part of the test extra")
    spec, local = local_run
    out = tmp_path / "dask"
    result = CliRunner().invoke(sweep_group, [str(spec), "--out", str(out), "--dask", "local", "-j", "2", "-q"])
    assert result.exit_code == 0, result.output
    a, b = load_results(local), load_results(out)
    assert a.height == b.height == 8
    assert a.equals(b)  # every column: parameters, metrics, the records' canonical JSON
    assert a["record_sha256"].to_list() == b["record_sha256"].to_list()
    assert sorted(a["cell_id"].to_list()) == a["cell_id"].to_list()


def test_a_partial_run_resumes_and_a_finished_one_recomputes_nothing(local_run: tuple[Path, Path],
                                                                       tmp_path: Path) -> None:
    spec_path, local = local_run
    spec = load_sweep(spec_path)
    out = tmp_path / "resume"
    first = run_sweep(spec, out, workers=1, limit=3)
    assert (first.computed, first.already, first.remaining) == (3, 0, 5)
    db = sqlite3.connect(out / MANIFEST)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert dict(db.execute("SELECT status, COUNT(*) FROM cells GROUP BY status").fetchall()) == {"done": 3, "pending": 5}
    db.close()
    assert len(list((out / CELLS_DIR).glob("*.parquet"))) == 3
    # a crash between the rename and the manifest's commit: the file is adopted, not recomputed;
    # a crash during a write leaves a temporary file, which is removed
    db = sqlite3.connect(out / MANIFEST)
    done = db.execute("SELECT id FROM cells WHERE status='done' ORDER BY seq").fetchone()[0]
    db.execute("UPDATE cells SET status='pending' WHERE id=?", (done,))
    db.commit()
    db.close()
    stray = out / CELLS_DIR / ".x.parquet.123.tmp"
    stray.write_bytes(b"partial")
    seen: list[str] = []
    second = run_sweep(spec, out, workers=1, progress=lambda cell, kind: seen.append(cell.id))
    assert (second.computed, second.already, second.adopted, second.remaining) == (5, 2, 1, 0)
    assert done not in seen and len(seen) == 5 and not stray.exists()
    third = CliRunner().invoke(sweep_group, [str(spec_path), "--out", str(out), "-q"])
    assert third.exit_code == 0 and "8 cells: 0 computed, 8 already done" in third.output
    # one process, in another order, gives the same rows as two processes
    assert load_results(out).equals(load_results(local))


def test_another_sweep_into_the_same_directory_is_refused(local_run: tuple[Path, Path], tmp_path: Path) -> None:
    _, local = local_run
    other = write(tmp_path, TINY.replace("seeds = {count = 2}", "seeds = [0]"))
    result = CliRunner().invoke(sweep_group, [str(other), "--out", str(local), "-q"])
    assert result.exit_code == 1
    assert "holds another sweep" in result.output and "use another --out" in result.output


NO_POOL = """
name = "no-pool"
duration = "10ms"
policies = ["static", "lending"]
[machine]
ram = "1G"
cpus = 2
[[device]]
name = "vda"
[[workload]]
kind = "fio"
name = "j"
device = "vda"
"""


def test_a_policy_the_machine_cannot_have_is_a_skipped_cell(tmp_path: Path) -> None:
    write(tmp_path, NO_POOL, "no-pool.toml")  # 1 GiB x86 without swiotlb=force: no pool to lend from
    spec = load_sweep(write(tmp_path, '[sweep]\nscenarios = ["no-pool.toml"]\npolicies = ["lending"]\n'))
    report = run_sweep(spec, tmp_path / "out", workers=1)
    assert report.computed == 1 and not report.errors
    frame = load_results(tmp_path / "out")
    assert frame["skipped"][0] and frame["boot_pool_slots"][0] is None
    summary = summarize(tmp_path / "out")
    assert summary["groups"][0]["skipped"] and summary["smallest_zero_failure_pool"][0]["skipped"]


# -- summaries -----------------------------------------------------------------------------------
def test_interval_is_a_t_interval() -> None:
    got = interval([1.0, 2.0, 3.0, 4.0], 0.95)
    assert got["mean"] == 2.5 and got["n"] == 4
    assert got["ci_low"] == pytest.approx(2.5 - 3.182446 * 1.290994 / 2, rel=1e-5)
    assert got["ci_high"] == pytest.approx(2.5 + 3.182446 * 1.290994 / 2, rel=1e-5)
    assert interval([7.0], 0.95)["ci_low"] is None


def test_summarize_gives_intervals_and_the_smallest_pool_without_failures(local_run: tuple[Path, Path]) -> None:
    _, out = local_run
    result = CliRunner().invoke(sweep_group, ["summarize", str(out), "--json", "--confidence", "0.9"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["confidence"] == 0.9 and summary["cells"] == {"total": 8, "done": 8, "pending": 0, "error": 0}
    assert len(summary["groups"]) == 4
    for g in summary["groups"]:
        assert g["seeds"] == [0, 1]
        for metric, stats in g["metrics"].items():
            assert stats["n"] == 2
            assert stats["ci_low"] <= stats["mean"] <= stats["ci_high"], (g["policy"], metric, stats)
    static_128 = next(g for g in summary["groups"] if g["policy"] == "static" and g["pool"] == "128M")
    assert static_128["metrics"]["failures"]["min"] > 0
    assert static_128["boot_pool_slots"] == 65536
    smallest = {s["policy"]: s for s in summary["smallest_zero_failure_pool"]}
    assert smallest["static"]["pool"] == "256M" and smallest["static"]["pool_slots"] == 131072
    assert smallest["linux-6.6"]["pool"] == "128M"
    assert [t["pool"] for t in smallest["static"]["tried"]] == ["128M", "256M"]
    table = CliRunner().invoke(sweep_group, ["summarize", str(out)])
    assert table.exit_code == 0 and "smallest pool with zero failures" in table.output and "256M" in table.output


def test_summarize_without_a_pool_size_that_works_says_none(local_run: tuple[Path, Path], tmp_path: Path) -> None:
    spec = load_sweep(write(tmp_path, TINY.replace('["128M", "256M"]', '["128M"]').replace(
        '["static", "linux-6.6"]', '["static"]').replace("{count = 2}", "[0]")))
    out = tmp_path / "out"
    run_sweep(spec, out, workers=1)
    (s,) = summarize(out)["smallest_zero_failure_pool"]
    assert s["pool"] == "none" and s["pool_slots"] is None and s["tried"][0]["max_failures"] > 0


def test_the_group_reads_a_spec_or_a_subcommand(tmp_path: Path) -> None:
    runner = CliRunner()
    help_text = runner.invoke(sweep_group, ["--help"])
    assert help_text.exit_code == 0 and "summarize" in help_text.output and "SPEC.toml" in help_text.output
    spec = write(tmp_path, TINY)
    dry = runner.invoke(sweep_group, [str(spec), "--dry-run"])
    assert dry.exit_code == 0 and "8 cells" in dry.output
    assert runner.invoke(sweep_group, ["run", str(spec), "--dry-run"]).output == dry.output
    missing = runner.invoke(sweep_group, ["summarize", str(tmp_path)])
    assert missing.exit_code == 1 and "not a sweep directory" in missing.output


def test_the_rows_have_typed_columns(local_run: tuple[Path, Path]) -> None:
    _, out = local_run
    frame = load_results(out)
    assert frame.schema["pool_slots"] == pl.Int64 and frame.schema["failures"] == pl.Int64
    assert frame.schema["knobs"] == pl.String and set(frame["knobs"]) == {"{}"}
    row = frame.row(0, named=True)
    record = json.loads(row["record_json"])
    assert record["policy"] == row["policy"] and record["seed"] == row["seed"]
    assert row["failures"] == sum(record["failures"].values())


def test_parse_sweep_takes_a_document() -> None:
    spec = parse_sweep({"sweep": {"scenarios": ["S6"], "policies": ["static"]}}, "doc")
    assert spec.name == "doc" and len(spec.cells) == 1 and spec.cells[0].pool_slots is None


# -- knob axes and a cluster started apart from the sweep -----------------------------------------
KNOBS = """
[sweep]
scenarios = ["S14"]
policies = ["adaptive"]
seeds = [3]
duration = "100ms"
[knobs.adaptive]
high_watermark = [0.5, 0.9]
"""


def test_a_knob_axis_runs_each_value_as_a_scenario_file_would(tmp_path: Path) -> None:
    from importlib import resources

    from swiotlb.lab.runner import run_scenario
    from swiotlb.workloads.scenario import parse_text

    out = tmp_path / "out"
    result = CliRunner().invoke(sweep_group, [str(write(tmp_path, KNOBS)), "--out", str(out), "-j", "1", "-q"])
    assert result.exit_code == 0, result.output
    frame = load_results(out).sort("knob_high_watermark")
    assert frame["knob_high_watermark"].to_list() == [0.5, 0.9]
    records = [json.loads(r) for r in frame["record_json"]]
    assert records[0] != records[1]  # the knob reaches the policy and changes the run
    text = resources.files("swiotlb.workloads.scenarios").joinpath("S14-throttle-vs-net.toml").read_text()
    assert "[policy.adaptive]" not in text  # the cell's knob table is the only one
    for value, record in zip((0.5, 0.9), records):
        spec = parse_text(f"{text}\n[policy.adaptive]\nhigh_watermark = {value}\n", "S14+knob.toml")
        direct = run_scenario(spec, "adaptive", seed=3, duration_ns=100_000_000)
        assert json.dumps(direct, sort_keys=True) == json.dumps(record, sort_keys=True)


def test_a_sweep_runs_on_a_dask_scheduler_at_a_tcp_address(local_run: tuple[Path, Path], tmp_path: Path) -> None:
    """``--dask tcp://HOST:PORT``: a scheduler and a worker started as their own processes, as on a
    cluster; the results equal the local pool's."""
    import socket
    import subprocess
    import sys

    pytest.importorskip("distributed", reason="dask[distributed] is part of the test extra")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                  "--port", str(port), "--dashboard-address", ":0", "--no-show"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                               "--nworkers", "2", "--no-dashboard"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        spec, local = local_run
        out = tmp_path / "remote"
        result = CliRunner().invoke(sweep_group, [str(spec), "--out", str(out), "--dask", address, "-q"])
        assert result.exit_code == 0, result.output
        assert load_results(out).equals(load_results(local))
    finally:
        for proc in (worker, scheduler):
            proc.terminate()
        for proc in (worker, scheduler):
            proc.wait(timeout=30)


def test_an_unreachable_scheduler_is_a_clear_error(local_run: tuple[Path, Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    import swiotlb.lab.sweep as sweep

    pytest.importorskip("distributed", reason="dask[distributed] is part of the test extra")
    monkeypatch.setattr(sweep, "DASK_CONNECT_TIMEOUT_S", 2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    spec, _ = local_run
    address = f"tcp://127.0.0.1:{port}"
    result = CliRunner().invoke(sweep_group, [str(spec), "--out", str(tmp_path / "x"), "--dask", address, "-q"])
    assert result.exit_code == 1
    assert f"--dask: {address}: cannot reach a Dask scheduler" in result.output
