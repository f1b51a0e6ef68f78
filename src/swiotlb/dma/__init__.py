"""The streaming DMA API on top of the allocator: devices, dma-direct, debug checks, events.

Modules: :mod:`types` (directions, attributes), :mod:`errors`, :mod:`events` (tracepoints and
their bus), :mod:`ratelimit` (printk rate limits), :mod:`debug` (live mappings and misuse
checks), :mod:`device`, :mod:`direct` (map/unmap/sync and the byte copies), :mod:`machine`.
"""

from swiotlb.dma.debug import LiveMapping, MappingTable
from swiotlb.dma.device import Device
from swiotlb.dma.direct import DmaDirect
from swiotlb.dma.errors import (
    DeviceAccessError,
    DeviceRemovedError,
    DmaApiMisuse,
    DmaError,
    DmaMappingError,
    DoubleUnmapError,
    InvalidDirectionError,
    InvalidSizesError,
    MappingsLeakedError,
    SyncDirectionError,
    SyncRangeError,
    UnknownMappingError,
    UnmapMismatchError,
)
from swiotlb.dma.events import (
    DmaEvent,
    DmaMapPage,
    DmaMapSg,
    DmaSyncSingleForCpu,
    DmaSyncSingleForDevice,
    DmaUnmapPage,
    DmaUnmapSg,
    EventBus,
    Subscription,
    SwiotlbBounced,
)
from swiotlb.core.sizing import parse_size
from swiotlb.dma.machine import CpuBuffer, Machine
from swiotlb.dma.types import DMA_MAPPING_ERROR, DeferredMap, DmaAttrs, DmaDirection, DmaSegment, dma_bit_mask

__all__ = [
    "CpuBuffer",
    "DMA_MAPPING_ERROR",
    "DeferredMap",
    "Device",
    "DeviceAccessError",
    "DeviceRemovedError",
    "DmaApiMisuse",
    "DmaAttrs",
    "DmaDirect",
    "DmaDirection",
    "DmaError",
    "DmaEvent",
    "DmaMapPage",
    "DmaMapSg",
    "DmaMappingError",
    "DmaSegment",
    "DmaSyncSingleForCpu",
    "DmaSyncSingleForDevice",
    "DmaUnmapPage",
    "DmaUnmapSg",
    "DoubleUnmapError",
    "EventBus",
    "InvalidDirectionError",
    "InvalidSizesError",
    "LiveMapping",
    "Machine",
    "MappingTable",
    "MappingsLeakedError",
    "Subscription",
    "SwiotlbBounced",
    "SyncDirectionError",
    "SyncRangeError",
    "UnknownMappingError",
    "UnmapMismatchError",
    "dma_bit_mask",
    "parse_size",
]
