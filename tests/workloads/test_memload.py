"""background: a BackgroundLoad on the machine's pages, stepped every step_ns from time 0."""

from __future__ import annotations

import pytest

from swiotlb.memory import PageAllocator, ZoneLayout
from swiotlb.workloads import Background
from swiotlb.workloads.memload import ramp_target
from tests.workloads.fakesim import FakeSim

MIB = 1 << 20
MS = 1_000_000


def machine(ram: int = 64 * MIB, **kw: object) -> FakeSim:
    return FakeSim(pages=PageAllocator(ZoneLayout(ram, dma_bits=None, dma32=False)), **kw)  # type: ignore[arg-type]


def test_holds_the_target_and_makes_no_dma() -> None:
    sim = machine(end_ns=MS)
    sim.add(Background("bg", target_bytes=24 * MIB, step_ns=100_000))
    sim.run()
    assert not sim.calls
    assert sim.pages.bytes_by_owner()["background/bg"] == 24 * MIB
    assert sim.samples["bg/resident_bytes"] == [24 * MIB] * 10  # steps at 0, 0.1 ms, ... 0.9 ms
    sim.pages.check()


def test_follows_a_ramp_at_most_max_bytes_per_step() -> None:
    sim = machine(end_ns=1_000 * MS)
    sim.add(Background("bg", ramp=((100 * MS, 0), (500 * MS, 40 * MIB), (500 * MS, 8 * MIB)),
                       step_ns=50 * MS, order_mix=((0, 3.0), (4, 1.0)), max_bytes_per_step=8 * MIB))
    sim.run()
    got = sim.samples["bg/resident_bytes"]
    target = ramp_target(((100 * MS, 0), (500 * MS, 40 * MIB), (500 * MS, 8 * MIB)))
    want = [target(t) for t in range(0, 1_000 * MS, 50 * MS)]
    assert want[:3] == [0, 0, 0] and want[6] == 20 * MIB and want[-1] == 8 * MIB
    prev, limited = 0, 0
    for g, w in zip(got, want):  # steps move by <= 8 MiB (plus one 64 KiB block of overshoot)
        assert abs(g - prev) <= 8 * MIB + 64 * 1024
        if abs(w - prev) <= 8 * MIB:
            assert abs(g - w) <= 64 * 1024  # within reach: reached
        else:
            limited += 1
        prev = g
    assert limited >= 1  # the 40 -> 8 MiB drop at 500 ms takes several steps
    assert abs(got[-1] - 8 * MIB) <= 64 * 1024


def test_ramp_target_is_flat_outside_and_linear_inside() -> None:
    f = ramp_target(((10, 100), (20, 200)))
    assert [f(0), f(10), f(15), f(20), f(99)] == [100, 100, 150, 200, 200]


def test_orders_beyond_the_allocator_are_rejected_at_start() -> None:
    sim = machine()
    sim.add(Background("bg", target_bytes=MIB, order_mix=((0, 1.0), (30, 1.0))))
    with pytest.raises(ValueError, match="^background 'bg': order_mix must be orders <= the allocator's max order"):
        sim.run()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"step_ns": 0}, "background 'bg': step_ns must be >= 1"),
        ({"movable_fraction": 1.5}, r"background 'bg': movable_fraction must be a finite number in \[0, 1\]"),
        ({"order_mix": ()}, "background 'bg': order_mix must be a non-empty list"),
        ({"order_mix": ((0, 1.0), (0, 2.0))}, "background 'bg': order_mix must be distinct orders"),
        ({"order_mix": ((0, 0.0),)}, "background 'bg': order_mix must be weights that sum"),
        ({"ramp": ((5, 1), (4, 1))}, "background 'bg': ramp must be points in non-decreasing time"),
        ({"ramp": ((5, -1),)}, "background 'bg': ramp bytes must be >= 0"),
        ({"max_bytes_per_step": 0}, "background 'bg': max_bytes_per_step must be >= 1"),
        ({"target_bytes": -1}, "background 'bg': target_bytes must be >= 0"),
    ],
)
def test_background_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match="^" + message):
        Background("bg", **kwargs)  # type: ignore[arg-type]


def test_normalised() -> None:
    b = Background("bg", ramp=[[0, 1], [5, 2]], order_mix=[[0, 1], [2, 3]])  # type: ignore[arg-type]
    assert b.ramp == ((0, 1), (5, 2)) and b.order_mix == ((0, 1.0), (2, 3.0))
    hash(b)
