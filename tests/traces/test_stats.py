"""Trace statistics on a hand-made trace whose every answer is worked out below."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from swiotlb.traces.canonical import CanonicalTrace
from swiotlb.traces.stats import percentile, render_stats, size_bucket, slots_for, trace_stats

from tests.traces.tracegen import ERR, NVME, VIRTIO, Trace

POOL = 0x6FA00000
MASKS = {NVME: 0xFFF}


def test_percentile_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([7], 1) == 7 and percentile([7], 99) == 7
    assert percentile([1, 2, 3, 4], 50) == 2  # rank ceil(2.0) = 2
    assert percentile([1, 2, 3, 4], 51) == 3  # rank ceil(2.04) = 3
    assert percentile([1, 2, 3, 4], 90) == 4
    assert percentile(list(range(1, 101)), 99) == 99
    assert percentile(list(range(1, 101)), 100) == 100
    assert percentile([5, 6], 0) == 5  # at least rank 1


def test_size_bucket_and_slots() -> None:
    assert [size_bucket(s) for s in (0, 1, 2, 3, 4095, 4096, 4097, 262144)] == [0, 1, 2, 2, 2048, 4096, 4096, 262144]
    assert slots_for(4096, 0x20C00, 0xFFF) == 3  # 0x400 offset kept inside the first slot
    assert slots_for(4096, 0x20C00, 0) == 2
    assert slots_for(4096, 0x20C00, 0x1FF) == 2  # 0xc00 & 0x1ff = 0: no offset
    assert slots_for(4096, 0x20D00, 0x1FF) == 3  # 0x100 kept
    assert slots_for(1, 0x7FF, 0xFFF) == 1
    assert slots_for(2, 0x7FF, 0xFFF) == 2
    assert slots_for(2048, 0x800, 0xFFF) == 1  # bit 11 is not part of the sub-slot offset
    assert slots_for(16, -1, 0xFFF) == 1


def made() -> Trace:
    """The trace of the worked example (times in microseconds, CPU 0).

    w1: A virtio 16 B (alloc 10, unmap 30); B nvme 4096 B at buffer offset 0x400 (alloc 20,
    unmap 60; 3 slots with mask 0xfff, 2 without); C nvme sg of 8192 B + 2048 B (allocs 40, 41,
    unmapped together at 140); D virtio 256 KiB that failed (50).
    w2: two orphan nvme bounced lines of 4096 B (90, 91); E virtio 100 B (alloc 100, unmap 130).
    Outside workloads: F, a direct (not bounced) virtio map of 4096 B at 160, never unmapped.
    """
    t = Trace()
    t.mark(0, 5, "MARK begin w1")
    t.bounced(0, 10, VIRTIO, 0x1000, 16)
    t.map_page(0, 11, VIRTIO, POOL, 16, 0x1000)
    t.bounced(0, 20, NVME, 0x20C00, 4096)
    t.map_page(0, 21, NVME, POOL + 0x1C00, 4096, 0x20C00)
    t.unmap_page(0, 30, VIRTIO, POOL, 16)
    t.bounced(0, 40, NVME, 0x30000, 0x2000)
    t.bounced(0, 41, NVME, 0x40800, 0x800)
    t.map_sg(0, 42, NVME, [POOL + 0x4000, POOL + 0x6800], [0x2000, 0x800], [0x30000, 0x40800])
    t.bounced(0, 50, VIRTIO, 0x50000, 262144)
    t.map_page(0, 51, VIRTIO, ERR, 262144, 0x50000)
    t.unmap_page(0, 60, NVME, POOL + 0x1C00, 4096)
    t.mark(0, 70, "MARK end w1")
    t.mark(0, 80, "MARK begin w2")
    t.bounced(0, 90, NVME, 0x90000, 4096)
    t.bounced(0, 91, NVME, 0x91000, 4096)
    t.bounced(0, 100, VIRTIO, 0x60000, 100)
    t.map_page(0, 101, VIRTIO, POOL + 0x7000, 100, 0x60000)
    t.unmap_page(0, 130, VIRTIO, POOL + 0x7000, 100)
    t.unmap_sg(0, 140, NVME, [0x30000, 0x40800])
    t.mark(0, 150, "MARK end w2")
    t.map_page(0, 160, VIRTIO, 0x70000, 4096, 0x70000)
    return t


@pytest.fixture
def trace(tmp_path: Path) -> CanonicalTrace:
    tr = made().canonical(tmp_path)
    assert tr.pairing.orphans == 2 and tr.pairing.open_at_end == 1
    return tr


def test_overall(trace: CanonicalTrace) -> None:
    s = trace_stats(trace, MASKS)
    assert s["rows"] == 9 and s["masks"] == {NVME: "0xfff"}
    o = s["overall"]
    assert o["mappings"] == 7  # A B C0 C1 D E F
    assert o["map_events"] == 6  # the sg map counts once
    assert o["bounced"] == 6 and o["bounce_rate"] == pytest.approx(6 / 7)  # all but F
    assert o["failed_maps"] == 1 and o["orphan_entries"] == 2
    assert o["bytes"] == 16 + 4096 + 8192 + 2048 + 262144 + 100 + 4096
    # sizes [16, 100, 2048, 4096, 4096, 8192, 262144]: p50 rank 4, p90 rank 7, p99 rank 7
    assert o["size"] == {
        "min": 16, "p50": 4096, "p90": 262144, "p99": 262144, "max": 262144,
        "histogram": {16: 1, 64: 1, 2048: 1, 4096: 2, 8192: 1, 262144: 1},
    }
    # in flight: A (16,1) B (4112,4) -A (4096,3) C0 (12288,7) C1 (14336,8) [D failed] -B
    # (10240,5) E (10340,6) -E -C0 -C1 (0,0) F (4096, 0: not bounced)
    assert o["peak_bytes_in_flight"] == 14336
    assert o["peak_slots_in_flight"] == 8
    # lifetimes A 20, B 40, C0 100, C1 99, E 30 µs: sorted [20, 30, 40, 99, 100]
    assert o["lifetime_us"] == {"count": 5, "p50": 40.0, "p90": 100.0, "p99": 100.0, "max": 100.0}
    assert (o["first_ns"], o["last_ns"], o["duration_ns"]) == (10_000, 160_000, 150_000)


def test_slots_depend_on_the_mask(trace: CanonicalTrace) -> None:
    s = trace_stats(trace)  # no masks: B holds 2 slots, not 3
    assert s["overall"]["peak_slots_in_flight"] == 7
    assert s["overall"]["peak_bytes_in_flight"] == 14336
    assert s["masks"] == {}


def test_per_device(trace: CanonicalTrace) -> None:
    s = trace_stats(trace, MASKS)
    assert list(s["devices"]) == [VIRTIO, NVME]  # by name
    v, n = s["devices"][VIRTIO], s["devices"][NVME]
    assert (v["mappings"], v["map_events"], v["bounced"], v["failed_maps"], v["orphan_entries"]) == (4, 4, 3, 1, 0)
    assert v["bounce_rate"] == 0.75
    assert v["size"]["histogram"] == {16: 1, 64: 1, 4096: 1, 262144: 1}
    assert (v["peak_bytes_in_flight"], v["peak_slots_in_flight"]) == (4096, 1)  # F bytes; A or E slot
    assert v["lifetime_us"]["count"] == 2 and v["lifetime_us"]["max"] == 30.0
    assert (n["mappings"], n["map_events"], n["bounced"], n["failed_maps"], n["orphan_entries"]) == (3, 2, 3, 0, 2)
    assert (n["peak_bytes_in_flight"], n["peak_slots_in_flight"]) == (14336, 8)
    assert n["size"] == {"min": 2048, "p50": 4096, "p90": 8192, "p99": 8192, "max": 8192,
                         "histogram": {2048: 1, 4096: 1, 8192: 1}}
    assert n["lifetime_us"] == {"count": 3, "p50": 99.0, "p90": 100.0, "p99": 100.0, "max": 100.0}
    assert (n["first_ns"], n["last_ns"]) == (20_000, 140_000)


def test_per_workload(trace: CanonicalTrace) -> None:
    s = trace_stats(trace, MASKS)
    assert list(s["workloads"]) == ["w1", "w2", ""]
    w1, w2, out = (s["workloads"][k] for k in ("w1", "w2", ""))
    assert (w1["mappings"], w1["map_events"], w1["failed_maps"], w1["orphan_entries"]) == (5, 4, 1, 0)
    assert (w1["peak_bytes_in_flight"], w1["peak_slots_in_flight"]) == (14336, 8)
    assert (w1["first_ns"], w1["last_ns"], w1["duration_ns"]) == (5_000, 70_000, 65_000)  # the markers
    # C was allocated in w1: its lifetime counts there although the unmap is in w2
    assert w1["lifetime_us"] == {"count": 4, "p50": 40.0, "p90": 100.0, "p99": 100.0, "max": 100.0}
    assert (w2["mappings"], w2["orphan_entries"], w2["bounced"], w2["bounce_rate"]) == (1, 2, 1, 1.0)
    assert (w2["peak_bytes_in_flight"], w2["peak_slots_in_flight"]) == (100, 1)
    assert w2["duration_ns"] == 70_000
    assert (out["mappings"], out["bounced"], out["bounce_rate"]) == (1, 0, 0.0)
    assert (out["peak_bytes_in_flight"], out["peak_slots_in_flight"]) == (4096, 0)
    assert out["lifetime_us"] == {"count": 0, "p50": None, "p90": None, "p99": None, "max": None}
    assert (out["first_ns"], out["duration_ns"]) == (160_000, 0)


def test_workload_without_mappings(tmp_path: Path) -> None:
    t = Trace()
    t.mark(0, 1, "MARK begin idle")
    t.mark(0, 9, "MARK end idle")
    s = trace_stats(t.canonical(tmp_path))
    assert s["rows"] == 0
    idle = s["workloads"]["idle"]
    assert idle["mappings"] == 0 and idle["bounce_rate"] is None and idle["duration_ns"] == 8_000
    assert idle["size"] == {"min": None, "p50": None, "p90": None, "p99": None, "max": None, "histogram": {}}
    assert s["overall"]["duration_ns"] is None and s["overall"]["peak_slots_in_flight"] == 0
    assert s["devices"] == {}


def test_render_stats(trace: CanonicalTrace) -> None:
    s = trace_stats(trace, MASKS)
    for stats in (s, json.loads(json.dumps(s))):  # also after a JSON round trip (str keys)
        tables = render_stats(stats)
        assert len(tables) == 2
        console = Console(record=True, width=250)
        for table in tables:
            console.print(table)
        text = console.export_text()
        for word in ("overall", VIRTIO, NVME, "w1", "w2", "(outside workloads)", "85.7%", "256K", "14K", "0.15 ms"):
            assert word in text, word
