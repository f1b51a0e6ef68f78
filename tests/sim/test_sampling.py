"""The sampled time series: exact at the grid times, free of engine events, and consistent with
the footprint gauges and the run's totals."""

from __future__ import annotations

from typing import Any

import pytest

from swiotlb.core.constants import IO_TLB_SIZE
from swiotlb.dma.types import DmaDirection
from swiotlb.lab.runner import run_scenario
from swiotlb.sim.sampling import SERIES
from swiotlb.sim.simulation import SimMapping, Simulation
from swiotlb.sim.spec import DeviceSpec, MachineSpec
from swiotlb.workloads import Fio
from swiotlb.workloads.scenario import find_scenario

MS = 1_000_000
TO = DmaDirection.TO_DEVICE


def hand_built(**kw: Any) -> dict[str, Any]:
    """A 1024-slot static pool (4 areas of 256) and five calls at known times:
    0 ms map A (4 slots), 1 ms map B (2 slots), 2.5 ms unmap A, 3 ms a map too large to ever fit,
    7 ms a map that fits (2 slots)."""
    s = Simulation(MachineSpec(ram=1 << 30, cpus=4, cmdline="swiotlb=1024,force"), [DeviceSpec("vda")],
                   duration_ns=10 * MS, grid_step_ns=MS, **kw)
    live: dict[str, SimMapping] = {}

    def map_(name: str, size: int) -> None:
        m = s.map("vda", size, TO, phys=1 << 24)
        if isinstance(m, SimMapping):
            live[name] = m

    e = s.engine
    e.at(0, lambda: map_("A", 8192))
    e.at(1 * MS, lambda: map_("B", 4096))
    e.at(2 * MS + MS // 2, lambda: s.unmap(live["A"]))
    e.at(3 * MS, lambda: map_("big", 512 << 10))
    e.at(7 * MS, lambda: map_("C", 4096))
    return s.run()


def test_series_hold_the_state_in_force_at_each_grid_time() -> None:
    r = hand_built()
    ts = r["time_series"]
    assert ts["t_ns"] == [t * MS for t in range(11)]
    # a change at a grid time counts at that time (B at 1 ms, the failure at 3 ms, C at 7 ms)
    assert ts["used_slots"] == [4, 6, 6, 2, 2, 2, 2, 4, 4, 4, 4]
    assert ts["failed_maps"] == [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1]
    assert ts["deferred_maps"] == [0] * 11
    assert ts["total_slots"] == [1024] * 11 and ts["transient_slots"] == [0] * 11
    # 8 free segments; freeing A leaves a 4-slot run in front of B; C takes the slots after B
    assert ts["free_runs"] == [8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 9]
    assert ts["largest_free_run"] == [128] * 11
    assert ts["in_use_bytes"] == [u * IO_TLB_SIZE for u in ts["used_slots"]]  # the gauge agrees
    assert r["events"] == 5  # sampling schedules nothing


def test_the_occupancy_map_shows_where_the_slots_are() -> None:
    r = hand_built(occupancy_bins=8)  # 128 slots a bin
    occ = r["occupancy"]
    assert occ["bins"] == 8 and len(occ["used_permille"]) == 11
    assert occ["used_permille"][0] == [31, 0, 0, 0, 0, 0, 0, 0]  # 4 of 128 slots: 31.25 per mille
    assert occ["used_permille"][3] == [16, 0, 0, 0, 0, 0, 0, 0]  # 2 of 128: 15.625
    assert r["events"] == 5
    plain = hand_built()
    assert "occupancy" not in plain
    assert {k: v for k, v in r.items() if k != "occupancy"} == plain  # the map changes nothing else


def test_map_cost_histogram_counts_every_map() -> None:
    r = hand_built()
    hist = r["map_ns_hist"]
    assert sum(hist) == r["map_ns"]["count"] == r["maps"] == 4
    top, p50 = r["map_ns"]["max"], r["map_ns"]["p50"]
    assert len(hist) == top.bit_length() + 1 and hist[-1] > 0  # the last bucket holds the max
    assert sum(hist[: p50.bit_length() + 1]) >= 2  # at least half the maps at or below the median


@pytest.mark.parametrize("scenario, duration", [("S14", 60_000_000), ("S4", 100_000_000)])
def test_series_agree_with_the_gauges_and_the_totals(scenario: str, duration: int) -> None:
    spec = find_scenario(scenario)
    for policy in spec.policies:
        r = run_scenario(spec, policy, duration_ns=duration)
        if "skipped" in r:
            continue
        ts, where = r["time_series"], (scenario, policy)
        n = len(ts["t_ns"])
        assert all(len(ts[k]) == n for k in SERIES), where
        for key in ("failed_maps", "deferred_maps"):
            assert ts[key] == sorted(ts[key]), where  # counts so far never fall
        assert ts["failed_maps"][-1] == sum(r["failures"].values()), where
        assert ts["deferred_maps"][-1] == r["deferred"], where
        assert sum(r["map_ns_hist"]) == r["map_ns"]["count"], where
        slots = [(t + x) * IO_TLB_SIZE for t, x in zip(ts["total_slots"], ts["transient_slots"])]
        used = [u * IO_TLB_SIZE for u in ts["used_slots"]]
        if policy in ("static", "linux-6.6", "lending"):  # all their bounce memory is slots
            assert used == ts["in_use_bytes"], where
            if policy != "lending":  # lending's footprint leaves transient pools out (it has none)
                assert slots == ts["reserved_bytes"], where
        else:  # rfc-v1 and adaptive also hold buffers of their own
            assert all(u <= b for u, b in zip(used, ts["in_use_bytes"])), where
            assert all(s <= b for s, b in zip(slots, ts["reserved_bytes"])), where
        assert all(0 <= lg <= 128 for lg in ts["largest_free_run"]), where


def test_deferrals_are_sampled_too() -> None:
    s = Simulation(MachineSpec(ram=1 << 30, cpus=4, cmdline="swiotlb=force"), [DeviceSpec("vda", latency_ns=50_000)],
                   policy="adaptive", duration_ns=20 * MS, seed=7,
                   policy_options={"max_total_slabs": 1024, "initial_slabs": 512, "transient": False})
    s.add(Fio("j", "vda", bs=((131072, 1),), iodepth=16, jobs=2, may_sleep=True, defer=True))
    r = s.run()
    ts = r["time_series"]
    assert r["deferred"] > 0 and ts["deferred_maps"][-1] == r["deferred"] and ts["deferred_maps"][0] < r["deferred"]
    assert ts["deferred_maps"] == sorted(ts["deferred_maps"])
    assert ts["total_slots"][0] == 512 and max(ts["total_slots"]) == 1024  # grew to its cap
