"""The real-trace excerpts in tests/data/traces: prefixes of the captures, paired and summed up.

Checked against what each excerpt's meta.json recorded on the guest: per-workload event
counts, failed maps and the debugfs ``io_tlb_used_hiwater`` after each workload (which the
peak slots in flight must equal: the hiwater is reset at each workload's start).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from swiotlb.traces.canonical import CanonicalTrace, from_text
from swiotlb.traces.stats import trace_stats

from tests.conftest import DATA, shared_path

TRACES = DATA / "traces"
EXCERPTS = sorted(p.name[: -len(".trace.txt.gz")] for p in TRACES.glob("*.trace.txt.gz"))
NVME_MASK = {"0000:00:03.0": 0xFFF}
_CACHE: dict[str, tuple[CanonicalTrace, dict[str, Any]]] = {}


def load(name: str) -> tuple[CanonicalTrace, dict[str, Any]]:
    if name not in _CACHE:
        meta = json.loads((TRACES / f"{name}.meta.json").read_text())
        _CACHE[name] = (from_text(TRACES / f"{name}.trace.txt.gz"), meta)
    return _CACHE[name]


def test_excerpts_present_and_small() -> None:
    assert len(EXCERPTS) == 2
    total = sum(p.stat().st_size for p in TRACES.iterdir() if p.is_file())
    assert total < 4_000_000


@pytest.mark.parametrize("name", EXCERPTS)
def test_excerpt_text_matches_its_meta(name: str) -> None:
    meta = json.loads((TRACES / f"{name}.meta.json").read_text())
    text = gzip.decompress((TRACES / f"{name}.trace.txt.gz").read_bytes())
    ex = meta["excerpt"]
    assert hashlib.sha256(text).hexdigest() == ex["text_sha256"]
    assert len(text) == ex["text_bytes"] and text.count(b"\n") == ex["text_lines"]
    assert text.rstrip(b"\n").endswith(f"tracing_mark_write: MARK end {ex['last_workload']}".encode())
    assert meta["workloads"][-1]["name"] == ex["last_workload"]
    for key in ("swiotlb", "guest", "kernel", "tracing"):
        assert key in meta


@pytest.mark.parametrize("name", EXCERPTS)
def test_excerpt_is_a_prefix_of_the_capture(name: str) -> None:
    ex = json.loads((TRACES / f"{name}.meta.json").read_text())["excerpt"]
    full = shared_path("traces", "real", ex["source_trace_file"])
    text = gzip.decompress((TRACES / f"{name}.trace.txt.gz").read_bytes())
    with gzip.open(full, "rb") as fh:
        assert fh.read(len(text)) == text


@pytest.mark.parametrize("name", EXCERPTS)
def test_excerpt_pairs_completely(name: str) -> None:
    tr, meta = load(name)
    assert tr.pairing.to_json() == {
        "unmatched_unmaps": 0, "unmap_size_mismatches": 0, "open_at_end": 0, "orphans": 0,
        "unpaired_map_entries": 0,
    }
    assert tr.info["bad_lines"] == 0 and tr.info["lost_events"] == 0
    assert [w.name for w in tr.workloads] == [w["name"] for w in meta["workloads"]]
    assert all(w.end_line > w.begin_line for w in tr.workloads)


@pytest.mark.parametrize("name", EXCERPTS)
def test_excerpt_stats_match_the_guest(name: str) -> None:
    tr, meta = load(name)
    s = trace_stats(tr, NVME_MASK)
    for w in meta["workloads"]:
        got = s["workloads"][w["name"]]
        counts = w["event_counts"]
        assert got["mappings"] + got["orphan_entries"] == counts.get("swiotlb_bounced", 0), w["name"]
        assert got["map_events"] == counts.get("dma_map_page", 0) + counts.get("dma_map_sg", 0), w["name"]
        assert got["bounced"] == got["mappings"]  # swiotlb=force: everything bounces
        assert got["peak_slots_in_flight"] == w["swiotlb_debugfs"]["after"]["io_tlb_used_hiwater"], w["name"]
    failed = {k: v["failed_maps"] for k, v in s["workloads"].items() if v["failed_maps"]}
    if name.startswith("c_2cpu"):
        assert failed == {"vd_sr1m_qd4": 72, "vd_sw1m_qd4": 77}  # ../shared/traces/real/README.md
        assert set(tr.columns["cpu"]) == {0, 1}
    else:
        assert failed == {}
