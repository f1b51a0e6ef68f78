"""Exceptions of the DMA layer: failed mappings and DMA API misuse.

A failed mapping is a normal runtime outcome (the kernel returns ``DMA_MAPPING_ERROR``):
:class:`DmaMappingError`. Misuse is a driver bug that the kernel's CONFIG_DMA_API_DEBUG reports
(kernel/dma/debug.c): one :class:`DmaApiMisuse` subclass per kind. Misuse is always detected
before anything is changed, so after catching one the allocator and memory are as they were.
"""

from __future__ import annotations

from typing import Literal

MapCause = Literal["full", "too_large", "unaddressable", "no_pool"]


class DmaError(Exception):
    """Base of every DMA-layer exception."""


class DmaMappingError(DmaError):
    """A streaming mapping failed (``dma_mapping_error()`` would return true).

    ``cause``: ``"full"`` (no free run now), ``"too_large"`` (no free run could ever fit, spec
    §1.6), ``"unaddressable"`` (the bounce buffer itself is beyond the device's limit, §4.3),
    ``"no_pool"`` (the buffer needs bouncing but there is no bounce pool, §4.4).
    """

    def __init__(self, message: str, *, cause: MapCause, device: str, size: int, phys_addr: int) -> None:
        super().__init__(message)
        self.cause: MapCause = cause
        self.device = device
        self.size = size
        self.phys_addr = phys_addr


class DmaApiMisuse(DmaError):
    """A DMA API call that breaks the API's rules; the message names the device and address."""

    def __init__(self, message: str, *, device: str, dma_addr: int | None = None) -> None:
        super().__init__(message)
        self.device = device
        self.dma_addr = dma_addr


class UnknownMappingError(DmaApiMisuse):
    """Unmap (or sync) of an address the device never mapped."""


class DoubleUnmapError(UnknownMappingError):
    """Unmap of an address whose mapping was already unmapped."""


class UnmapMismatchError(DmaApiMisuse):
    """Unmap with a size, direction or function (single vs sg) different from the map."""


class SyncRangeError(DmaApiMisuse):
    """A sync of bytes outside the mapping."""


class SyncDirectionError(DmaApiMisuse):
    """A sync in a direction the mapping does not allow."""


class InvalidDirectionError(DmaApiMisuse):
    """DMA_NONE or an unknown value where a data direction is required (the kernel BUG()s)."""


class InvalidSizesError(DmaApiMisuse):
    """``mapping_size > alloc_size`` or a non-positive size."""


class DeviceAccessError(DmaApiMisuse):
    """A device access (``dma_read``/``dma_write``) outside every live mapping of the device."""


class MappingsLeakedError(DmaApiMisuse):
    """A device is removed while it still has live mappings."""


class DeviceRemovedError(DmaApiMisuse):
    """A call on a device that was removed."""
