"""Pairing bounced lines, maps and unmaps into canonical rows, on small hand-written traces."""

from __future__ import annotations

from pathlib import Path

from swiotlb.traces.canonical import COLUMNS, build
from swiotlb.traces.events import TraceEvent, parse_event

from tests.traces.tracegen import ERR, NVME, VIRTIO, XHCI, Trace, rows_by

POOL = 0x6FA00000


def test_page_map_with_its_bounced_line(tmp_path: Path) -> None:
    t = Trace()
    b = t.bounced(0, 10, VIRTIO, 0x11F960F8, 16)
    m = t.map_page(0, 12, VIRTIO, POOL, 16, 0x11F960F8)
    u = t.unmap_page(0, 20, VIRTIO, POOL, 16)
    tr = t.canonical(tmp_path)
    assert len(tr) == 1
    row = tr.row(0)
    assert set(row) == set(COLUMNS)
    assert row == {
        "alloc_line": b, "alloc_ns": 10_000, "cpu": 0, "map_line": m, "map_ns": 12_000, "size": 16,
        "phys_addr": 0x11F960F8, "dma_addr": POOL, "unmap_line": u, "unmap_ns": 20_000, "unmap_cpu": 0,
        "group": m, "entry": 0, "kind": "page", "device": VIRTIO, "dir": "TO_DEVICE", "workload": "",
        "bounced": True, "failed": False,
    }
    assert tr.devices == [VIRTIO]
    assert tr.pairing.to_json() == {
        "unmatched_unmaps": 0, "unmap_size_mismatches": 0, "open_at_end": 0, "orphans": 0,
        "unpaired_map_entries": 0,
    }
    assert tr.info["events"] == 3


def test_interrupt_map_between_bounced_and_map_line(tmp_path: Path) -> None:
    """Same CPU, same device, same buffer and size: the inner map takes the latest bounced line."""
    t = Trace()
    outer_b = t.bounced(0, 10, NVME, 0x5000, 4096)
    inner_b = t.bounced(0, 11, NVME, 0x5000, 4096)  # an interrupt maps the same buffer
    inner_m = t.map_page(0, 12, NVME, POOL + 0x2000, 4096, 0x5000)
    outer_m = t.map_page(0, 13, NVME, POOL, 4096, 0x5000)
    t.unmap_page(0, 20, NVME, POOL, 4096)
    t.unmap_page(0, 21, NVME, POOL + 0x2000, 4096)
    tr = t.canonical(tmp_path)
    rows = rows_by(tr, "map_line")
    assert rows[inner_m]["alloc_line"] == inner_b and rows[inner_m]["dma_addr"] == POOL + 0x2000
    assert rows[outer_m]["alloc_line"] == outer_b and rows[outer_m]["dma_addr"] == POOL
    # rows come in allocation order: the outer map's row first though its map line is later
    assert list(tr.columns["alloc_line"]) == [outer_b, inner_b]
    assert tr.pairing.orphans == 0 and tr.pairing.open_at_end == 0


def test_interrupt_with_other_buffer_between(tmp_path: Path) -> None:
    t = Trace()
    outer_b = t.bounced(0, 10, VIRTIO, 0x7000, 16)
    inner_b = t.bounced(0, 11, VIRTIO, 0x8000, 48)
    inner_m = t.map_page(0, 12, VIRTIO, POOL + 0x800, 48, 0x8000)
    outer_m = t.map_page(0, 13, VIRTIO, POOL, 16, 0x7000)
    tr = t.canonical(tmp_path)
    rows = rows_by(tr, "map_line")
    assert (rows[inner_m]["alloc_line"], rows[outer_m]["alloc_line"]) == (inner_b, outer_b)
    assert tr.pairing.open_at_end == 2


def test_two_cpus_interleaved(tmp_path: Path) -> None:
    """Identical bounced lines on two CPUs pair with the map on their own CPU."""
    t = Trace()
    b0 = t.bounced(0, 10, VIRTIO, 0x9000, 4096)
    b1 = t.bounced(1, 11, VIRTIO, 0x9000, 4096)
    m1 = t.map_page(1, 12, VIRTIO, POOL + 0x1000, 4096, 0x9000)
    m0 = t.map_page(0, 13, VIRTIO, POOL, 4096, 0x9000)
    u0 = t.unmap_page(1, 20, VIRTIO, POOL, 4096)  # unmapped on the other CPU (completion)
    u1 = t.unmap_page(0, 21, VIRTIO, POOL + 0x1000, 4096)
    tr = t.canonical(tmp_path)
    rows = rows_by(tr, "alloc_line")
    assert rows[b0]["map_line"] == m0 and rows[b0]["cpu"] == 0 and rows[b0]["dma_addr"] == POOL
    assert rows[b1]["map_line"] == m1 and rows[b1]["cpu"] == 1 and rows[b1]["dma_addr"] == POOL + 0x1000
    assert (rows[b0]["unmap_line"], rows[b0]["unmap_cpu"]) == (u0, 1)
    assert (rows[b1]["unmap_line"], rows[b1]["unmap_cpu"]) == (u1, 0)
    assert tr.pairing.unmatched_unmaps == 0


