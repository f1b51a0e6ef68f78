"""Stand-ins shared by the policy tests: a device and a settable clock."""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1 << 30


@dataclass(frozen=True)
class Dev:
    """What a policy asks of a device (``PolicyDevice``)."""

    name: str = "nvme0"
    min_align_mask: int = 0
    seg_boundary_mask: int = 0xFFFF_FFFF
    dma_limit: int = (1 << 64) - 1


class Clock:
    """A clock the test moves by hand (``now`` in nanoseconds)."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now
