"""Run metrics: exact gauges, grid sampling, nearest-rank percentiles, the --json schema (issue 4, §4-5)."""

from __future__ import annotations

import json
import random
from fractions import Fraction

import pytest

from tests.conftest import pure_only

from swiotlb.sim.metrics import (
    FAILURE_CAUSES,
    Footprint,
    RunMetrics,
    Samples,
    StepGauge,
    round_half_even,
)

# ---------------------------------------------------------------- StepGauge


def _example() -> StepGauge:
    # 0 on [0,10), 100 on [10,30), 40 on [30,35), 250 on [35, ...)
    g = StepGauge()
    g.set(10, 100)
    g.set(30, 40)
    g.set(35, 250)
    return g


def test_integral_average_and_peak_by_hand() -> None:
    g = _example()
    # up to 50: 0*10 + 100*20 + 40*5 + 250*15 = 2000 + 200 + 3750 = 5950
    assert g.integral(50) == 5950
    assert g.average(50) == Fraction(5950, 50) == Fraction(119)
    assert g.average_int(50) == 119
    assert g.peak == 250
    assert g.value == 250


def test_integral_before_last_change_and_sub_window() -> None:
    g = _example()
    assert g.integral(20) == 1000  # 100 * 10
    assert g.integral(30) == 2000
    assert g.integral(32) == 2080
    assert g.integral(33, start_ns=12) == 100 * 18 + 40 * 3
    assert g.average(20, start_ns=10) == 100
    assert g.average(10, start_ns=10) == 100  # empty window: the value in force


def test_average_rounds_half_to_even() -> None:
    g = StepGauge()
    g.set(1, 1)  # 0 on [0,1), 1 on [1,2): average 1/2
    assert g.average(2) == Fraction(1, 2)
    assert g.average_int(2) == 0
    g2 = StepGauge(value=1)
    g2.set(1, 2)  # average 3/2 -> 2
    assert g2.average_int(2) == 2
    assert round_half_even(5, 2) == 2 and round_half_even(7, 2) == 4 and round_half_even(-5, 2) == -2
    assert round_half_even(10, 3) == 3 and round_half_even(11, 3) == 4


def test_same_nanosecond_changes_coalesce_but_peak_sees_them() -> None:
    g = StepGauge()
    g.set(5, 4096)
    g.set(5, 0)  # a map undone in the same ns
    g.set(7, 0)  # no change
    assert g.peak == 4096
    assert g.integral(10) == 0
    assert g.changes == 1  # only the initial point remains (5: 0 equals the start value)
    assert g.grid(1, 6) == [(t, 0) for t in range(7)]
    assert g.updates == 3
    g.set(8, 10)
    g.set(9, 20)
    g.set(9, 10)  # back to the previous point's value: the point at 9 is dropped
    assert g.changes == 2 and g.last_ns == 8
    assert g.integral(12) == 40 and g.grid(1, 12)[-5:] == [(8, 10), (9, 10), (10, 10), (11, 10), (12, 10)]
    g.set(12, 0)
    assert g.integral(14) == 40


def test_add_and_start_offset() -> None:
    g = StepGauge(start_ns=100, value=8)
    g.add(110, 8)
    g.add(120, -16)
    assert g.value == 0 and g.peak == 16
    assert g.integral(130) == 8 * 10 + 16 * 10
    assert g.average(130) == Fraction(240, 30) == 8
    with pytest.raises(ValueError, match="before the gauge's start"):
        g.integral(150, start_ns=50)


