"""fio: closed-loop depth, read/write mix, requeue on failure, bursts, stop, think time, deferral."""

from __future__ import annotations

import math

import pytest

from swiotlb.sim.spec import DeviceSpec
from swiotlb.workloads import Fio
from tests.workloads.fakesim import FakeSim

MS = 1_000_000
US = 1_000


def probe_live(sim: FakeSim, period_ns: int, start_ns: int = 0) -> list[tuple[int, int]]:
    seen: list[tuple[int, int]] = []
    sim.every(period_ns, lambda: seen.append((sim.now, len(sim.live))), start_ns)
    return seen


def test_keeps_exactly_iodepth_times_jobs_in_flight() -> None:
    sim = FakeSim(end_ns=20 * MS, cpus=2, map_ns=700)
    sim.add(Fio("j", "d0", iodepth=4, jobs=3))
    seen = probe_live(sim, 37_123, 3 * 700 + 1)  # after the paced fill (below)
    sim.run()
    assert {n for _, n in seen} == {12}
    assert sim.peak_live == 12
    # each I/O takes map cost + 10 us of service: 12 lanes x 20 ms / 10.7 us
    ios = sim.counters["j/ios"]
    assert abs(ios - 12 * 20 * MS // 10_700) <= 12
    assert len(sim.samples["j/latency_ns"]) == ios and set(sim.samples["j/latency_ns"]) == {10_700}
    assert sorted({c[5] for c in sim.of("map")}) == [0, 1]  # job j on CPU j % cpus


def test_a_job_fills_its_queue_one_map_at_a_time() -> None:
    """fio submits one I/O at a time: each next one when the CPU finished mapping the last."""
    sim = FakeSim(end_ns=1 * MS, cpus=2, map_ns=700)
    sim.add(Fio("j", "d0", iodepth=4, jobs=2))
    sim.run()
    first = {}
    for _, t, _, _, _, cpu, _ in sim.of("map"):
        first.setdefault(cpu, []).append(t)
    assert first[0][:4] == [0, 700, 1400, 2100]
    assert first[1][:4] == [0, 700, 1400, 2100]


def test_fixed_cpu_and_completion_at_ready_plus_service() -> None:
    dev = DeviceSpec("d0", latency_ns=5_000, bandwidth=4_000_000_000)
    sim = FakeSim([dev], end_ns=2 * MS, map_ns=300)
    sim.add(Fio("j", "d0", bs=((4096, 1), (131072, 1)), iodepth=2, jobs=2, cpu=3))
    sim.run()
    assert {c[5] for c in sim.of("map")} == {3}
    done = [m for m in sim.maps if m.unmapped_ns is not None]
    assert done and all(m.unmapped_ns == m.ready_ns + dev.service_ns(m.size) for m in done)
    sizes = [m.size for m in sim.maps]
    assert 0.35 < sizes.count(4096) / len(sizes) < 0.65


@pytest.mark.parametrize(
    ("rw", "mix", "reads"),
    [("read", 50, 1.0), ("randread", 0, 1.0), ("write", 50, 0.0), ("randwrite", 100, 0.0),
     ("randrw", 70, 0.7), ("rw", 30, 0.3), ("randrw", 100, 1.0), ("randrw", 0, 0.0)],
)
def test_rwmixread(rw: str, mix: int, reads: float) -> None:
    sim = FakeSim(end_ns=20 * MS)
    sim.add(Fio("j", "d0", rw=rw, rwmixread=mix, iodepth=8))
    sim.run()
    dirs = [c[4] for c in sim.of("map")]
    n = len(dirs)
    assert n > 12_000
    frac = dirs.count("FROM_DEVICE") / n
    assert dirs.count("FROM_DEVICE") + dirs.count("TO_DEVICE") == n
    sd = math.sqrt(reads * (1 - reads) / n)
    assert abs(frac - reads) <= 5 * sd + 1e-12


def test_failed_maps_requeue_the_same_io_after_requeue_ns() -> None:
    # the pool is "full" from 1 ms to 1.5 ms: every map in that window fails
    sim = FakeSim(end_ns=3 * MS, rule=lambda s, *_: not MS <= s.now < 1.5 * MS)
    sim.add(Fio("j", "d0", iodepth=2, requeue_ns=200 * US, bs=((4096, 1), (8192, 1))))
    sim.run()
    fails = sim.of("fail")
    assert len(fails) == sim.counters["j/requeued"] > 0
    assert all(MS <= c[1] < 1.5 * MS for c in fails)
    for f in fails:  # each failure is retried requeue_ns later with the same size and direction
        retry = [c for c in sim.calls if c[0] in ("map", "fail") and c[1] == f[1] + 200 * US and c[3] == f[3]]
        assert retry, f
    # I/Os that waited out the full window saw latency > 0.5 ms; depth is back to 2 afterwards
    assert max(sim.samples["j/latency_ns"]) >= 500 * US
    assert len(sim.live) == 2


def test_requeue_is_not_scheduled_past_the_end() -> None:
    sim = FakeSim(end_ns=MS, capacity=0)
    sim.add(Fio("j", "d0", requeue_ns=300 * US))
    sim.run()
    assert [c[1] for c in sim.of("fail")] == [0, 300 * US, 600 * US, 900 * US]
    assert sim.engine.pending == 0


def test_bursts_raise_the_depth_only_inside_burst_windows() -> None:
    sim = FakeSim(end_ns=20 * MS)
    sim.add(Fio("j", "d0", iodepth=2, jobs=2, burst_iodepth=8, burst_ns=MS, period_ns=5 * MS, burst_at_ns=2 * MS))
    seen = probe_live(sim, 50 * US, 25 * US)
    sim.run()
    for t, n in seen:
        phase = (t - 2 * MS) % (5 * MS) if t >= 2 * MS else None
        if phase is not None and phase < MS:
            assert n == 16, (t, n)
        elif phase is None or phase >= MS + 20 * US:  # burst I/Os drain within one service time
            assert n == 4, (t, n)
    assert sim.peak_live == 16


def test_single_burst_and_burst_lower_than_iodepth() -> None:
    sim = FakeSim(end_ns=5 * MS)
    sim.add(Fio("j", "d0", iodepth=4, burst_iodepth=1, burst_ns=MS, burst_at_ns=MS))
    seen = probe_live(sim, 100 * US, 50 * US)
    sim.run()
    assert [n for t, n in seen if 1.1 * MS < t < 2 * MS] == [1] * 9
    assert {n for t, n in seen if t < MS or t > 2.1 * MS} == {4}


def test_start_and_stop() -> None:
    sim = FakeSim(end_ns=5 * MS)
    sim.add(Fio("j", "d0", iodepth=3, start_ns=MS, stop_ns=2 * MS))
    sim.run()
    times = [c[1] for c in sim.of("map")]
    assert min(times) == MS and max(times) < 2 * MS
    assert not sim.live  # in-flight I/Os complete after the stop
    assert sim.engine.pending == 0


def test_think_time_between_completion_and_next_submit() -> None:
    sim = FakeSim(end_ns=MS)
    sim.add(Fio("j", "d0", think_ns=15 * US))
    sim.run()
    maps = [c[1] for c in sim.of("map")]
    assert maps[:3] == [0, 25 * US, 50 * US]
    assert len(maps) == MS // (25 * US)


def test_defer_waits_for_the_deferred_map() -> None:
    sim = FakeSim(end_ns=MS, rule=lambda *_: "defer", defer_ns=40 * US)
    sim.add(Fio("j", "d0", may_sleep=True, defer=True, iodepth=2))
    sim.run()
    assert len(sim.of("defer")) == len(sim.of("map")) > 0
    assert set(sim.samples["j/latency_ns"]) == {50 * US}
    assert sim.counters["j/ios"] == 2 * (MS // (50 * US)) - 2  # the last pair completes at the end
    # a deferred map that finally fails is requeued
    sim2 = FakeSim(end_ns=MS, rule=lambda *_: "defer", defer_ns=40 * US, capacity=0)
    sim2.add(Fio("j", "d0", may_sleep=True, defer=True, requeue_ns=100 * US))
    sim2.run()
    assert sim2.counters["j/requeued"] == len(sim2.of("defer")) - 1 > 1 and not sim2.maps  # last: after the end


def test_without_defer_no_callback_is_passed() -> None:
    seen: list[object] = []

    class Spy(FakeSim):
        def map(self, *a: object, **kw: object) -> object:
            seen.append(kw.get("then"))
            return super().map(*a, **kw)  # type: ignore[arg-type]

    sim = Spy(end_ns=100 * US)
    sim.add(Fio("j", "d0", offset=512, may_sleep=True))
    sim.run()
    assert seen and set(seen) == {None}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"iodepth": 0}, "fio 'j1': iodepth must be >= 1, got 0"),
        ({"jobs": 0}, "fio 'j1': jobs must be >= 1, got 0"),
        ({"rw": "trim"}, "fio 'j1': rw must be one of"),
        ({"rwmixread": 101}, "fio 'j1': rwmixread must be a percentage"),
        ({"bs": ()}, "fio 'j1': bs must be"),
        ({"bs": ((0, 1),)}, "fio 'j1': bs must be sizes that are integers >= 1"),
        ({"bs": ((4096, 0),)}, "fio 'j1': bs must be weights that sum to more than 0"),
        ({"requeue_ns": 0}, "fio 'j1': requeue_ns must be >= 1"),
        ({"stop_ns": 0}, "fio 'j1': stop_ns must be > start_ns"),
        ({"burst_iodepth": 8}, "fio 'j1': burst_ns must be > 0 when burst_iodepth is set"),
        ({"burst_iodepth": 8, "burst_ns": 5, "period_ns": 4}, "fio 'j1': burst_ns must be <= period_ns"),
        ({"iodepth": 1.5}, "fio 'j1': iodepth must be an integer"),
        ({"may_sleep": 1}, "fio 'j1': may_sleep must be true or false"),
        ({"cpu": -1}, "fio 'j1': cpu must be >= 0"),
    ],
)
def test_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        Fio("j1", "vda", **kwargs)  # type: ignore[arg-type]


