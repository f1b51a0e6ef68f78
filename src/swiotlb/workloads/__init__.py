"""Workloads for the simulator (issue 4): generators of DMA traffic and memory load, and scenarios.

A workload is a frozen dataclass with a ``kind`` and a ``start(sim)``; :data:`WORKLOADS` maps
kinds to classes (see :mod:`.generators`).
"""

from swiotlb.workloads.generators import (
    WORKLOADS,
    Background,
    Fio,
    Frames,
    Leak,
    Net,
    Poisson,
    SimLike,
    SizeMix,
    Workload,
)

__all__ = ["WORKLOADS", "Background", "Fio", "Frames", "Leak", "Net", "Poisson", "SimLike", "SizeMix", "Workload"]
