"""swiotlb: a laboratory for Linux SWIOTLB bounce buffering.

The public entry point is :class:`Machine`: a guest with RAM, a boot bounce pool sized and
placed like the kernel's, and devices that use the streaming DMA API with real bytes.
"""

from swiotlb._mypyc import warn_if_stale

warn_if_stale()  # before anything compiled is imported

from swiotlb.dma import (  # noqa: E402
    CpuBuffer,
    Device,
    DmaApiMisuse,
    DmaAttrs,
    DmaDirection,
    DmaMappingError,
    DmaSegment,
    Machine,
    dma_bit_mask,
)

__all__ = [
    "CpuBuffer",
    "Device",
    "DmaApiMisuse",
    "DmaAttrs",
    "DmaDirection",
    "DmaMappingError",
    "DmaSegment",
    "Machine",
    "dma_bit_mask",
]