def test_normalised_and_hashable() -> None:
    a = Fio("j1", "vda", bs=[[4096, 3], [131072, 1]])  # type: ignore[arg-type]
    assert a.bs == ((4096, 3), (131072, 1))
    assert hash(a) == hash(Fio("j1", "vda", bs=((4096, 3), (131072, 1))))
    assert Fio("j", "d", bs=8192).bs == ((8192, 1),)  # type: ignore[arg-type]


def test_start_checks_cpu_and_device() -> None:
    with pytest.raises(ValueError, match="fio 'j': cpu must be < the machine's 4 CPUs, got 4"):
        FakeSim().add(Fio("j", "d0", cpu=4)).run()
    with pytest.raises(KeyError, match="nope"):
        FakeSim().add(Fio("j", "nope")).run()


def test_latency_jitter_spreads_each_service_time_and_leaves_the_sizes_alone() -> None:
    steady = DeviceSpec("d0", latency_ns=5_000, bandwidth=4_000_000_000)
    jittery = DeviceSpec("d0", latency_ns=5_000, bandwidth=4_000_000_000, latency_jitter_ns=2_000)
    runs = []
    for dev in (steady, jittery):
        sim = FakeSim([dev], end_ns=2 * MS, map_ns=300, seed=7)
        sim.add(Fio("j", "d0", bs=((4096, 1), (131072, 1)), iodepth=1, jobs=1))
        sim.run()
        runs.append([m for m in sim.maps if m.unmapped_ns is not None])
    plain, spread = runs
    extra = [m.unmapped_ns - m.ready_ns - jittery.service_ns(m.size) for m in spread]
    assert all(0 <= e <= 2_000 for e in extra) and len(set(extra)) > len(extra) // 2
    assert abs(sum(extra) / len(extra) - 1_000) < 150  # uniform on [0, 2000]: mean 1000
    assert all(m.unmapped_ns - m.ready_ns == steady.service_ns(m.size) for m in plain)
    # the jitter has its own stream: the size sequence is the same I/O for I/O
    n = min(len(plain), len(spread))
    assert [m.size for m in plain[:n]] == [m.size for m in spread[:n]]


def test_negative_jitter_is_refused() -> None:
    with pytest.raises(ValueError, match="latency_jitter_ns = -1: must be >= 0"):
        DeviceSpec("d0", latency_jitter_ns=-1)
