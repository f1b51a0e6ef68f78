"""poisson and leak: arrival rates within Poisson bounds, on/off bursts, holds, drops, leaks."""

from __future__ import annotations

import math
import statistics

import pytest

from swiotlb.sim.spec import NS_PER_S, DeviceSpec
from swiotlb.workloads import Leak, Poisson
from swiotlb.workloads.base import Windows
from tests.workloads.fakesim import FakeSim

MS = 1_000_000
US = 1_000


def within_poisson(n: int, expected: float, sds: float = 5.0) -> bool:
    """``n`` is within ``sds`` standard deviations of a Poisson count with mean ``expected``."""
    return abs(n - expected) <= sds * math.sqrt(expected)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rate_and_exponential_gaps(seed: int) -> None:
    sim = FakeSim(seed=seed, end_ns=NS_PER_S // 2)
    sim.add(Poisson("p", "d0", rate_per_s=40_000.0))
    sim.run()
    times = [c[1] for c in sim.of("map")]
    assert within_poisson(len(times), 20_000)
    gaps = [b - a for a, b in zip(times, times[1:])]
    mean = statistics.fmean(gaps)
    assert abs(mean - 25_000) <= 5 * 25_000 / math.sqrt(len(gaps))
    assert abs(statistics.pstdev(gaps) / mean - 1.0) < 0.05  # exponential: CV 1
    assert times == sorted(times)
    assert {c[5] for c in sim.of("map")} == {0, 1, 2, 3}  # spread over the CPUs


def test_hold_defaults_to_service_time_and_is_exponential_when_given() -> None:
    dev = DeviceSpec("d0", latency_ns=20_000, bandwidth=1_000_000_000)
    sim = FakeSim([dev], end_ns=100 * MS, map_ns=500)
    sim.add(Poisson("p", "d0", rate_per_s=5_000.0, bs=((4096, 1), (65536, 1)), direction="from_device"))
    sim.run()
    done = [m for m in sim.maps if m.unmapped_ns is not None]
    assert len(done) > 400 and all(m.unmapped_ns == m.ready_ns + dev.service_ns(m.size) for m in done)
    assert {c[4] for c in sim.of("map")} == {"FROM_DEVICE"}

    sim = FakeSim([dev], end_ns=200 * MS)
    sim.add(Poisson("p", "d0", rate_per_s=10_000.0, hold_ns=300 * US))
    sim.run()
    holds = [m.unmapped_ns - m.ready_ns for m in sim.maps if m.unmapped_ns is not None]
    assert abs(statistics.fmean(holds) - 300 * US) <= 5 * 300 * US / math.sqrt(len(holds))
    # Little's law: about rate x hold = 3 mappings live on average; the peak is well above
    assert 8 < sim.peak_live < 40


def test_zero_hold_unmaps_at_ready() -> None:
    sim = FakeSim(end_ns=10 * MS, map_ns=100)
    sim.add(Poisson("p", "d0", rate_per_s=10_000.0, hold_ns=0))
    sim.run()
    assert all(m.unmapped_ns == m.ready_ns for m in sim.maps if m.unmapped_ns is not None)


def test_on_off_bursts() -> None:
    # off, except 1 ms at 60k/s every 4 ms from 2 ms: 0.25 duty in [2 ms, 400 ms)
    sim = FakeSim(end_ns=400 * MS)
    sim.add(Poisson("p", "d0", rate_per_s=0.0, burst_rate_per_s=60_000.0, burst_ns=MS, period_ns=4 * MS,
                    burst_at_ns=2 * MS))
    sim.run()
    times = [c[1] for c in sim.of("map")]
    assert all(t >= 2 * MS and (t - 2 * MS) % (4 * MS) < MS for t in times)
    assert within_poisson(len(times), 60_000 * 0.398 / 4)


def test_bursts_on_top_of_a_base_rate() -> None:
    sim = FakeSim(end_ns=400 * MS)
    sim.add(Poisson("p", "d0", rate_per_s=5_000.0, burst_rate_per_s=50_000.0, burst_ns=2 * MS, period_ns=10 * MS))
    sim.run()
    times = [c[1] for c in sim.of("map")]
    inside = sum(1 for t in times if t % (10 * MS) < 2 * MS)
    assert within_poisson(inside, 50_000 * 0.4 * 0.2)
    assert within_poisson(len(times) - inside, 5_000 * 0.4 * 0.8)


def test_failures_are_dropped() -> None:
    sim = FakeSim(end_ns=50 * MS, capacity=3 * 4096)
    sim.add(Poisson("p", "d0", rate_per_s=20_000.0, hold_ns=500 * US, start_ns=5 * MS, stop_ns=40 * MS))
    sim.run()
    assert sim.of("fail") and sim.peak_live == 3
    assert len(sim.of("map")) == len(sim.of("unmap"))  # only successes are unmapped
    times = [c[1] for c in sim.calls if c[0] in ("map", "fail")]
    assert min(times) >= 5 * MS and max(times) < 40 * MS


def test_windows() -> None:
    w = Windows(10, 3, 7)
    assert [w.state(t) for t in (0, 10, 12, 13, 16, 17, 20)] == [
        (False, 10), (True, 13), (True, 13), (False, 17), (False, 17), (True, 20), (False, 24)]
    assert list(Windows(10, 3, 7).boundaries(0, 25)) == [(0, False), (10, True), (13, False), (17, True),
                                                         (20, False), (24, True)]
    one = Windows(5, 2, 0)
    assert [one.state(t) for t in (0, 5, 7, 100)] == [(False, 5), (True, 7), (False, None), (False, None)]
    assert list(one.boundaries(6, 100)) == [(6, True), (7, False)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate_per_s": -1.0}, "poisson 'p': rate_per_s must be a finite number >= 0"),
        ({"rate_per_s": 0.0}, "poisson 'p': rate_per_s must be > 0"),
        ({"rate_per_s": float("inf")}, "poisson 'p': rate_per_s must be a finite number"),
        ({"direction": "sideways"}, "poisson 'p': direction must be one of"),
        ({"hold_ns": -1}, "poisson 'p': hold_ns must be >= 0"),
        ({"burst_rate_per_s": 10.0}, "poisson 'p': burst_ns must be > 0 when burst_rate_per_s is set"),
    ],
)
def test_poisson_validation(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"rate_per_s": 10.0} | kwargs
    with pytest.raises(ValueError, match="^" + message):
        Poisson("p", "d0", **args)  # type: ignore[arg-type]


def test_leak_never_unmaps() -> None:
    sim = FakeSim(end_ns=2 * NS_PER_S)
    sim.add(Leak("l", "d0", rate_per_s=2_000.0))
    sim.run()
    assert not sim.of("unmap")
    assert sim.counters["l/leaked"] == len(sim.of("map")) == len(sim.live)
    assert within_poisson(len(sim.live), 4_000)
    assert {(c[3], c[4]) for c in sim.of("map")} == {(4000, "FROM_DEVICE")}


def test_leak_defaults_model_s7_and_failures_are_not_counted() -> None:
    leak = Leak("l", "wifi")
    assert (leak.bs, leak.rate_per_s, leak.direction) == (((4000, 1),), 0.19, "from_device")
    sim = FakeSim(end_ns=NS_PER_S, capacity=10 * 4000)
    sim.add(Leak("l", "d0", rate_per_s=100.0))
    sim.run()
    assert sim.counters["l/leaked"] == 10 and len(sim.of("fail")) > 50
    with pytest.raises(ValueError, match="^leak 'l': rate_per_s must be > 0, got 0"):
        Leak("l", "d0", rate_per_s=0)
