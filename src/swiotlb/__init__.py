"""swiotlb: a laboratory for Linux SWIOTLB bounce buffering.

The public entry point is :class:`Machine`: a guest with RAM, a boot bounce pool sized and
placed like the kernel's, and devices that use the streaming DMA API with real bytes.
"""

from swiotlb.dma import (
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
