"""``bench ab`` and ``bench show`` end to end, with a deterministic fake benchmark.

The fake program reads SWIOTLB_AB_ROUND and SWIOTLB_AB_SIDE (set by the runner) and prints
``value=X`` with X from a distribution seeded by round and side: a machine drift that grows with
the round, B a given factor above A, and in warm-up rounds a value 1000 times too large, so a
warm-up counted by mistake shows in the medians. Arguments make it fail, hang, print garbage or
log its calls in a given round and side.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from swiotlb.lab.bench_ab import ab_cmd, show_cmd
from tests.conftest import DATA

FAKE = r'''
import math, os, random, sys, time
r = int(os.environ["SWIOTLB_AB_ROUND"])
side = os.environ["SWIOTLB_AB_SIDE"]
args = dict(a.split("=", 1) for a in sys.argv[1:])
here = f"{r}{side}"
if "log" in args:
    with open(args["log"], "a") as f:
        f.write(f"run {r} {side}\n")
if args.get("fail") == here:
    print("partial output")
    print("boom: device busy", file=sys.stderr)
    sys.exit(3)
if args.get("garbage") == here:
    print("value=n/a")
    sys.exit(0)
if args.get("sleep") == here:
    time.sleep(30)
rng = random.Random(f"{args.get('seed', 0)}/{r}/{side}")
effect = float(args.get("effect", 0)) if side == "B" else 0.0
drift = 1 + float(args.get("drift", 0)) * max(r, 0)
warm = 1000.0 if r < 0 else 1.0
noise = float(args.get("noise", 0.01))
print(f"value={100 * warm * drift * (1 + effect) * math.exp(rng.gauss(0, noise)):.6f}")
'''

REGEX = r"value=(\S+)"


@pytest.fixture()
def fake(tmp_path: Path) -> str:
    path = tmp_path / "fake.py"
    path.write_text(FAKE)
    return f"{sys.executable} {path}"


def _ab(args: list[str]) -> Result:
    return CliRunner().invoke(ab_cmd, args, catch_exceptions=False)


def _json(result: Result) -> dict[str, Any]:
    doc = json.loads(result.stdout)
    assert isinstance(doc, dict)
    return doc


def test_detects_a_seven_percent_effect_under_drift_and_saves_json(fake: str, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    res = _ab(["--a", f"{fake} drift=0.03", "--b", f"{fake} drift=0.03 effect=0.07", "--regex", REGEX,
               "--metric", "wall", "--rounds", "16", "--out", str(out), "--json", "--resamples", "999"])
    assert res.exit_code == 0, res.output
    doc = _json(res)
    for key in ("rounds", "metric", "median_a", "median_b", "cov_a", "cov_b", "ratio", "ci_low", "ci_high",
                "p_value", "warnings", "rounds_needed", "metrics", "failure"):
        assert key in doc
    assert doc["rounds"] == 16 and doc["metric"] == "wall" and doc["failure"] is None
    m = next(x for x in doc["metrics"] if x["metric"] == f"regex:{REGEX}")
    assert m["ratio"] == pytest.approx(1.07, abs=0.01)
    assert m["ci_low"] < 1.07 < m["ci_high"] and m["ci_low"] > 1.0
    assert m["p_value"] < 0.001
    assert any(w.startswith("drift: the median of A moved +") for w in m["warnings"])
    # Warm-up values are 1000 times too large: none reached the medians.
    assert 100 < m["median_a"] < 200
    saved = json.loads(out.read_text())
    assert saved["schema"] == "swiotlb-bench-ab/1" and saved["result"] == doc
    assert [r["round"] for r in saved["rounds"]] == list(range(1, 17))
    assert {r["order"] for r in saved["rounds"]} == {"AB"}


def test_show_reprints_a_saved_file(fake: str, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    res = _ab(["--a", fake, "--b", f"{fake} effect=0.05", "--regex", REGEX, "-n", "6", "-o", str(out),
               "--resamples", "999"])
    assert res.exit_code == 0, res.output
    assert f"regex:{REGEX}" in res.stdout and "B/A over paired rounds" in res.stdout
    shown = CliRunner().invoke(show_cmd, [str(out)])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout == res.stdout
    as_json = CliRunner().invoke(show_cmd, [str(out), "--json"])
    assert json.loads(as_json.stdout) == json.loads(out.read_text())["result"]


def test_show_rejects_other_files(tmp_path: Path) -> None:
    bad = tmp_path / "other.json"
    bad.write_text('{"a": 1}')
    res = CliRunner().invoke(show_cmd, [str(bad)])
    assert res.exit_code == 1 and "other.json: not a 'swiotlb bench ab' results file" in res.output
    bad.write_text("{not json")
    res = CliRunner().invoke(show_cmd, [str(bad)])
    assert res.exit_code == 1 and "other.json: not a readable JSON file" in res.output


def test_a_failing_command_is_reported_and_earlier_rounds_kept(fake: str, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    args = ["--a", fake, "--b", f"{fake} fail=3B", "--regex", REGEX, "-n", "5", "-o", str(out), "--resamples", "999"]
    res = _ab([*args, "--json"])
    assert res.exit_code == 1
    doc = _json(res)
    assert doc["rounds"] == 2
    f = doc["failure"]
    assert (f["round"], f["side"], f["kind"], f["returncode"]) == (3, "B", "exit", 3)
    assert "partial output" in f["stdout"] and "boom: device busy" in f["stderr"] and "fail=3B" in f["command"]
    assert len(json.loads(out.read_text())["rounds"]) == 2
    text = _ab(args)
    assert text.exit_code == 1
    for needle in ("failed in round 3, side B: exited with status 3", "partial output", "boom: device busy",
                   "kept 2 complete round(s)"):
        assert needle in text.stdout


def test_a_timeout_kills_the_command_and_its_children(fake: str) -> None:
    slow = f'if [ "$SWIOTLB_AB_ROUND" = 2 ]; then sleep 30; fi; {fake}'
    start = time.perf_counter()
    res = _ab(["--a", slow, "--b", fake, "--regex", REGEX, "-n", "4", "--timeout", "2", "--json",
               "-o", "/dev/null"])
    assert time.perf_counter() - start < 15
    assert res.exit_code == 1
    doc = _json(res)
    assert doc["rounds"] == 1
    assert (doc["failure"]["round"], doc["failure"]["side"], doc["failure"]["kind"]) == (2, "A", "timeout")
    assert "timed out after 2 s" in doc["failure"]["message"]


def test_unparsable_output_is_reported_with_output_and_round(fake: str, tmp_path: Path) -> None:
    res = _ab(["--a", f"{fake} garbage=2A", "--b", fake, "--regex", REGEX, "-n", "4", "--json",
               "-o", str(tmp_path / "r.json")])
    assert res.exit_code == 1
    doc = _json(res)
    f = doc["failure"]
    assert doc["rounds"] == 1 and (f["round"], f["side"], f["kind"]) == (2, "A", "metric")
    assert "captured 'n/a', not a number" in f["message"] and "value=n/a" in f["stdout"]


def test_pre_command_runs_before_each_measurement_and_warmups_are_not_counted(fake: str, tmp_path: Path) -> None:
    log = tmp_path / "log"
    res = _ab(["--a", f"{fake} log={log}", "--b", f"{fake} log={log}", "--regex", REGEX, "-n", "3",
               "--warmup", "2", "--pre", f'echo "pre $SWIOTLB_AB_ROUND $SWIOTLB_AB_SIDE" >> {log}', "--json",
               "-o", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    expected = []
    for r in (-2, -1, 1, 2, 3):
        for side in "AB":
            expected += [f"pre {r} {side}", f"run {r} {side}"]
    assert log.read_text().splitlines() == expected
    doc = _json(res)
    assert doc["rounds"] == 3 and doc["warmup"] == 2
    assert doc["median_a"] < 200  # the warm-up's 1000x values are not in it
    saved = json.loads((tmp_path / "r.json").read_text())
    assert [r["round"] for r in saved["rounds"]] == [1, 2, 3]


def test_a_failing_pre_command_stops_the_run(fake: str) -> None:
    res = _ab(["--a", fake, "--b", fake, "--regex", REGEX, "-n", "3", "--pre", "echo nope >&2; exit 4",
               "--json", "-o", "/dev/null"])
    assert res.exit_code == 1
    f = _json(res)["failure"]
    assert (f["round"], f["side"], f["kind"], f["returncode"]) == (-1, "A", "pre", 4) and "nope" in f["stderr"]


def test_random_order_is_seeded_and_followed(fake: str, tmp_path: Path) -> None:
    def orders(seed: int, tag: str) -> list[str]:
        log, out = tmp_path / f"log{tag}", tmp_path / f"r{tag}.json"
        res = _ab(["--a", f"{fake} log={log}", "--b", f"{fake} log={log}", "--regex", REGEX, "-n", "8",
                   "--warmup", "0", "--order", "random", "--seed", str(seed), "-o", str(out), "--json"])
        assert res.exit_code == 0, res.output
        got = [r["order"] for r in json.loads(out.read_text())["rounds"]]
        ran = [line.split()[2] for line in log.read_text().splitlines()]
        assert ran == [side for order in got for side in order]
        return got

    first = orders(5, "1")
    assert set(first) == {"AB", "BA"}
    assert orders(5, "2") == first
    assert orders(6, "3") != first


def test_budget_stops_the_rounds(tmp_path: Path) -> None:
    cmd = "sleep 0.2"
    start = time.perf_counter()
    res = _ab(["--a", cmd, "--b", cmd, "--budget", "1", "--warmup", "0", "--json", "-o", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    doc = _json(res)
    assert doc["metric"] == "wall" and 1 <= doc["rounds"] <= 3
    assert time.perf_counter() - start < 5
    assert doc["median_a"] == pytest.approx(0.2, abs=0.15)


@pytest.mark.parametrize(("args", "needle"), [
    (["--metric", "bogus"], "unknown metric 'bogus'"),
    (["--regex", r"value=\S+"], r"regex 'value=\\S+' has no capture group"),
    (["--metric", "json:jobs[0"], "malformed JSON path 'jobs[0'"),
    (["--metric", "fio:reed.iops"], "unknown fio direction 'reed'"),
    (["--metric", "wall", "--metric", "wall"], "metric 'wall' is given twice"),
])
def test_bad_metrics_fail_before_anything_runs(args: list[str], needle: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    res = CliRunner().invoke(ab_cmd, ["--a", f"touch {marker}", "--b", f"touch {marker}", *args,
                                      "-o", str(tmp_path / "r.json")])
    assert res.exit_code == 2
    assert needle in res.output
    assert not marker.exists() and not (tmp_path / "r.json").exists()


def test_fio_output_through_the_runner(tmp_path: Path) -> None:
    a, b = DATA / "fio" / "randread.json", DATA / "fio" / "two-jobs.json"
    ra = json.loads(a.read_text())["jobs"][0]["read"]["iops"]
    small = json.loads(b.read_text())["jobs"][0]["read"]["iops"]
    res = _ab(["--a", f"cat {a}", "--b", f"cat {b}", "--metric", "fio:read.iops@0", "--metric", "fio:read.clat_p99",
               "-n", "6", "--warmup", "0", "--json", "-o", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    doc = _json(res)
    assert doc["metric"] == "fio:read.iops@0"
    assert doc["ratio"] == pytest.approx(small / ra)
    assert doc["ci_low"] == pytest.approx(small / ra) == doc["ci_high"]  # the same output every round
    res = _ab(["--a", f"cat {a}", "--b", f"cat {b}", "--metric", "fio:read.iops@small", "-n", "3",
               "--warmup", "0", "--json", "-o", str(tmp_path / "r2.json")])
    assert res.exit_code == 1
    f = _json(res)["failure"]
    assert (f["round"], f["side"], f["kind"]) == (1, "A", "metric")
    assert "no job named 'small' (jobs: randread)" in f["message"] and '"fio version"' in f["stdout"]


def test_default_output_file(fake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = _ab(["--a", fake, "--b", fake, "--regex", REGEX, "-n", "2", "--warmup", "0"])
    assert res.exit_code == 0, res.output
    files = list(tmp_path.glob("bench-ab-*.json"))
    assert len(files) == 1 and f"results: {files[0].name}" in res.output
    assert any("only 2 rounds" in w for w in json.loads(files[0].read_text())["result"]["warnings"])


def test_long_output_keeps_its_head_and_tail(tmp_path: Path) -> None:
    noisy = "python3 -c 'print(\"start\"); print(\"x\" * 20000); print(\"the end\")'"
    res = _ab(["--a", noisy, "--b", noisy, "--regex", REGEX, "-n", "2", "--json", "-o", str(tmp_path / "r.json")])
    out = _json(res)["failure"]["stdout"]
    assert out.startswith("start") and out.rstrip().endswith("the end") and "characters left out" in out
    assert len(out) < 7000
