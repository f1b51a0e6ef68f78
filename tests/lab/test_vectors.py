"""Replay of the kernel golden vectors (``swiotlb.lab.vectors``).

The subset in ``tests/data/vectors`` always runs, with the fast and the literal search. The
full sets under ``../shared`` run when that directory is there (skipped with a message
otherwise): every family with the fast search, the smaller families with the literal one
too (the literal search needs ~150 s for ``long`` alone, ~30 s for the other families).
"""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import DATA, shared_path

from swiotlb.lab.vectors import (
    CaseResult,
    VectorFormatError,
    check_paths,
    iter_cases,
    list_sha256,
    replay_case,
)

SUBSET = DATA / "vectors"
SETS = ("kernel-slots", "kernel-slots-6.12")
FAMILIES = ("tiny", "medium", "align", "boundary", "multipool", "edge", "long")
# Case counts of the public sets (the tables in the shared READMEs).
FULL_COUNTS = {
    "kernel-slots": {"tiny": 18, "medium": 22, "align": 18, "boundary": 12, "multipool": 9,
                     "edge": 8, "long": 4},
    "kernel-slots-6.12": {"tiny": 18, "medium": 22, "align": 20, "boundary": 12,
                          "multipool": 12, "edge": 9, "long": 4},
}
LITERAL_FAMILIES = ("tiny", "edge", "boundary")
SUBSET_FILES = sorted(SUBSET.glob("*/*.jsonl"))


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def _failures(results: list[CaseResult]) -> list[str]:
    return [f"{r.source} {r.name}: {r.mismatch}" for r in results if not r.passed]


def _first_case(path: Path) -> dict[str, Any]:
    return next(iter_cases([path]))[1]


# -- the subset ----------------------------------------------------------------------------


def test_subset_is_present() -> None:
    names = {_id(p) for p in SUBSET_FILES}
    for set_name in SETS:
        for family in FAMILIES[:-1]:  # long is never in the subset
            assert f"{set_name}/{family}" in names


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "literal"])
@pytest.mark.parametrize("path", SUBSET_FILES, ids=_id)
def test_subset_replays(path: Path, fast: bool) -> None:
    results = list(check_paths([path], fast=fast))
    assert results, f"{path}: no cases"
    assert _failures(results) == []
    assert all(r.source.startswith(f"{path}:") for r in results)


def test_subset_covers_the_required_corners() -> None:
    cases = {_id(p): [c for _, c in iter_cases([p])] for p in SUBSET_FILES}
    assert any(len(c["pools"]) > 1 for c in cases["kernel-slots-6.12/multipool"])
    assert any(len(c["pools"]) > 1 for c in cases["kernel-slots/multipool"])
    for set_name in SETS:
        assert any(c["device"]["seg_boundary_mask"] == 0xFFFF for c in cases[f"{set_name}/boundary"])
        assert any("-wrap-" in c["name"] for c in cases[f"{set_name}/edge"])
    assert any(
        op.get("expect", {}).get("pad_slots", 0)
        for c in cases["kernel-slots-6.12/align"] for op in c["ops"]
    )
    size = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file())
    assert size < 5 * 1024 * 1024


def test_subset_is_reproducible_from_shared() -> None:
    """The subset is exactly what make_subset.py selects from ../shared today."""
    shared = shared_path("vectors")
    spec = importlib.util.spec_from_file_location("make_subset", DATA / "make_subset.py")
    assert spec is not None and spec.loader is not None
    make_subset = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_subset)
    for set_name in SETS:
        for src in sorted((shared / set_name).glob("*.jsonl")):
            if src.name in make_subset.SKIP:
                assert not (SUBSET / set_name / src.name).exists()
                continue
            lines, _ = make_subset.select(set_name, src)
            assert (SUBSET / set_name / src.name).read_bytes() == b"".join(lines), src.name
            full = set(src.read_bytes().splitlines(keepends=True))
            assert all(line in full for line in lines)  # whole, unedited kernel cases


# -- the full shared sets ------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("set_name", SETS)
def test_full_set_fast(set_name: str, family: str) -> None:
    path = shared_path("vectors", set_name, f"{family}.jsonl")
    results = list(check_paths([path], fast=True))
    assert len(results) == FULL_COUNTS[set_name][family]
    assert _failures(results) == []


@pytest.mark.parametrize("family", LITERAL_FAMILIES)
@pytest.mark.parametrize("set_name", SETS)
def test_full_set_literal(set_name: str, family: str) -> None:
    path = shared_path("vectors", set_name, f"{family}.jsonl")
    results = list(check_paths([path], fast=False))
    assert len(results) == FULL_COUNTS[set_name][family]
    assert _failures(results) == []


