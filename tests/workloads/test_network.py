"""net: posted RX rings, refill per packet, refill failures retried, TX bursts and drops."""

from __future__ import annotations

import math

import pytest

from swiotlb.sim.spec import DeviceSpec
from swiotlb.workloads import Net
from tests.workloads.fakesim import FakeSim

MS = 1_000_000
US = 1_000


def test_rings_are_posted_at_start_per_queue() -> None:
    sim = FakeSim(end_ns=MS, cpus=2)
    sim.add(Net("n", "d0", rx_ring=16, queues=3, start_ns=100 * US))
    sim.run()
    maps = sim.of("map")
    assert len(maps) == 48 == len(sim.live)
    assert {c[1] for c in maps} == {100 * US}
    assert {(c[3], c[4]) for c in maps} == {(2048, "FROM_DEVICE")}
    assert [sum(1 for c in maps if c[5] == cpu) for cpu in (0, 1)] == [32, 16]  # queue q on CPU q % cpus


def test_each_packet_unmaps_the_oldest_buffer_and_refills() -> None:
    sim = FakeSim(end_ns=100 * MS)
    sim.add(Net("n", "d0", rx_ring=8, queues=2, rx_pps=50_000.0))
    seen: list[int] = []
    sim.every(97 * US, lambda: seen.append(len(sim.live)), 1)
    sim.run()
    unmaps = sim.of("unmap")
    assert abs(len(unmaps) - 5_000) <= 5 * math.sqrt(5_000)
    assert set(seen) == {16} and sim.peak_live == 16  # unmap before refill: never above the rings
    assert len(sim.of("map")) == 16 + len(unmaps)
    # FIFO per ring: the first unmapped buffers are the first posted ones
    first = {c[6] for c in sim.of("map")[:16]}
    assert {c[5] for c in unmaps[:4]} <= first


def test_refill_failures_leave_the_ring_short_and_are_retried() -> None:
    # the pool refuses every map from 1 ms to 3 ms
    sim = FakeSim(end_ns=6 * MS, rule=lambda s, *_: not MS <= s.now < 3 * MS)
    sim.add(Net("n", "d0", rx_ring=4, rx_pps=2_000_000.0))
    seen: list[tuple[int, int]] = []
    sim.every(10 * US, lambda: seen.append((sim.now, len(sim.live))), 5)
    sim.run()
    failed = sim.counters["n/rx_refill_failed"]
    assert failed == len(sim.of("fail")) > 0
    assert sim.counters["n/rx_dropped"] > 0  # the ring ran dry: later packets found no buffer
    assert {n for t, n in seen if 2 * MS < t < 3 * MS} == {0}
    assert {n for t, n in seen if t > 3.1 * MS} == {4}  # refilled at the next packets


def test_tx_bursts_map_and_unmap_after_service() -> None:
    dev = DeviceSpec("d0", latency_ns=5_000, bandwidth=1_250_000_000)
    sim = FakeSim([dev], end_ns=50 * MS, cpus=4, map_ns=200)
    sim.add(Net("n", "d0", rx_ring=0, tx_pps=80_000.0, tx_burst=4, queues=4))
    sim.run()
    maps = sim.of("map")
    assert {(c[3], c[4]) for c in maps} == {(1500, "TO_DEVICE")}
    per_time: dict[int, int] = {}
    for c in maps:
        per_time[c[1]] = per_time.get(c[1], 0) + 1
    assert set(per_time.values()) == {4}  # whole bursts
    assert abs(len(per_time) - 1_000) <= 5 * math.sqrt(1_000)
    assert {c[5] for c in maps} == {0, 1, 2, 3}
    done = [m for m in sim.maps if m.unmapped_ns is not None]
    assert all(m.unmapped_ns == m.ready_ns + dev.service_ns(1500) for m in done)


def test_tx_failures_are_counted_as_drops() -> None:
    sim = FakeSim(end_ns=10 * MS, capacity=2 * 2048 + 1500)
    sim.add(Net("n", "d0", rx_ring=2, tx_pps=100_000.0, tx_burst=2))
    sim.run()
    assert sim.counters["n/tx_dropped"] == len(sim.of("fail")) > 0
    assert sim.counters["n/rx_refill_failed"] == 0


def test_stop_ends_traffic_but_keeps_the_rings() -> None:
    sim = FakeSim(end_ns=10 * MS)
    sim.add(Net("n", "d0", rx_ring=4, rx_pps=100_000.0, tx_pps=100_000.0, stop_ns=5 * MS))
    sim.run()
    assert max(c[1] for c in sim.calls) < 5 * MS + 20 * US
    assert max(c[1] for c in sim.of("map")) < 5 * MS
    assert len(sim.live) == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rx_ring": -1}, "net 'n': rx_ring must be >= 0"),
        ({"rx_ring": 0, "rx_pps": 5.0}, "net 'n': rx_ring must be >= 1 when rx_pps > 0"),
        ({"queues": 0}, "net 'n': queues must be >= 1"),
        ({"tx_burst": 0}, "net 'n': tx_burst must be >= 1"),
        ({"tx_pps": -2}, "net 'n': tx_pps must be a finite number >= 0"),
        ({"rx_buf": 0}, "net 'n': rx_buf must be >= 1"),
    ],
)
def test_net_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match="^" + message):
        Net("n", "d0", **kwargs)  # type: ignore[arg-type]
