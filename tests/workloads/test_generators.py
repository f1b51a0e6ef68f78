"""The registry matches the contract's table; every kind is deterministic by seed."""

from __future__ import annotations

import dataclasses
import random
import typing
from typing import Any

import pytest

from swiotlb.memory import PageAllocator, ZoneLayout
from swiotlb.workloads import WORKLOADS, Background, Fio, Frames, Leak, Net, Poisson, Workload
from swiotlb.workloads.base import draws
from tests.workloads.fakesim import FakeSim

MS = 1_000_000
REQ = dataclasses.MISSING

# kind -> [(field, type text, default)], transcribed from /tmp/lead/contract.md (issue 4)
CONTRACT: dict[str, list[tuple[str, str, object]]] = {
    "fio": [("name", "str", REQ), ("device", "str", REQ), ("bs", "SizeMix", ((4096, 1),)), ("rw", "str", "randread"),
            ("rwmixread", "int", 50), ("iodepth", "int", 1), ("jobs", "int", 1), ("start_ns", "int", 0),
            ("stop_ns", "int | None", None), ("think_ns", "int", 0), ("may_sleep", "bool", False),
            ("defer", "bool", False), ("requeue_ns", "int", 3_000_000), ("offset", "int", 0),
            ("cpu", "int | None", None), ("burst_iodepth", "int", 0), ("burst_ns", "int", 0),
            ("period_ns", "int", 0), ("burst_at_ns", "int", 0)],
    "poisson": [("name", "str", REQ), ("device", "str", REQ), ("rate_per_s", "float", REQ),
                ("bs", "SizeMix", ((4096, 1),)), ("direction", "str", "to_device"), ("hold_ns", "int | None", None),
                ("may_sleep", "bool", False), ("start_ns", "int", 0), ("stop_ns", "int | None", None),
                ("offset", "int", 0), ("burst_rate_per_s", "float", 0.0), ("burst_ns", "int", 0),
                ("period_ns", "int", 0), ("burst_at_ns", "int", 0)],
    "net": [("name", "str", REQ), ("device", "str", REQ), ("rx_ring", "int", 256), ("rx_buf", "int", 2048),
            ("rx_pps", "float", 0.0), ("tx_pps", "float", 0.0), ("tx_frame", "int", 1500), ("tx_burst", "int", 1),
            ("queues", "int", 1), ("start_ns", "int", 0), ("stop_ns", "int | None", None)],
    "frames": [("name", "str", REQ), ("device", "str", REQ), ("size", "SizeMix", ((8294400, 1),)),
               ("fps", "float", 60.0), ("buffers", "int", 3), ("direction", "str", "to_device"),
               ("may_sleep", "bool", True), ("start_ns", "int", 0), ("stop_ns", "int | None", None), ("cpu", "int", 0)],
    "leak": [("name", "str", REQ), ("device", "str", REQ), ("bs", "SizeMix", ((4000, 1),)), ("rate_per_s", "float", 0.19),
             ("direction", "str", "from_device"), ("may_sleep", "bool", False), ("start_ns", "int", 0),
             ("stop_ns", "int | None", None)],
    "background": [("name", "str", REQ), ("target_bytes", "int", 0), ("ramp", "tuple[tuple[int, int], ...]", ()),
                   ("step_ns", "int", 100_000_000), ("movable_fraction", "float", 0.9),
                   ("order_mix", "tuple[tuple[int, float], ...]", ((0, 1.0),)),
                   ("max_bytes_per_step", "int | None", None)],
}
TYPES = {"SizeMix": tuple[tuple[int, int], ...], "int | None": int | None, "str": str, "int": int, "float": float,
         "bool": bool, "tuple[tuple[int, int], ...]": tuple[tuple[int, int], ...],
         "tuple[tuple[int, float], ...]": tuple[tuple[int, float], ...]}


def test_registry_matches_the_contract() -> None:
    assert set(WORKLOADS) == set(CONTRACT)
    for kind, cls in WORKLOADS.items():
        assert cls.kind == kind  # type: ignore[attr-defined]
        hints = typing.get_type_hints(cls)
        got = [(f.name, f.default) for f in dataclasses.fields(cls)]
        assert got == [(n, d) for n, _, d in CONTRACT[kind]], kind
        for n, t, _ in CONTRACT[kind]:
            assert hints[n] == TYPES[t], (kind, n)
        assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_instances_are_workloads() -> None:
    assert isinstance(Fio("j", "d"), Workload)
    assert isinstance(Background("b"), Workload)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Fio("j", "d").iodepth = 2  # type: ignore[misc]
    with pytest.raises(ValueError, match="^fio: name must be a non-empty string"):
        Fio("", "d")


def test_draws() -> None:
    rng = random.Random(1)
    state = rng.getstate()
    one = draws(rng, ["x"])
    assert [next(one) for _ in range(3)] == ["x"] * 3 and rng.getstate() == state  # no randomness used
    skewed = draws(rng, ["a", "b", "zero"], [3.0, 1.0, 0.0])
    got = [next(skewed) for _ in range(4000)]
    assert "zero" not in got and 0.72 < got.count("a") / 4000 < 0.78


def machine(seed: int) -> FakeSim:
    return FakeSim(seed=seed, end_ns=30 * MS, cpus=4, capacity=600_000,
                   pages=PageAllocator(ZoneLayout(64 << 20, dma_bits=None, dma32=False)))


KINDS: dict[str, Any] = {  # each with randomness everywhere it can be
    "fio": Fio("f", "d0", bs=((4096, 3), (65536, 1)), rw="randrw", iodepth=4, jobs=2, requeue_ns=100_000),
    "poisson": Poisson("p", "d0", rate_per_s=20_000.0, bs=((512, 1), (8192, 1)), hold_ns=200_000),
    "net": Net("n", "d0", rx_ring=32, queues=2, rx_pps=30_000.0, tx_pps=20_000.0, tx_burst=2),
    "frames": Frames("v", "d0", size=((100_000, 1), (150_000, 1)), fps=1000.0, buffers=2),
    "leak": Leak("l", "d0", rate_per_s=2_000.0, bs=((4000, 1), (2000, 1))),
    "background": Background("b", target_bytes=16 << 20, step_ns=1_000_000, order_mix=((0, 1.0), (3, 1.0))),
}


def run(seed: int, *workloads: Any) -> FakeSim:
    sim = machine(seed)
    for w in workloads:
        sim.add(w)
    return sim.run()


def log(sim: FakeSim) -> list[Any]:
    return [*sim.calls, sorted(sim.counters.items()), sorted((k, tuple(v)) for k, v in sim.samples.items()),
            sim.pages.buddyinfo()]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_same_seed_same_run_different_seed_different_run(kind: str) -> None:
    assert set(KINDS) == set(WORKLOADS)
    a, b, c = (run(seed, KINDS[kind]) for seed in (7, 7, 8))
    assert log(a) == log(b)
    assert log(a) != log(c)


def test_all_kinds_together_are_deterministic() -> None:
    a, b = run(3, *KINDS.values()), run(3, *KINDS.values())
    assert log(a) == log(b)
    assert len(a.calls) > 5_000 and a.of("fail")  # a busy run that hits the capacity