def test_sg_map_and_unmap_pair_by_phys_list_fifo(tmp_path: Path) -> None:
    t = Trace()
    phys = [0x125F5000, 0x12A00000]
    sizes = [0xB000, 0x33000]
    first_b = [t.bounced(0, 10 + i, NVME, p, s) for i, (p, s) in enumerate(zip(phys, sizes))]
    first = t.map_sg(0, 15, NVME, [POOL, POOL + 0xB000], sizes, phys)
    second_b = [t.bounced(0, 20 + i, NVME, p, s) for i, (p, s) in enumerate(zip(phys, sizes))]
    second = t.map_sg(0, 25, NVME, [POOL + 0x40000, POOL + 0x4B000], sizes, phys)
    other = t.unmap_sg(0, 28, NVME, [phys[1], phys[0]])  # another list (order matters): no pair
    u1 = t.unmap_sg(0, 30, NVME, phys)
    u2 = t.unmap_sg(0, 40, NVME, phys)
    tr = t.canonical(tmp_path)
    assert len(tr) == 4
    rows = rows_by(tr, "alloc_line")
    for i in range(2):
        r1, r2 = rows[first_b[i]], rows[second_b[i]]
        assert (r1["kind"], r1["group"], r1["entry"], r1["map_line"]) == ("sg", first, i, first)
        assert (r2["kind"], r2["group"], r2["entry"], r2["map_line"]) == ("sg", second, i, second)
        assert (r1["size"], r1["phys_addr"]) == (sizes[i], phys[i])
        assert r1["unmap_line"] == u1 and r2["unmap_line"] == u2  # first in, first out
        assert r1["bounced"] and not r1["failed"]
    assert rows[first_b[1]]["dma_addr"] == POOL + 0xB000
    assert tr.pairing.unmatched_unmaps == 1 and other > 0


def test_sg_entry_order_with_repeated_buffer(tmp_path: Path) -> None:
    """One bounced line per entry, in entry order, even when two entries look alike."""
    t = Trace()
    b = [t.bounced(0, 10 + i, XHCI, 0x4000, 512) for i in range(3)]
    m = t.map_sg(0, 20, XHCI, [POOL, POOL + 0x800, POOL + 0x1000], [512] * 3, [0x4000] * 3)
    tr = t.canonical(tmp_path)
    assert [tr.value("alloc_line", i) for i in range(3)] == b
    assert [tr.value("entry", i) for i in range(3)] == [0, 1, 2]
    assert [tr.value("dma_addr", i) for i in range(3)] == [POOL, POOL + 0x800, POOL + 0x1000]
    assert all(tr.value("map_line", i) == m for i in range(3))


def test_failed_map_has_no_unmap(tmp_path: Path) -> None:
    t = Trace()
    b = t.bounced(1, 10, VIRTIO, 0x26923000, 262144)
    m = t.map_page(1, 11, VIRTIO, ERR, 262144, 0x26923000, "FROM_DEVICE")
    tr = t.canonical(tmp_path)
    row = tr.row(0)
    assert (row["alloc_line"], row["map_line"], row["cpu"]) == (b, m, 1)
    assert row["failed"] and row["bounced"] and row["kind"] == "page"
    assert (row["dma_addr"], row["unmap_line"], row["unmap_ns"], row["unmap_cpu"]) == (-1, -1, -1, -1)
    assert tr.pairing.open_at_end == 0 and tr.pairing.orphans == 0
    # an unmap of the error address does not pair with the failed map
    t.unmap_page(1, 12, VIRTIO, (1 << 64) - 1, 262144)
    assert t.canonical(tmp_path, "t2.txt").pairing.unmatched_unmaps == 1


def test_orphan_bounced_lines_of_a_failed_sg_map(tmp_path: Path) -> None:
    t = Trace()
    t.mark(0, 1, "MARK begin nvme_sr1m_qd4")
    orphans = [t.bounced(1, 10 + i, NVME, 0x20000 + 0x1000 * i, 0x1000) for i in range(3)]
    # the block layer retries: this time the map succeeds (same buffers)
    ok = [t.bounced(1, 20 + i, NVME, 0x20000 + 0x1000 * i, 0x1000) for i in range(3)]
    m = t.map_sg(1, 30, NVME, [POOL + 0x1000 * i for i in range(3)], [0x1000] * 3,
                 [0x20000 + 0x1000 * i for i in range(3)])
    t.mark(0, 40, "MARK end nvme_sr1m_qd4")
    tr = t.canonical(tmp_path)
    assert tr.pairing.orphans == 3 and len(tr) == 6
    rows = rows_by(tr, "alloc_line")
    for line in orphans:
        r = rows[line]
        assert r["kind"] == "orphan" and r["failed"] and r["bounced"]
        assert (r["map_line"], r["dma_addr"], r["unmap_line"], r["group"]) == (-1, -1, -1, -1)
        assert r["workload"] == "nvme_sr1m_qd4" and r["cpu"] == 1
    for line in ok:
        assert rows[line]["kind"] == "sg" and rows[line]["map_line"] == m
    assert list(tr.columns["alloc_line"]) == orphans + ok  # sorted by allocation line
    assert tr.pairing.open_at_end == 1  # the sg map was never unmapped


