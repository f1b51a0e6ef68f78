"""DMA API enums and small value types (include/linux/dma-direction.h, dma-mapping.h).

Numeric values are the kernel's, so recorded traces and replays agree on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import NamedTuple, Protocol

from swiotlb.core.constants import DMA_MAPPING_ERROR, U64_MASK
from swiotlb.dma.errors import DmaMappingError

__all__ = [
    "DMA_MAPPING_ERROR",
    "DmaAttrs",
    "DmaDirection",
    "DmaSegment",
    "HasPhysAddr",
    "SIZE_MAX",
    "dma_bit_mask",
    "format_attrs",
    "min_not_zero",
]

SIZE_MAX = U64_MASK


class DmaDirection(IntEnum):
    """``enum dma_data_direction``; the names are what the ``dma:*`` tracepoints print."""

    BIDIRECTIONAL = 0
    TO_DEVICE = 1
    FROM_DEVICE = 2
    NONE = 3


class DmaAttrs(IntFlag):
    """``DMA_ATTR_*`` bits. ``MAY_SLEEP`` is the RFC v1 attribute (spec §7.3), never merged."""

    WEAK_ORDERING = 1 << 1
    WRITE_COMBINE = 1 << 2
    NO_KERNEL_MAPPING = 1 << 4
    SKIP_CPU_SYNC = 1 << 5
    FORCE_CONTIGUOUS = 1 << 6
    ALLOC_SINGLE_PAGES = 1 << 7
    NO_WARN = 1 << 8
    PRIVILEGED = 1 << 9
    MAY_SLEEP = 1 << 10


# Names the 6.12 tracepoints decode; MAY_SLEEP never existed upstream, so it is not printed.
_ATTR_NAMES: tuple[tuple[int, str], ...] = tuple(
    (int(a), str(a.name)) for a in DmaAttrs if a is not DmaAttrs.MAY_SLEEP
)


def format_attrs(attrs: int) -> str:
    """The tracepoints' ``attrs=`` text: known flag names joined by ``|`` (empty for none)."""
    if not attrs:
        return ""
    return "|".join(name for bit, name in _ATTR_NAMES if attrs & bit)


def dma_bit_mask(n: int) -> int:
    """``DMA_BIT_MASK(n)``: the lowest ``n`` address bits set."""
    if not 0 <= n <= 64:
        raise ValueError(f"DMA_BIT_MASK({n}) is out of range 0..64")
    return U64_MASK if n == 64 else (1 << n) - 1


def min_not_zero(a: int, b: int) -> int:
    """The kernel's ``min_not_zero``: the smaller of two limits, ignoring a 0 (= no limit)."""
    if a == 0:
        return b
    if b == 0:
        return a
    return a if a < b else b


class DmaSegment(NamedTuple):
    """One mapped scatter-gather entry: where the device sees it and where the CPU data is."""

    dma_addr: int
    length: int
    phys_addr: int


class HasPhysAddr(Protocol):
    """Anything mappable by address: a CPU buffer, a page."""

    @property
    def phys_addr(self) -> int: ...


@dataclass(eq=False)
class DeferredMap:
    """One ``map_single_deferred`` request (FreeBSD's ``bus_dmamap_load`` with a callback).

    Mapped at once, or queued (``deferred``) until the policy has room; the callback runs once,
    on completion. Then ``dma_addr`` is set, or ``error`` if a queued retry failed for good.
    ``wait_ns`` runs from the call to completion on the machine's clock.
    """

    device: str
    phys_addr: int
    size: int
    dir: DmaDirection
    queued_ns: int
    deferred: bool = False
    dma_addr: int | None = None
    error: DmaMappingError | None = None
    done_ns: int | None = None

    @property
    def pending(self) -> bool:
        return self.done_ns is None

    @property
    def wait_ns(self) -> int | None:
        return None if self.done_ns is None else self.done_ns - self.queued_ns
