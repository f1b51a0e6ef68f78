"""frames: one big buffer per frame period, `buffers` held, failed frames skipped."""

from __future__ import annotations

import pytest

from swiotlb.sim.spec import NS_PER_S
from swiotlb.workloads import Frames
from tests.workloads.fakesim import FakeSim

MS = 1_000_000


def test_keeps_buffers_in_flight_at_the_frame_rate() -> None:
    sim = FakeSim(end_ns=NS_PER_S, cpus=2)
    sim.add(Frames("f", "d0", buffers=3, cpu=1))
    seen: list[int] = []
    sim.every(7 * MS, lambda: seen.append(len(sim.live)), 60 * MS)
    sim.run()
    maps = sim.of("map")
    assert len(maps) == 60 == sim.counters["f/frames"]
    assert [c[1] for c in maps[:4]] == [0, NS_PER_S // 60, 2 * NS_PER_S // 60, 3 * NS_PER_S // 60]
    assert {(c[3], c[4], c[5]) for c in maps} == {(8294400, "TO_DEVICE", 1)}
    assert set(seen) == {3} and sim.peak_live == 3
    held = [m.unmapped_ns - m.mapped_ns for m in sim.maps if m.unmapped_ns is not None]
    assert held and all(abs(h - 3 * NS_PER_S / 60) <= 1 for h in held)


def test_frames_held_at_stop_are_released_on_schedule() -> None:
    sim = FakeSim(end_ns=NS_PER_S)
    sim.add(Frames("f", "d0", fps=100.0, buffers=2, start_ns=5 * MS, stop_ns=100 * MS))
    sim.run()
    assert len(sim.of("map")) == 10 and not sim.live
    assert [c[1] for c in sim.of("unmap")][-2:] == [105 * MS, 115 * MS]
    short = FakeSim(end_ns=NS_PER_S)  # fewer frames than buffers
    short.add(Frames("f", "d0", fps=10.0, buffers=3, stop_ns=150 * MS))
    short.run()
    assert [c[1] for c in short.of("unmap")] == [300 * MS, 400 * MS]


def test_failed_frames_are_dropped_and_counted() -> None:
    sim = FakeSim(end_ns=NS_PER_S, capacity=2 * 8294400)
    sim.add(Frames("f", "d0", size=((8294400, 1), (33177600, 1)), buffers=2))
    sim.run()
    dropped, ok = sim.counters["f/frames_dropped"], sim.counters["f/frames"]
    assert dropped == len(sim.of("fail")) > 0 and ok == len(sim.of("map")) > 0 and ok + dropped == 60
    assert {c[3] for c in sim.of("map")} == {8294400} and sim.peak_live <= 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fps": 0.0}, "frames 'f': fps must be > 0"),
        ({"buffers": 0}, "frames 'f': buffers must be >= 1"),
        ({"size": ((0, 1),)}, "frames 'f': size must be sizes"),
        ({"cpu": None}, "frames 'f': cpu must be an integer"),
    ],
)
def test_frames_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match="^" + message):
        Frames("f", "d0", **kwargs)  # type: ignore[arg-type]
