"""Display frames: a few very large buffers, mapped once per frame (S4, RFC case 2).

On the Raspberry Pi 4 a dma-buf imported by vc4 (a 30-bit device) is bounced whole: 8,294,400
bytes for a FullHD frame, about 34 MiB for 4K, far above the 256 KiB a static pool can map.
Double or triple buffering keeps ``buffers`` such frames mapped at once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from swiotlb.sim.spec import NS_PER_S
from swiotlb.workloads.base import DIRECTIONS, Checker, SimLike, SizeMix, size_draws, stop_of


@dataclass(frozen=True)
class Frames:
    """One ``size`` buffer mapped every ``1/fps`` seconds, held ``buffers`` frame periods (S4).

    Frame ``k`` is mapped at ``start_ns + k / fps`` and unmapped at frame ``k + buffers``'s time,
    just before that frame is mapped (the flip releases the oldest buffer), so at most
    ``buffers`` are mapped. A failed map skips the frame (``{name}/frames_dropped``); mapped
    frames count ``{name}/frames``. Frames still held at ``stop_ns`` are released on schedule.
    """

    kind: ClassVar[str] = "frames"

    name: str
    device: str
    size: SizeMix = ((8294400, 1),)
    fps: float = 60.0
    buffers: int = 3
    direction: str = "to_device"
    may_sleep: bool = True
    start_ns: int = 0
    stop_ns: int | None = None
    cpu: int = 0

    def __post_init__(self) -> None:
        c = Checker(self.kind, self.name)
        c.str_("device", self.device)
        object.__setattr__(self, "size", c.size_mix("size", self.size))
        fps = c.float_("fps", self.fps)
        if fps <= 0:
            raise c.fail("fps", "> 0", self.fps)
        object.__setattr__(self, "fps", fps)
        c.int_("buffers", self.buffers, 1)
        object.__setattr__(self, "direction", c.choice("direction", self.direction, tuple(DIRECTIONS)))
        c.bool_("may_sleep", self.may_sleep)
        c.span(self.start_ns, self.stop_ns)
        c.int_("cpu", self.cpu)

    def start(self, sim: SimLike) -> None:
        Checker(self.kind, self.name).cpu(self.cpu, sim)
        dev = sim.device(self.device)
        stop = stop_of(self.stop_ns, sim)
        if self.start_ns >= stop:
            return
        map_, unmap, count = sim.map, sim.unmap, sim.count
        sizes = size_draws(sim.rng(f"{self.name}/size"), self.size, dev, sim.rng(f"{self.name}/jitter"))
        dev_name, direction, may_sleep, cpu = self.device, DIRECTIONS[self.direction], self.may_sleep, self.cpu
        held: deque[Any] = deque()  # the last `buffers` frames, oldest first (None: dropped)
        buffers, start_ns, end = self.buffers, self.start_ns, sim.end_ns
        period = NS_PER_S / self.fps
        ok_key, drop_key = f"{self.name}/frames", f"{self.name}/frames_dropped"

        def release() -> None:
            old = held.popleft()
            if old is not None:
                unmap(old)

        def frame() -> None:
            if len(held) >= buffers:
                release()
            m = map_(dev_name, next(sizes)[0], direction, cpu=cpu, may_sleep=may_sleep)
            held.append(m)
            count(drop_key if m is None else ok_key)

        def times() -> Iterator[tuple[int, Callable[[], None]]]:
            k = 0
            while (t := start_ns + int(k * period)) < stop:
                yield t, frame
                k += 1
            for i in range(max(0, k - buffers), k):  # frame i is released at frame i+buffers's time
                t = start_ns + int((i + buffers) * period)
                if t >= end:
                    return
                yield t, release

        sim.engine.add_source(times(), self.name)