# -- mismatches are reported ---------------------------------------------------------------


@pytest.fixture
def case_612() -> dict[str, Any]:
    return _first_case(SUBSET / "kernel-slots-6.12" / "tiny.jsonl")


def test_corrupted_tlb_addr_names_the_op(case_612: dict[str, Any]) -> None:
    assert replay_case(case_612).passed
    bad = copy.deepcopy(case_612)
    k, op = next((k, op) for k, op in enumerate(bad["ops"])
                 if op["op"] == "map" and op["expect"]["tlb_addr"] is not None and k > 3)
    want = op["expect"]["tlb_addr"]
    op["expect"]["tlb_addr"] = want + 2048
    res = replay_case(bad, source="x.jsonl:7")
    assert not res.passed and res.ops == k and res.source == "x.jsonl:7"
    assert res.mismatch is not None
    assert res.mismatch.startswith(f"op {k} (map id={op['id']} cpu={op['cpu']} ")
    assert f"expected tlb_addr={want + 2048:#x}" in res.mismatch
    assert f"got tlb_addr={want:#x}" in res.mismatch


def test_corrupted_failure_expectation(case_612: dict[str, Any]) -> None:
    bad = copy.deepcopy(case_612)
    k, op = next((k, op) for k, op in enumerate(bad["ops"]) if op["op"] == "map")
    op["expect"] = {"tlb_addr": None, "pool": None, "index": None}
    res = replay_case(bad)
    assert res.mismatch is not None and res.mismatch.startswith(f"op {k} ")
    assert "expected failure, got tlb_addr=" in res.mismatch


@pytest.mark.parametrize("field", ["used", "index", "list", "list_sha256"])
def test_corrupted_final_state(case_612: dict[str, Any], field: str) -> None:
    bad = copy.deepcopy(case_612)
    final = bad["final"]["pools"][0]
    if field in ("used", "index"):
        final[field][0] += 1
    elif field == "list":
        final["list"][5] = 200
    else:
        final["list_sha256"] = list_sha256([0])
    res = replay_case(bad)
    assert not res.passed and res.mismatch is not None
    assert res.mismatch.startswith("final pool 0: ")
    assert field in res.mismatch


def test_unmap_of_unknown_id_is_a_mismatch(case_612: dict[str, Any]) -> None:
    bad = copy.deepcopy(case_612)
    bad["ops"].insert(0, {"op": "unmap", "id": 10_000})
    res = replay_case(bad)
    assert res.mismatch == "op 0 (unmap id=10000): no live mapping with that id"


# -- malformed input -----------------------------------------------------------------------


def _write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_malformed_json_names_file_and_line(tmp_path: Path, case_612: dict[str, Any]) -> None:
    path = _write(tmp_path, json.dumps(case_612), "", '{"name": "x", "ops": [')
    with pytest.raises(VectorFormatError, match=rf"^{path}:3: not valid JSON"):
        list(iter_cases([path]))
    with pytest.raises(VectorFormatError, match=rf"{path}:3"):
        list(check_paths([path]))


def test_not_a_case_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "[1, 2, 3]")
    with pytest.raises(VectorFormatError, match=rf"^{path}:1: not a vector case"):
        list(iter_cases([path]))


def test_malformed_case_and_unknown_op(tmp_path: Path, case_612: dict[str, Any]) -> None:
    no_device = {k: v for k, v in case_612.items() if k != "device"}
    path = _write(tmp_path, json.dumps(no_device))
    with pytest.raises(VectorFormatError, match=rf"{path}:1: malformed case"):
        list(check_paths([path]))
    odd = copy.deepcopy(case_612)
    odd["ops"][0]["op"] = "frobnicate"
    with pytest.raises(VectorFormatError, match="op 0 has unknown kind 'frobnicate'"):
        replay_case(odd)


def test_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        list(iter_cases([tmp_path / "nope.jsonl"]))
    with pytest.raises(FileNotFoundError):
        list(iter_cases([tmp_path]))  # a directory without *.jsonl


# -- the profile matters -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("set_name", "own", "other"), [("kernel-slots", "v6.6", "v6.12"), ("kernel-slots-6.12", "v6.12", "v6.6")]
)
def test_profile_override(set_name: str, own: str, other: str) -> None:
    paths = sorted((SUBSET / set_name).glob("*.jsonl"))
    assert _failures(list(check_paths(paths, own))) == []
    wrong = list(check_paths(paths, other))
    failed = [r for r in wrong if not r.passed]
    assert failed, f"every {set_name} case also passes under {other}: the profile is not used"
    assert len(failed) > len(wrong) // 2  # mostly fail
