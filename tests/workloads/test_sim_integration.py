"""Each workload kind through the real Simulation (policy "static"): runs, maps, sane peaks."""

from __future__ import annotations

from typing import Any

import pytest

from swiotlb.sim.spec import DeviceSpec, MachineSpec
from swiotlb.workloads import Background, Fio, Frames, Leak, Net, Poisson

simulation = pytest.importorskip("swiotlb.sim.simulation", reason="the simulator (issue 4) has not landed")

MS = 1_000_000
DEVICES = [DeviceSpec("vda", latency_ns=100_000, bandwidth=4_000_000_000), DeviceSpec("eth0", latency_ns=20_000)]


def run(*workloads: Any, duration_ns: int = 50 * MS, seed: int = 1, **machine: Any) -> tuple[Any, dict[str, Any]]:
    spec = MachineSpec(**({"ram": 1 << 30, "cpus": 4, "coco": True} | machine))
    sim = simulation.Simulation(spec, DEVICES, policy="static", policy_options={}, seed=seed, duration_ns=duration_ns)
    for w in workloads:
        sim.add(w)
    return sim, sim.run()


def find(result: Any, key: str) -> Any:
    """The first value under ``key`` anywhere in the result (the schema nests counters)."""
    if isinstance(result, dict):
        if key in result:
            return result[key]
        for v in result.values():
            got = find(v, key)
            if got is not None:
                return got
    elif isinstance(result, list):
        for v in result:
            got = find(v, key)
            if got is not None:
                return got
    return None


def ios(sim: Any, result: dict[str, Any], key: str) -> int:
    for attr in ("counters", "counts"):
        table = getattr(sim, attr, None) or getattr(getattr(sim, "metrics", None), attr, None)
        if table is not None and key in table:
            return int(table[key])
    got = find(result, key)
    return int(got) if got is not None else -1


def test_fio() -> None:
    sim, result = run(Fio("j", "vda", iodepth=8, jobs=2, rw="randrw", rwmixread=70))
    # 16 lanes x 50 ms / (100 us + 1 us transfer + map cost): well over 5000 I/Os
    assert ios(sim, result, "j/ios") > 5_000
    assert find(result, "maps") != 0


def test_fio_large_blocks_under_a_small_pool_requeue() -> None:
    sim, result = run(Fio("j", "vda", bs=((262144, 1),), iodepth=128, jobs=4, requeue_ns=200_000),
                      cmdline="swiotlb=4096")  # 8 MiB: at most 32 of the 512 I/Os fit
    assert ios(sim, result, "j/requeued") > 0
    assert ios(sim, result, "j/ios") > 0


def test_poisson_and_leak() -> None:
    sim, result = run(Poisson("p", "eth0", rate_per_s=100_000.0, bs=((1500, 1), (9000, 1))),
                      Leak("l", "eth0", rate_per_s=1_000.0))
    assert 30 <= ios(sim, result, "l/leaked") <= 80


def test_net() -> None:
    sim, result = run(Net("n", "eth0", rx_ring=64, queues=4, rx_pps=200_000.0, tx_pps=100_000.0, tx_burst=4))
    assert ios(sim, result, "n/rx_refill_failed") in (-1, 0)
    assert ios(sim, result, "n/tx_dropped") in (-1, 0)


def test_frames_too_large_for_a_static_pool() -> None:
    sim, result = run(Frames("v", "vda", fps=60.0, buffers=3), duration_ns=200 * MS)
    assert ios(sim, result, "v/frames_dropped") == 12  # 8.3 MB > the 256 KiB a static pool maps
    assert ios(sim, result, "v/frames") in (-1, 0)


def test_background() -> None:
    sim, result = run(Background("bg", target_bytes=64 << 20, step_ns=10 * MS),
                      Fio("j", "vda", iodepth=4))
    assert sim.pages.bytes_by_owner().get("background/bg", 0) >= 64 << 20
    assert ios(sim, result, "j/ios") > 0


def test_same_seed_same_result() -> None:
    kinds = (Fio("j", "vda", iodepth=4, rw="randrw"), Poisson("p", "eth0", rate_per_s=50_000.0),
             Net("n", "eth0", rx_ring=16, rx_pps=50_000.0), Leak("l", "eth0", rate_per_s=500.0))
    a, b, c = (run(*kinds, duration_ns=20 * MS, seed=s)[1] for s in (5, 5, 6))
    assert a == b
    assert a != c
