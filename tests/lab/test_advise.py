"""Sizing advice: the search for the smallest pool, the swiotlb= line, scenarios across seeds."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from swiotlb.lab.advise import Trial, Unservable, search_pool, with_pool
from swiotlb.lab.cli import main


def test_search_pool_tries_only_sizes_the_kernel_makes() -> None:
    def kernel_pool(n: int) -> int:  # a CoCo guest: swiotlb=32768 is the default, so 6% applies
        return 524288 if n == 32768 else n

    def evaluate(n: int) -> tuple[int, int]:
        return (0 if n >= 40000 else 1), 39000

    trials: list[Trial] = []
    smallest, recommended = search_pool(20000, kernel_pool, evaluate, 0.25, True, trials)
    assert [t.slots for t in trials] == [65536]  # 32768 is skipped: the kernel would not honour it
    assert (smallest, recommended) == (65536, 65536)  # 39000 * 1.25 fits in 65536

    trials = []
    smallest, recommended = search_pool(300, lambda n: n, lambda n: (max(0, 1000 - n), 900), 0.25, False, trials)
    assert smallest == 1024 and recommended == 1152  # bisection in segments; 900 * 1.25 -> 1152
    assert all(t.slots % 128 == 0 for t in trials)
    with pytest.raises(Unservable, match="32 GiB"):
        search_pool(128, lambda n: n, lambda n: (1, 0), 0.25, True, [])


def test_with_pool_keeps_the_rest_of_the_line() -> None:
    assert with_pool("quiet swiotlb=1024,2,force", 4096) == "quiet swiotlb=4096,2,force"
    assert with_pool("", 4096) == "swiotlb=4096"


def test_advise_a_scenario_across_seeds() -> None:
    r = CliRunner().invoke(main, ["advise", "S6", "--duration", "200ms", "--seeds", "2", "--json"])
    assert r.exit_code == 0, r.output
    j = json.loads(r.output)
    assert j["kind"] == "scenario" and j["seeds"] == [0, 1]
    assert j["min_slots"] & (j["min_slots"] - 1) == 0  # the kernel's pools are powers of two
    assert j["recommended_slots"] >= j["min_slots"]
    assert j["swiotlb"].startswith(f"swiotlb={j['recommended_slots']}")
    last = j["trials"][-1]
    assert last["slots"] == j["recommended_slots"] and last["hiwater"] * 1.25 <= last["slots"]
    assert j["peak_inflight_slots"] > 0 and j["driver"] in j["per_device_peak_slots"]
    assert set(j["dynamic"]) == {"linux-6.6", "adaptive", "lending", "rfc-v1"}
    r = CliRunner().invoke(main, ["advise", "S99"])
    assert r.exit_code == 1 and "S99" in r.output


def test_advise_says_when_no_static_pool_can_serve() -> None:
    r = CliRunner().invoke(main, ["advise", "S4", "--duration", "1s", "--seeds", "1"])
    assert r.exit_code == 1
    assert "too large maps fail whatever the pool size" in r.output
