"""``swiotlb trace convert``, ``swiotlb replay`` and ``swiotlb advise`` end to end on a small trace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from swiotlb.lab.cli import main
from tests.traces.tracegen import SMALL_TRACE

LINES = SMALL_TRACE
NVME_MASK = "0000:00:03.0=0xfff"


@pytest.fixture()
def trace(tmp_path: Path) -> Path:
    p = tmp_path / "small.trace.txt"
    p.write_text(LINES)
    (tmp_path / "small.meta.json").write_text(json.dumps({
        "guest": {"kernel_cmdline": "swiotlb=1024,force", "vcpus": 1, "ram_mb": 1024},
        "swiotlb": {"pool_phys_start": "0x6fa00000", "io_tlb_nslabs": 1024, "area_num": 1},
        "workloads": [{"name": "w", "swiotlb_debugfs": {"after": {"io_tlb_used_hiwater": 6}}}],
    }))
    return p


def test_replay_static_matches_the_recorded_addresses(trace: Path) -> None:
    r = CliRunner().invoke(main, ["replay", str(trace), "--mask", NVME_MASK, "--json"])
    assert r.exit_code == 0, r.output
    j = json.loads(r.output)
    for key in ("maps", "bounced_maps", "address_checked", "address_matches", "hiwater_slots",
                "kernel_hiwater_slots", "failures", "lost_events"):
        assert key in j
    assert (j["maps"], j["address_checked"], j["address_matches"]) == (3, 3, 3)
    assert j["hiwater_slots"] == j["kernel_hiwater_slots"] == 6
    assert j["failures"] == {"full": 0, "too_large": 0}


def test_replay_reports_the_first_difference(trace: Path) -> None:
    r = CliRunner().invoke(main, ["replay", str(trace)])  # no NVMe mask: the first map differs
    assert r.exit_code == 0, r.output
    assert "first difference: line 4" in r.output
    assert "kernel 0x6fa00200" in r.output and "model 0x6fa00000" in r.output
    assert "swiotlb_bounced" in r.output  # the context lines


def test_replay_under_other_policies(trace: Path) -> None:
    r = CliRunner().invoke(main, ["replay", str(trace), "-p", "static", "-p", "adaptive", "--json",
                                  "--mask", NVME_MASK])
    assert r.exit_code == 0, r.output
    static, adaptive = json.loads(r.output)
    assert static["policy"] == "static" and adaptive["policy"] == "adaptive"
    assert adaptive["maps"] == 3 and sum(adaptive["failures"].values()) == 0


def test_convert_then_replay_the_parquet(trace: Path, tmp_path: Path) -> None:
    out = tmp_path / "small.parquet"
    r = CliRunner().invoke(main, ["trace", "convert", str(trace), str(out)])
    assert r.exit_code == 0, r.output
    assert "3 mapping rows" in r.output
    r = CliRunner().invoke(main, ["replay", str(out), "--meta", str(tmp_path / "small.meta.json"),
                                  "--mask", NVME_MASK, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["address_matches"] == 3


def test_bad_input_names_file_and_line(tmp_path: Path, trace: Path) -> None:
    bad = tmp_path / "bad.trace.txt"
    bad.write_text(LINES.replace("size=512 FORCE", "size=5x2 FORCE"))
    r = CliRunner().invoke(main, ["replay", str(bad), "--pool", "0x6fa00000:1024"])
    assert r.exit_code == 1
    assert f"{bad}:6:" in r.output
    r = CliRunner().invoke(main, ["replay", str(bad), "--pool", "0x6fa00000:1024", "--skip-bad"])
    assert "skipped 1 malformed line" in r.output
    r = CliRunner().invoke(main, ["replay", str(bad)])  # no meta beside it, no --pool
    assert r.exit_code == 1 and "--pool START:SIZE" in r.output
    r = CliRunner().invoke(main, ["replay", str(trace), "--mask", "nonsense"])
    assert r.exit_code == 1 and "DEVICE=MASK" in r.output
    r = CliRunner().invoke(main, ["replay", str(trace), "--pool", "0x1000:64"])
    assert r.exit_code == 1 and "outside the pool" in r.output


def test_advise_a_trace(trace: Path) -> None:
    r = CliRunner().invoke(main, ["advise", str(trace), "--mask", NVME_MASK, "--json"])
    assert r.exit_code == 0, r.output
    j = json.loads(r.output)
    assert j["min_slots"] == 128  # one segment serves 6 slots
    assert j["swiotlb"] == "swiotlb=128,force"  # its peak use of 6 slots leaves the 25% margin
    assert j["driver"] in ("0000:00:03.0", "0000:00:04.0") and j["peak_inflight_slots"] == 6
    assert set(j["dynamic"]) == {"linux-6.6", "adaptive", "lending", "rfc-v1"}
    assert "Boot with swiotlb=128,force" in j["recommendation"]


def test_lost_events_are_reported_and_limit_the_checks(tmp_path: Path, trace: Path) -> None:
    lost = tmp_path / "lost.trace.txt"
    lost.write_text(LINES.replace("9/9   #P:1", "9/12   #P:1"))  # the ring buffer overwrote 3 events
    r = CliRunner().invoke(main, ["replay", str(lost), "--mask", NVME_MASK, "--json",
                                  "--meta", str(tmp_path / "small.meta.json")])
    assert r.exit_code == 0, r.output
    j = json.loads(r.output)
    assert j["lost_events"] == 3 and j["checks_limited"]
    assert j["address_matches"] == 3  # each surviving decision is still checked
    assert j["workload_hiwater_checked"] == 0  # but no counter comparison holds
    r = CliRunner().invoke(main, ["replay", str(lost), "--mask", NVME_MASK,
                                  "--meta", str(tmp_path / "small.meta.json")])
    assert "lost 3 events" in r.output
    later = tmp_path / "later.trace.txt"  # a LOST line after the workload: its check stands
    later.write_text(LINES + "CPU:0 [LOST 5 EVENTS]\n")
    r = CliRunner().invoke(main, ["replay", str(later), "--mask", NVME_MASK, "--json",
                                  "--meta", str(tmp_path / "small.meta.json")])
    j = json.loads(r.output)
    assert j["lost_events"] == 5 and j["workload_hiwater_checked"] == 1 and j["workload_hiwater_matches"] == 1


def test_replay_without_swiotlb_bounced_events(tmp_path: Path, trace: Path) -> None:
    """A capture without the swiotlb event: a bounce address inside the pool still marks a
    bounced map, allocated at its map line (exact with one CPU)."""
    bare = tmp_path / "bare.trace.txt"
    bare.write_text("".join(x + "\n" for x in LINES.splitlines() if "swiotlb_bounced" not in x))
    r = CliRunner().invoke(main, ["replay", str(bare), "--mask", NVME_MASK, "--json",
                                  "--meta", str(tmp_path / "small.meta.json")])
    assert r.exit_code == 0, r.output
    j = json.loads(r.output)
    assert (j["bounced_maps"], j["address_checked"], j["address_matches"]) == (3, 3, 3)
