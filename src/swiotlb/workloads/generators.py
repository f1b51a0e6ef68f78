"""The workload generators of issue 4 and their registry (``kind`` -> class).

Each kind lives in a small module by what it models: :mod:`.storage` (fio), :mod:`.arrivals`
(poisson, leak), :mod:`.network` (net), :mod:`.display` (frames), :mod:`.memload` (background);
:mod:`.base` holds what they share. Scenario files name kinds; the scenario loader builds the
classes from their dataclass fields, so adding a kind here is all it takes to make it loadable.
"""

from __future__ import annotations

from swiotlb.workloads.arrivals import Leak, Poisson
from swiotlb.workloads.base import SimLike, SizeMix, Workload
from swiotlb.workloads.display import Frames
from swiotlb.workloads.memload import Background
from swiotlb.workloads.network import Net
from swiotlb.workloads.storage import Fio

__all__ = ["WORKLOADS", "Background", "Fio", "Frames", "Leak", "Net", "Poisson", "SimLike", "SizeMix", "Workload"]

WORKLOADS: dict[str, type] = {cls.kind: cls for cls in (Fio, Poisson, Net, Frames, Leak, Background)}
"""Every workload kind, keyed by the ``kind`` of scenario files."""
