"""Metric specs and their parsers, on real fio 3.33 output (tests/data/fio/README.md)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from swiotlb.lab.metrics_parse import (
    FioMetric,
    JsonPathMetric,
    MetricError,
    Output,
    RegexMetric,
    WallMetric,
    fio_value,
    load_json_output,
    parse_json_path,
    parse_metric,
)
from tests.conftest import DATA

FIO = DATA / "fio"


def _text(name: str) -> str:
    return (FIO / name).read_text()


def _doc(name: str) -> Any:
    return json.loads(_text(name))


def _value(spec: str, stdout: str, stderr: str = "", wall: float = 1.0) -> float:
    return parse_metric(spec).extract(Output(stdout, stderr, wall))


def test_the_files_are_real_fio_json() -> None:
    for name in ("randread.json", "randrw.json", "two-jobs.json", "numjobs2.json"):
        doc = _doc(name)
        assert doc["fio version"] == "fio-3.33" and doc["jobs"]


# --- fio: one job -------------------------------------------------------------------------------


def test_fio_read_stats_of_one_job() -> None:
    text, job = _text("randread.json"), _doc("randread.json")["jobs"][0]
    rd = job["read"]
    assert _value("fio:read.iops", text) == pytest.approx(rd["iops"])
    assert _value("fio:read.bw", text) == rd["bw"]
    assert _value("fio:read.bw_bytes", text) == rd["bw_bytes"]
    assert _value("fio:read.io_bytes", text) == rd["io_bytes"]
    assert _value("fio:read.total_ios", text) == rd["total_ios"]
    assert _value("fio:read.clat_mean", text) == pytest.approx(rd["clat_ns"]["mean"])
    assert _value("fio:read.lat_mean", text) == pytest.approx(rd["lat_ns"]["mean"])
    assert _value("fio:read.clat_p99", text) == rd["clat_ns"]["percentile"]["99.000000"]
    assert _value("fio:read.clat_p99.9", text) == rd["clat_ns"]["percentile"]["99.900000"]
    assert _value("fio:read.clat_p50@0", text) == rd["clat_ns"]["percentile"]["50.000000"]
    assert _value("fio:read.clat_p50@randread", text) == rd["clat_ns"]["percentile"]["50.000000"]
    # A read-only job: the total is the read side (write and trim did nothing).
    assert _value("fio:iops", text) == pytest.approx(rd["iops"])
    assert _value("fio:clat_p99.9", text) == rd["clat_ns"]["percentile"]["99.900000"]


def test_fio_read_and_write_are_summed_and_latency_is_weighted_by_ios() -> None:
    text, job = _text("randrw.json"), _doc("randrw.json")["jobs"][0]
    rd, wr = job["read"], job["write"]
    assert rd["iops"] > 0 and wr["iops"] > 0
    assert _value("fio:write.iops", text) == pytest.approx(wr["iops"])
    assert _value("fio:total.iops", text) == pytest.approx(rd["iops"] + wr["iops"])
    assert _value("fio:bw_bytes", text) == rd["bw_bytes"] + wr["bw_bytes"]
    n_r, n_w = rd["clat_ns"]["N"], wr["clat_ns"]["N"]
    mean = (n_r * rd["clat_ns"]["mean"] + n_w * wr["clat_ns"]["mean"]) / (n_r + n_w)
    assert _value("fio:clat_mean", text) == pytest.approx(mean)
    assert _value("fio:write.clat_p95", text) == wr["clat_ns"]["percentile"]["95.000000"]
    # The mixed median lies between the write median (fast, page cache) and the read median.
    p50 = _value("fio:clat_p50", text)
    lo, hi = sorted((rd["clat_ns"]["percentile"]["50.000000"], wr["clat_ns"]["percentile"]["50.000000"]))
    assert lo <= p50 <= hi


# --- fio: several jobs --------------------------------------------------------------------------


def test_fio_two_jobs_summed_and_one_by_one() -> None:
    text, jobs = _text("two-jobs.json"), _doc("two-jobs.json")["jobs"]
    assert [j["jobname"] for j in jobs] == ["small", "large"]
    small, large = jobs[0]["read"], jobs[1]["read"]
    assert _value("fio:read.iops", text) == pytest.approx(small["iops"] + large["iops"])
    assert _value("fio:read.iops@small", text) == pytest.approx(small["iops"])
    assert _value("fio:read.iops@1", text) == pytest.approx(large["iops"])
    assert _value("fio:read.bw@large", text) == large["bw"]
    assert _value("fio:read.clat_p99@large", text) == large["clat_ns"]["percentile"]["99.000000"]
    n_s, n_l = small["clat_ns"]["N"], large["clat_ns"]["N"]
    assert _value("fio:read.clat_mean", text) == pytest.approx(
        (n_s * small["clat_ns"]["mean"] + n_l * large["clat_ns"]["mean"]) / (n_s + n_l))
    # The summed percentile is the mixture's: between the two jobs' own percentiles.
    for pct in ("50.000000", "90.000000", "99.000000"):
        lo, hi = sorted((small["clat_ns"]["percentile"][pct], large["clat_ns"]["percentile"][pct]))
        assert lo <= _value(f"fio:read.clat_p{float(pct):g}", text) <= hi


def test_fio_mixture_of_identical_jobs_is_the_job_itself() -> None:
    doc = _doc("randread.json")
    doc["jobs"].append(json.loads(json.dumps(doc["jobs"][0])))
    table = doc["jobs"][0]["read"]["clat_ns"]["percentile"]
    for key in ("10.000000", "50.000000", "99.000000", "99.900000"):
        assert fio_value(doc, FioMetric.parse(f"read.clat_p{float(key):g}")) == pytest.approx(table[key])


def test_fio_numjobs_clones_share_a_name_and_are_summed() -> None:
    text, jobs = _text("numjobs2.json"), _doc("numjobs2.json")["jobs"]
    assert len(jobs) == 2 and {j["jobname"] for j in jobs} == {"clone"}
    total = jobs[0]["read"]["iops"] + jobs[1]["read"]["iops"]
    assert _value("fio:read.iops@clone", text) == pytest.approx(total)
    assert _value("fio:read.iops@0", text) == pytest.approx(jobs[0]["read"]["iops"])


def test_fio_json_after_a_preamble_line() -> None:
    text = "note: both iodepth >= 1 and synchronous I/O engine are selected\n" + _text("randread.json")
    assert _value("fio:read.iops", text) == pytest.approx(_doc("randread.json")["jobs"][0]["read"]["iops"])


# --- fio: errors name the input -----------------------------------------------------------------


@pytest.mark.parametrize(("spec", "text", "needle"), [
    ("fio:read.iops@nope", "two-jobs.json", "no job named 'nope' (jobs: large, small)"),
    ("fio:read.iops@7", "two-jobs.json", "no job 7 (it has 2 job(s)"),
    ("fio:read.clat_p42", "randread.json", "no 42th percentile"),
    ("fio:read.lat_p99", "randread.json", "no lat_ns.percentile table"),
    ("fio:write.clat_mean", "randread.json", "no completed I/O"),
])
def test_fio_missing_things_are_named(spec: str, text: str, needle: str) -> None:
    with pytest.raises(MetricError) as err:
        _value(spec, _text(text))
    assert needle in str(err.value) and repr(spec) in str(err.value)


def test_fio_job_error_and_non_fio_json() -> None:
    doc = _doc("randread.json")
    doc["jobs"][0]["error"] = 5
    with pytest.raises(MetricError, match="reports error 5"):
        _value("fio:read.iops", json.dumps(doc))
    with pytest.raises(MetricError, match="not fio JSON output"):
        _value("fio:read.iops", '{"a": 1}')
    with pytest.raises(MetricError, match="output is empty"):
        _value("fio:read.iops", "")
    with pytest.raises(MetricError, match="holds no JSON document"):
        _value("fio:read.iops", "fio: failed to open file\n")


@pytest.mark.parametrize(("spec", "needle"), [
    ("fio:reed.iops", "unknown fio direction 'reed'"),
    ("fio:read.iopz", "unknown fio stat 'iopz'"),
    ("fio:read.iops@", "'@' must be followed"),
    ("fio:read.clat_pX", "unknown fio stat 'clat_pX'"),
])
def test_fio_bad_specs(spec: str, needle: str) -> None:
    with pytest.raises(MetricError, match=needle.replace("(", r"\(")):
        parse_metric(spec)


# --- JSON paths -----------------------------------------------------------------------------------


def test_json_path_syntax() -> None:
    assert parse_json_path("$.a.b") == ("a", "b")
    assert parse_json_path("a.b") == ("a", "b")
    assert parse_json_path("jobs[0].read.iops") == ("jobs", 0, "read", "iops")
    assert parse_json_path('$.jobs[0]["job options"].bs') == ("jobs", 0, "job options", "bs")
    assert parse_json_path("$['x.y'][-1]") == ("x.y", -1)


@pytest.mark.parametrize("path", ["", "$", "jobs[", "a..b", "jobs[x]", "a.b[0", ".", "a b", "$$.a", "[0]x"])
def test_malformed_json_paths_are_named(path: str) -> None:
    with pytest.raises(MetricError) as err:
        JsonPathMetric.parse(path)
    assert f"malformed JSON path {path!r}" in str(err.value)


def test_json_path_values_from_fio_output() -> None:
    text, rd = _text("randread.json"), _doc("randread.json")["jobs"][0]["read"]
    assert _value("json:jobs[0].read.iops", text) == rd["iops"]
    assert _value('json:$.jobs[0].read.clat_ns.percentile["99.000000"]', text) == \
        rd["clat_ns"]["percentile"]["99.000000"]
    assert _value('json:jobs[0]["job options"].runtime', text) == 1.0  # fio writes it as the string "1"


@pytest.mark.parametrize(("path", "needle"), [
    ("jobs[3].read.iops", "$.jobs[3] is out of range (the list has 1 items)"),
    ("jobs[0].reed.iops", "no key 'reed' at $.jobs[0].reed (keys: "),
    ("jobs.read", "$.jobs.read looks up a key in a JSON list"),
    ("jobs[0].read[0]", "$.jobs[0].read[0] indexes a JSON dict"),
    ('jobs[0]["job options"].bs', "is the string '4k', not a number"),
    ("jobs[0].read", "is a JSON dict, not a number"),
])
def test_json_path_misses_are_named(path: str, needle: str) -> None:
    with pytest.raises(MetricError) as err:
        _value(f"json:{path}", _text("randread.json"))
    assert needle in str(err.value) and repr(path) in str(err.value)


def test_load_json_output_skips_a_preamble_and_rejects_bad_json() -> None:
    assert load_json_output('warming up\n{"a": [1, 2]}\ntrailing words\n', "x") == {"a": [1, 2]}
    assert load_json_output("[1, 2]", "x") == [1, 2]
    with pytest.raises(MetricError, match="x: the output holds no JSON"):
        load_json_output("{broken\n", "x")


# --- regex and wall --------------------------------------------------------------------------------


def test_regex_takes_the_first_group_of_the_first_match() -> None:
    assert _value(r"regex:value=(\S+)", "value=1.00\nvalue=2.00\n") == 1.0
    assert _value(r"regex:^lat (\d+) ns$", "x\nlat 1234 ns\n") == 1234.0
    assert _value(r"regex:took ([\d.e+-]+)s", "", stderr="took 1.5e-3s") == pytest.approx(0.0015)
    assert RegexMetric.parse(r"(a)|(b)").name == "regex:(a)|(b)"


@pytest.mark.parametrize(("pattern", "needle"), [
    (r"value=\S+", "has no capture group"),
    (r"value=(\S+", "does not compile"),
])
def test_bad_regexes_are_named(pattern: str, needle: str) -> None:
    with pytest.raises(MetricError) as err:
        parse_metric(f"regex:{pattern}")
    assert needle in str(err.value) and repr(pattern) in str(err.value)


def test_regex_output_problems_are_named() -> None:
    with pytest.raises(MetricError, match=r"regex 'value=\(\\\\S\+\)' matches nothing"):
        _value(r"regex:value=(\S+)", "nothing here")
    with pytest.raises(MetricError, match="captured 'abc', not a number"):
        _value(r"regex:value=(\S+)", "value=abc")
    with pytest.raises(MetricError, match="first group took part in no match"):
        _value(r"regex:(x)|(y)", "y")


def test_wall_and_unknown_metrics() -> None:
    assert parse_metric("wall") == WallMetric()
    assert _value("wall", "", wall=2.5) == 2.5
    for spec in ("walltime", "iops", "foo:bar", "regex:", "json:"):
        with pytest.raises(MetricError) as err:
            parse_metric(spec)
        assert f"unknown metric {spec!r}" in str(err.value)


def test_mixture_percentile_matches_a_pooled_sample() -> None:
    """The mixture rule against the truth: two jobs' percentile tables made from known samples;
    the mixture's percentile is close to the pooled sample's."""
    rng = np.random.default_rng(3)
    a, b = rng.lognormal(10, 0.3, 20000), rng.lognormal(11, 0.2, 5000)
    pcts = [1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.5, 99.9]

    def job(name: str, x: np.ndarray) -> dict[str, Any]:
        table = {f"{p:.6f}": float(np.percentile(x, p)) for p in pcts}
        clat = {"N": len(x), "mean": float(x.mean()), "percentile": table}
        return {"jobname": name, "error": 0, "read": {"clat_ns": clat}}

    doc = {"jobs": [job("a", a), job("b", b)]}
    pooled = np.concatenate([a, b])
    for p in (50, 90, 99):
        got = fio_value(doc, FioMetric.parse(f"read.clat_p{p}"))
        assert got == pytest.approx(np.percentile(pooled, p), rel=0.03)