def test_markers_give_workloads(tmp_path: Path) -> None:
    t = Trace()
    before = t.bounced(0, 1, VIRTIO, 0x1000, 16)
    t.map_page(0, 2, VIRTIO, POOL, 16, 0x1000)
    b1 = t.mark(0, 10, "MARK begin w1")
    in_w1 = t.bounced(0, 11, VIRTIO, 0x2000, 16)
    t.map_page(0, 12, VIRTIO, POOL + 0x800, 16, 0x2000)
    e1 = t.mark(0, 13, "MARK end w1")
    between = t.bounced(0, 14, VIRTIO, 0x3000, 16)
    t.map_page(0, 15, VIRTIO, POOL + 0x1000, 16, 0x3000)
    b2 = t.mark(0, 20, "begin w2")  # "MARK " is optional
    in_w2 = t.bounced(0, 21, VIRTIO, 0x4000, 16)
    t.map_page(0, 22, VIRTIO, POOL + 0x1800, 16, 0x4000)
    t.mark(0, 23, "some other note")
    tr = t.canonical(tmp_path)
    wl = {int(r["alloc_line"]): r["workload"] for r in tr.rows()}
    assert wl == {before: "", in_w1: "w1", between: "", in_w2: "w2"}
    assert [w.to_json() for w in tr.workloads] == [
        {"name": "w1", "begin_line": b1, "begin_ns": 10_000, "end_line": e1, "end_ns": 13_000},
        {"name": "w2", "begin_line": b2, "begin_ns": 20_000, "end_line": -1, "end_ns": -1},
    ]
    assert tr.meta()["workloads"][0]["name"] == "w1"


def test_unmatched_unmaps_and_size_mismatch(tmp_path: Path) -> None:
    t = Trace()
    t.unmap_page(0, 1, VIRTIO, POOL, 16)  # nothing open
    t.unmap_sg(0, 2, NVME, [0x1000])  # nothing open
    t.bounced(0, 3, VIRTIO, 0x1000, 16)
    t.map_page(0, 4, VIRTIO, POOL, 16, 0x1000)
    t.unmap_page(0, 5, NVME, POOL, 16)  # same address, other device
    u = t.unmap_page(0, 6, VIRTIO, POOL, 48)  # pairs, but the size differs
    t.unmap_page(0, 7, VIRTIO, POOL, 16)  # already closed
    tr = t.canonical(tmp_path)
    assert tr.pairing.unmatched_unmaps == 4
    assert tr.pairing.unmap_size_mismatches == 1
    assert tr.value("unmap_line", 0) == u


def test_direct_map_is_not_bounced(tmp_path: Path) -> None:
    t = Trace()
    direct = t.map_page(0, 1, VIRTIO, 0x11F96000, 4096, 0x11F96000)  # dma == phys: no bounce
    t.unmap_page(0, 2, VIRTIO, 0x11F96000, 4096)
    lost = t.map_page(0, 3, VIRTIO, POOL, 4096, 0x12000)  # bounce address, bounced line missing
    sg = t.map_sg(0, 4, NVME, [0x30000, 0x40000], [0x1000, 0x1000], [0x30000, 0x40000])
    tr = t.canonical(tmp_path)
    rows = rows_by(tr, "map_line")
    d = rows[direct]
    assert not d["bounced"] and not d["failed"] and d["alloc_line"] == direct and d["unmap_line"] == direct + 1
    assert not rows[lost]["bounced"] and rows[lost]["alloc_line"] == lost
    assert [r["bounced"] for r in tr.rows() if r["map_line"] == sg] == [False, False]
    assert tr.pairing.unpaired_map_entries == 1  # only the map whose address was a bounce


def test_build_from_events_equals_from_text(tmp_path: Path) -> None:
    t = Trace()
    t.bounced(0, 1, VIRTIO, 0x1000, 16)
    t.map_page(0, 2, VIRTIO, POOL, 16, 0x1000)
    t.unmap_page(0, 3, VIRTIO, POOL, 16)
    events = [parse_event(line, i) for i, line in enumerate(t.lines, 1)]
    tr = build([e for e in events if isinstance(e, TraceEvent)])
    assert list(tr.rows()) == list(t.canonical(tmp_path).rows())
