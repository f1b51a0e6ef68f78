"""Constants and helper arithmetic shared by every kernel generation (spec §1.1, §1.2)."""

from __future__ import annotations

IO_TLB_SHIFT = 11
IO_TLB_SIZE = 1 << IO_TLB_SHIFT  # one slot ("slab"): 2 KiB
IO_TLB_SEGSIZE = 128  # a buffer never crosses a 128-slot segment
IO_TLB_DEFAULT_SIZE = 64 << 20
IO_TLB_MIN_SLABS = (1 << 20) >> IO_TLB_SHIFT  # 512 slots = 1 MiB
MAX_SEGMENT_BYTES = IO_TLB_SEGSIZE * IO_TLB_SIZE  # 256 KiB, the largest single mapping

U32_MASK = (1 << 32) - 1
U64_MASK = (1 << 64) - 1
INVALID_PHYS_ADDR = U64_MASK
DMA_MAPPING_ERROR = U64_MASK

SLOT_LOW_MASK = IO_TLB_SIZE - 1  # 0x7ff: the sub-slot offset bits


def nr_slots(nbytes: int) -> int:
    """Slots needed for ``nbytes`` (the kernel's DIV_ROUND_UP by 2 KiB)."""
    return (nbytes + SLOT_LOW_MASK) >> IO_TLB_SHIFT


def align_up(value: int, alignment: int) -> int:
    """Round ``value`` up to a multiple of ``alignment`` (a power of two)."""
    return (value + alignment - 1) & ~(alignment - 1)


def roundup_pow_of_two(value: int) -> int:
    """Smallest power of two >= ``value`` (``value`` >= 1)."""
    return 1 << (value - 1).bit_length()


def is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def get_max_slots(boundary_mask: int) -> int:
    """Slots per segment-boundary window, ``(mask >> 11) + 1`` (>= v6.6 form)."""
    return (boundary_mask >> IO_TLB_SHIFT) + 1


def is_span_boundary(index: int, nr: int, shift: int, boundary_size: int) -> bool:
    """``iommu_is_span_boundary``: does a run of ``nr`` slots at ``index`` cross a window edge?

    ``shift`` is the window phase of slot 0 (``nr_slots(tbl_dma_addr)``) and ``boundary_size``
    a power of two (spec §1.2).
    """
    return ((shift + index) & (boundary_size - 1)) + nr > boundary_size
