"""The ``swiotlb`` command line, driven through click's runner."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from swiotlb.lab.cli import main
from tests.conftest import DATA

SUBSET = DATA / "vectors"


def _one_case(path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(next(line for line in path.read_text().splitlines() if line.strip()))


def test_vectors_check_passes_on_subset() -> None:
    result = CliRunner().invoke(main, ["vectors", "check", str(SUBSET / "kernel-slots"), str(SUBSET / "kernel-slots-6.12")])
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    passed, failed = last.split(", ")
    assert failed == "0 failed" and int(passed.split()[0]) >= 10


def test_vectors_check_reports_first_mismatch_and_exits_1(tmp_path: Path) -> None:
    case = _one_case(SUBSET / "kernel-slots-6.12" / "tiny.jsonl")
    op = next(o for o in case["ops"] if o["op"] == "map" and o["expect"]["tlb_addr"] is not None)
    op["expect"]["tlb_addr"] += 2048
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(case) + "\n")
    result = CliRunner().invoke(main, ["vectors", "check", str(bad)])
    assert result.exit_code == 1
    assert f"op {case['ops'].index(op)} (map id={op['id']}" in result.output
    assert result.output.strip().endswith("0 passed, 1 failed")


def test_vectors_check_profile_override_changes_the_verdict() -> None:
    path = SUBSET / "kernel-slots" / "tiny.jsonl"
    own = CliRunner().invoke(main, ["vectors", "check", str(path)])
    other = CliRunner().invoke(main, ["vectors", "check", "--profile", "v6.12", str(path)])
    assert own.exit_code == 0
    assert other.exit_code == 1 and "FAIL" in other.output


def test_vectors_check_malformed_file_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "broken.jsonl"
    good = (SUBSET / "kernel-slots" / "tiny.jsonl").read_text().splitlines()[0]
    bad.write_text(good + "\n{not json\n")
    result = CliRunner().invoke(main, ["vectors", "check", str(bad)])
    assert result.exit_code != 0
    assert f"{bad}:2" in result.output


def test_vectors_check_under_the_one_lock_profile_reports_instead_of_crashing() -> None:
    result = CliRunner().invoke(main, ["vectors", "check", "--profile", "v5.15", str(SUBSET / "kernel-slots")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].endswith("failed")
