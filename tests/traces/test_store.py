"""Canonical traces survive Parquet and JSONL unchanged; bad files get a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from swiotlb.traces.canonical import from_text
from swiotlb.traces.store import TraceStoreError, load_trace, read_trace, write_trace
from tests.traces.tracegen import SMALL_TRACE

LINES = SMALL_TRACE


@pytest.fixture()
def trace_file(tmp_path: Path) -> Path:
    p = tmp_path / "t.trace.txt"
    p.write_text(LINES)
    return p


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_round_trip(trace_file: Path, tmp_path: Path, suffix: str) -> None:
    t = from_text(trace_file)
    assert len(t) == 3
    out = write_trace(t, tmp_path / f"t{suffix}")
    back = read_trace(out)
    assert [back.row(i) for i in range(len(back))] == [t.row(i) for i in range(len(t))]
    assert back.meta() == t.meta()
    assert load_trace(out).row(2)["unmap_line"] == 10


def test_bad_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(TraceStoreError, match="must end in"):
        write_trace(from_text_dummy(tmp_path), tmp_path / "t.csv")
    bad = tmp_path / "x.jsonl"
    bad.write_text('{"nope": 1}\n')
    with pytest.raises(TraceStoreError, match=r"x\.jsonl:1"):
        read_trace(bad)
    junk = tmp_path / "x.parquet"
    junk.write_bytes(b"not parquet")
    with pytest.raises(TraceStoreError, match=r"x\.parquet"):
        read_trace(junk)
    with pytest.raises(FileNotFoundError):
        load_trace(tmp_path / "missing.parquet")


def from_text_dummy(tmp_path: Path):  # type: ignore[no-untyped-def]
    p = tmp_path / "d.txt"
    p.write_text(LINES)
    return from_text(p)
