"""Sizing advice: the search for the smallest pool, the swiotlb= line, scenarios across seeds."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from swiotlb.lab.advise import smallest_passing, swiotlb_arg
from swiotlb.lab.cli import main


def test_smallest_passing_finds_the_threshold_in_units() -> None:
    trials: list[tuple[int, int]] = []
    assert smallest_passing(300, 128, lambda n: max(0, 1000 - n), trials) == 1024
    assert trials[0] == (384, 616)  # starts at the lower bound, rounded up to a unit
    assert all(n % 128 == 0 for n, _ in trials)
    assert smallest_passing(1, 256, lambda n: 0, []) == 256
    with pytest.raises(ValueError, match="32 GiB"):
        smallest_passing(128, 128, lambda n: 1, [])


def test_swiotlb_arg_is_what_the_kernel_parses() -> None:
    assert swiotlb_arg(2048, True, 2) == "swiotlb=2048,2,force"
    assert swiotlb_arg(32768, False, 1) == "swiotlb=32768"


def test_advise_a_scenario_across_seeds() -> None:
    r = CliRunner().invoke(main, ["advise", "S6", "--duration", "200ms", "--seeds", "2", "--json"])
    assert r.exit_code == 0, r.output
    j = json.loads(r.output)
    assert j["kind"] == "scenario" and j["seeds"] == [0, 1]
    assert j["min_slots"] % (128 * j["nareas"]) == 0
    assert j["recommended_slots"] >= j["min_slots"]
    assert j["swiotlb"].startswith(f"swiotlb={j['recommended_slots']}")
    assert j["peak_inflight_slots"] > 0 and j["driver"] in j["per_device_peak_slots"]
    assert j["trials"][-1]["failures"] == 0 or any(t["failures"] == 0 for t in j["trials"])
    assert set(j["dynamic"]) == {"linux-6.6", "adaptive", "lending", "rfc-v1"}
    r = CliRunner().invoke(main, ["advise", "S99"])
    assert r.exit_code == 1 and "S99" in r.output


def test_advise_says_when_no_static_pool_can_serve() -> None:
    r = CliRunner().invoke(main, ["advise", "S4", "--duration", "1s", "--seeds", "1"])
    assert r.exit_code == 1
    assert "too large maps fail whatever the pool size" in r.output
