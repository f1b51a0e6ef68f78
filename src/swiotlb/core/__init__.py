"""The kernel's slot allocator: constants, kernel profiles, pools and ``io_tlb_mem``.

Pure state: no clock, no randomness, no files. Everything else in the package builds on it.
"""

from swiotlb.core.allocator import (
    BounceSpan,
    DeviceParams,
    DmaParams,
    IoTlbMem,
    IoTlbSteps,
    MapFailure,
    MapRefused,
    ReleaseError,
    SlotMapping,
)
from swiotlb.core.pool import IoTlbArea, IoTlbPool, PoolLayoutError
from swiotlb.core.profiles import DEFAULT_PROFILE, PROFILES, KernelProfile, get_profile

__all__ = [
    "BounceSpan",
    "DEFAULT_PROFILE",
    "DeviceParams",
    "DmaParams",
    "IoTlbArea",
    "IoTlbMem",
    "IoTlbPool",
    "IoTlbSteps",
    "KernelProfile",
    "MapFailure",
    "MapRefused",
    "PROFILES",
    "PoolLayoutError",
    "ReleaseError",
    "SlotMapping",
    "get_profile",
]