@pure_only("swiotlb.sim.metrics", "a bool passes as an int")
def test_gauge_rejects_time_going_backwards_and_bad_types() -> None:
    g = StepGauge()
    g.set(10, 1)
    with pytest.raises(ValueError, match="back in time"):
        g.set(9, 2)
    with pytest.raises(TypeError):
        g.set(11, 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        g.set(11.0, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        g.set(True, 1)
    with pytest.raises(ValueError):
        g.integral(5, start_ns=8)


def test_grid_samples_value_in_force_at_each_point() -> None:
    g = _example()
    assert g.grid(10, 50) == [(0, 0), (10, 100), (20, 100), (30, 40), (40, 250), (50, 250)]
    # end not on the grid: last point is the last multiple <= end
    assert g.grid(15, 44) == [(0, 0), (15, 100), (30, 40)]
    # a grid finer than the changes and one coarser than them agree with value_at
    for step in (1, 3, 7, 100):
        assert g.grid(step, 60) == [(t, g.value_at(t)) for t in range(0, 61, step)]
    with pytest.raises(ValueError):
        g.grid(0, 10)


def test_grid_is_absolute_multiples_of_step() -> None:
    g = StepGauge(start_ns=7, value=3)
    g.set(12, 5)
    assert g.grid(5, 20) == [(10, 3), (15, 5), (20, 5)]


def test_gauge_against_brute_force() -> None:
    rnd = random.Random(4)
    g = StepGauge()
    per_ns = [0] * 1001
    t = 0
    for _ in range(300):
        t += rnd.choice((0, 0, 1, 2, 5))
        if t > 1000:
            break
        v = rnd.randrange(0, 1 << 20)
        g.set(t, v)
        for u in range(t, 1001):
            per_ns[u] = v
    assert g.integral(1000) == sum(per_ns[:1000])
    assert g.integral(700, start_ns=123) == sum(per_ns[123:700])
    assert g.grid(13, 1000) == [(u, per_ns[u]) for u in range(0, 1001, 13)]


@pytest.mark.parametrize("seed", range(6))
def test_gauge_with_same_nanosecond_undos_against_brute_force(seed: int) -> None:
    """The simulator's pattern: several calls per nanosecond, often undoing each other (an
    unmap and the next map). Every reading, mid-run too, must match the per-ns final values;
    the change points are the nanoseconds whose final value differs from the one before."""
    rnd = random.Random(seed)
    start = rnd.choice((0, 7))
    g = StepGauge(start_ns=start, value=3)
    per_ns = [3] * 301  # index u - start
    peak = 3
    t = start
    for _ in range(400):
        t += rnd.choice((0, 0, 0, 1, 3))
        if t > start + 300:
            break
        v = g.value + rnd.choice((-1, 1, 0)) * rnd.choice((1, 2)) if rnd.random() < 0.8 else 3
        g.set(t, v)
        peak = max(peak, v)
        for u in range(t, start + 301):
            per_ns[u - start] = v
        now = [per_ns[u - start] for u in range(start, t + 1)]  # what is known at t
        assert g.value == v and g.peak == peak
        assert g.value_at(t) == v and g.value_at(start) == now[0]
        assert g.integral(t + 5) == sum(now) + 4 * v  # [start, t + 5): the value holds after t
        flips = [u for u in range(start + 1, t + 1) if now[u - start] != now[u - start - 1]]
        assert g.changes == 1 + len(flips)
        assert g.last_ns == (flips[-1] if flips else start)
    end = start + 300
    assert g.integral(end) == sum(per_ns[:300])
    assert g.integral(end - 50, start_ns=start + 40) == sum(per_ns[40:250])
    assert all(g.value_at(u) == per_ns[u - start] for u in range(start, end + 1))
    assert g.grid(7, end) == [(u, per_ns[u - start]) for u in range(-(-start // 7) * 7, end + 1, 7)]
    with pytest.raises(ValueError, match="back in time"):
        g.set(start - 1, 0)


def test_footprint_updates_either_gauge() -> None:
    f = Footprint()
    f.set(0, reserved=1 << 20)
    f.set(10, in_use=4096)
    f.set(20, reserved=2 << 20, in_use=8192)
    assert f.reserved.peak == 2 << 20 and f.in_use.peak == 8192
    assert f.in_use.integral(30) == 4096 * 10 + 8192 * 10


# ---------------------------------------------------------------- Samples


def test_nearest_rank_percentiles_on_known_data() -> None:
    # the textbook nearest-rank example: 15, 20, 35, 40, 50
    s = Samples([40, 15, 50, 35, 20])
    assert s.percentile(5) == 15  # rank ceil(0.25) = 1
    assert s.percentile(30) == 20  # rank ceil(1.5) = 2
    assert s.percentile(40) == 20  # rank 2 exactly
    assert s.percentile(50) == 35  # rank ceil(2.5) = 3
    assert s.percentile(100) == 50
    assert s.percentile(0) == 15
    assert s.max == 50 and s.total == 160 and s.count == 5


def test_percentiles_of_1_to_100_and_fractional_p() -> None:
    s = Samples(range(100, 0, -1))
    assert s.percentile(50) == 50
    assert s.percentile(99) == 99
    assert s.percentile(Fraction(991, 10)) == 100  # rank ceil(99.1) = 100
    assert s.percentile(Fraction(1, 2)) == 1
    s1000 = Samples(range(1, 1001))
    assert s1000.percentile(99) == 990
    assert s1000.percentile(Fraction(999, 10)) == 999


def test_percentile_edge_cases_and_errors() -> None:
    assert Samples().percentile(50) is None
    assert Samples().summary() == {"count": 0, "max": None, "p50": None, "p99": None, "total": 0}
    one = Samples([7])
    assert one.percentile(1) == one.percentile(99) == 7
    with pytest.raises(ValueError):
        one.percentile(101)
    with pytest.raises(TypeError):
        one.percentile(99.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        one.add(-1)
    with pytest.raises(TypeError):
        one.add(1.0)  # type: ignore[arg-type]


def test_adding_after_a_query_resorts() -> None:
    s = Samples([5, 1, 3])
    assert s.percentile(100) == 5
    s.add(0)
    s.add(9)
    assert s.percentile(0) == 0 and s.percentile(100) == 9 and s.percentile(50) == 3


def test_chunked_sort_matches_sorted() -> None:
    rnd = random.Random(1)
    data = [rnd.randrange(0, 10_000) for _ in range(5003)]
    s = Samples(data, chunk=64)
    ref = sorted(data)
    for p in (0, 1, 25, 50, 90, 99, 100, Fraction(999, 10)):
        q = Fraction(p) * len(ref) / 100
        rank = max(1, -(-q.numerator // q.denominator))
        assert s.percentile(p) == ref[rank - 1]
    assert s.count == len(data) and s.max == max(data)


@pytest.mark.parametrize("chunk", [4, 1 << 20])
def test_appender_survives_sorting(chunk: int) -> None:
    """The appender is the array's own append: queries sort in place, so it keeps working."""
    s = Samples([5, 3, 9], chunk=chunk)
    append = s.appender()
    for v in (7, 1, 8):
        append(v)
    assert s.percentile(50) == 5 and s.max == 9  # sorted in place here
    for v in (2, 10, 0):
        append(v)
    assert s.count == 9 and s.max == 10 and s.percentile(0) == 0 and s.percentile(100) == 10
    assert s.percentile(50) == 5 and s.total == sum(range(11)) - 4 - 6


# ---------------------------------------------------------------- RunMetrics

SCHEMA_INT_KEYS = {
    "seed",
    "maps",
    "deferred",
    "peak_footprint_bytes",
    "avg_footprint_bytes",
    "hiwater_slots",
    "bytes_copied",
    "lock_wait_ns_total",
    "decrypt_ops",
    "encrypt_ops",
    "pools_created",
    "pools_freed",
    "oom_events",
}


def _run() -> RunMetrics:
    m = RunMetrics()
    m.footprint.set(0, reserved=1 << 20)
    for i in range(50):
        t = i * 100
        m.map_attempt(cpu_ns=200 + i, lock_wait_ns=i % 3)
        m.footprint.set(t, in_use=(i % 7) * 2048)
        m.observe_used_slots(i % 7)
        m.bytes_copied += 2048
        m.step("find_slots")
        m.step("bounce", 2)
    m.map_attempt(cpu_ns=90, failure="full")
    m.map_attempt(failure="unaddressable")
    m.deferred_map()
    m.deferred_map()
    m.deferral_wait(1500)
    m.footprint.set(3000, reserved=3 << 20)
    m.footprint.set(4000, reserved=1 << 20)
    m.pools_created += 1
    m.pools_freed += 1
    m.decrypt_ops += 1
    m.encrypt_ops += 1
    return m


def test_json_has_the_schema_keys_and_types() -> None:
    doc = _run().to_json("steady", "static", 42, 5000)
    for key in SCHEMA_INT_KEYS:
        assert type(doc[key]) is int, key
    assert doc["scenario"] == "steady" and doc["policy"] == "static"
    assert list(doc["failures"]) == sorted(FAILURE_CAUSES)
    assert set(doc["failures"]) == {"full", "too_large", "unaddressable", "no_memory"}
    assert all(type(v) is int for v in doc["failures"].values())
    assert {"p50", "p99"} <= set(doc["map_ns"]) and type(doc["map_ns"]["p50"]) is int
    assert list(doc) == sorted(doc)
    # no floats anywhere
    def walk(x: object) -> None:
        assert not isinstance(x, float)
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(doc)


def test_json_values() -> None:
    doc = _run().to_json("steady", "static", 42, 5000)
    assert doc["maps"] == 52 and doc["succeeded"] == 50
    assert doc["failures"] == {"full": 1, "no_memory": 0, "too_large": 0, "unaddressable": 1}
    assert doc["deferred"] == 2 and doc["deferred_pending"] == 1
    assert doc["defer_wait_ns"]["max"] == 1500
    assert doc["peak_footprint_bytes"] == 3 << 20
    # reserved: 1 MiB on [0,3000), 3 MiB on [3000,4000), 1 MiB on [4000,5000)
    assert doc["reserved_byte_ns"] == (1 << 20) * 4000 + (3 << 20) * 1000
    assert doc["avg_footprint_bytes"] == round_half_even(doc["reserved_byte_ns"], 5000)
    assert doc["hiwater_slots"] == 6 and doc["peak_in_use_bytes"] == 6 * 2048
    assert doc["bytes_copied"] == 50 * 2048
    assert doc["lock_wait_ns_total"] == sum(i % 3 for i in range(50))
    # 51 samples: 90 and 200..249; p50 is rank 26 -> 224, p99 rank ceil(50.49) = 51 -> 249
    assert doc["map_ns"] == {"count": 51, "max": 249, "p50": 224, "p99": 249, "total": 90 + sum(range(200, 250))}
    assert doc["steps"] == {"bounce": 100, "find_slots": 50}
    ts = doc["time_series"]
    assert ts["step_ns"] == 50 and ts["t_ns"] == list(range(0, 5001, 50))
    assert len(ts["reserved_bytes"]) == len(ts["in_use_bytes"]) == 101
    assert ts["reserved_bytes"][60] == 3 << 20 and ts["reserved_bytes"][80] == 1 << 20
    assert ts["in_use_bytes"][2] == 2048  # t=100: i=1


def test_json_custom_grid_and_empty_run() -> None:
    doc = RunMetrics().to_json("idle", "none", 0, 0)
    assert doc["maps"] == 0 and doc["map_ns"]["p50"] is None and doc["avg_footprint_bytes"] == 0
    assert doc["time_series"] == {"step_ns": 1, "t_ns": [0], "reserved_bytes": [0], "in_use_bytes": [0]}
    doc2 = _run().to_json("steady", "static", 42, 5000, grid_step_ns=1000)
    assert doc2["time_series"]["t_ns"] == [0, 1000, 2000, 3000, 4000, 5000]


def test_json_is_deterministic() -> None:
    a = json.dumps(_run().to_json("steady", "static", 42, 5000), sort_keys=True)
    b = json.dumps(_run().to_json("steady", "static", 42, 5000), sort_keys=True)
    assert a == b
    # the dict itself is key-ordered, so even without sort_keys the text agrees
    assert json.dumps(_run().to_json("steady", "static", 42, 5000)) == json.dumps(json.loads(a))
    assert _run().to_json_text("steady", "static", 42, 5000) == _run().to_json_text("steady", "static", 42, 5000)
    m = _run()
    assert m.to_json("steady", "static", 42, 5000) == m.to_json("steady", "static", 42, 5000)


def test_unknown_failure_causes_are_rejected() -> None:
    m = RunMetrics()
    with pytest.raises(ValueError, match="unknown map failure cause 'oom'.*full, too_large, unaddressable, no_memory"):
        m.map_attempt(failure="oom")
    assert m.maps_attempted == 0  # nothing counted
    with pytest.raises(ValueError, match="unknown map failure cause"):
        m.fail("Full")
    m.fail("no_memory")
    assert m.failures["no_memory"] == 1
    m.failures["bogus"] = 1  # bypassing the helpers is caught on output
    with pytest.raises(ValueError, match="'bogus'"):
        m.to_json("s", "p", 1, 10)


def test_negative_waits_rejected() -> None:
    m = RunMetrics()
    with pytest.raises(ValueError):
        m.map_attempt(cpu_ns=10, lock_wait_ns=-1)
    with pytest.raises(ValueError):
        m.deferral_wait(-5)
    assert m.maps_attempted == 0


# ---------------------------------------------------------------- map cost histogram and extra series


def test_log2_histogram_buckets_by_bit_length() -> None:
    assert Samples().log2_histogram() == []
    s = Samples([1000, 0, 3, 8, 1, 2, 7, 4])
    # bucket 0: {0}; 1: {1}; 2: [2, 4); 3: [4, 8); 4: [8, 16); ... 10: [512, 1024)
    assert s.log2_histogram() == [1, 1, 2, 2, 1, 0, 0, 0, 0, 0, 1]
    rng = random.Random(5)
    values = [rng.randrange(1 << rng.randrange(1, 30)) for _ in range(2000)]
    hist = Samples(values).log2_histogram()
    assert sum(hist) == len(values) and hist[-1] > 0
    assert hist == [sum(1 for v in values if v.bit_length() == k) for k in range(len(hist))]


def test_json_has_the_map_cost_histogram_and_extra_series() -> None:
    doc = _run().to_json("steady", "static", 42, 5000, grid_step_ns=1000, series={"free_runs": [1, 2, 3, 4, 5, 6]})
    assert sum(doc["map_ns_hist"]) == doc["map_ns"]["count"]
    assert doc["time_series"]["free_runs"] == [1, 2, 3, 4, 5, 6]
    assert list(doc["time_series"]) == sorted(doc["time_series"])
    with pytest.raises(ValueError, match="has 2 values for 6 grid times"):
        _run().to_json("steady", "static", 42, 5000, grid_step_ns=1000, series={"x": [1, 2]})
    with pytest.raises(ValueError, match="clashes"):
        _run().to_json("steady", "static", 42, 5000, grid_step_ns=1000, series={"t_ns": [0] * 6})
