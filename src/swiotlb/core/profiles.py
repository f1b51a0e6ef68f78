"""Kernel generations as data plus small rule functions (spec §3.4, §7.1).

A :class:`KernelProfile` says which rules a modelled kernel follows; the allocator in
:mod:`swiotlb.core.allocator` reads it instead of branching on version strings. The rule
functions are pure arithmetic: they compute masks and strides, never touch slots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from swiotlb.core.constants import IO_TLB_SHIFT, SLOT_LOW_MASK, U32_MASK

SearchLoop = Literal["counted", "wrap"]


@dataclass(frozen=True, slots=True)
class SearchMasks:
    """What one slot search must honour, after a generation's alignment rules.

    A slot at DMA address ``a`` is *aligned* when ``a & align_mask == 0`` and, for a non-zero
    original address, ``a & iotlb_mask == orig & iotlb_mask``. ``stride`` is how far the scan
    jumps after an aligned slot that cannot be used.
    """

    align_mask: int
    iotlb_mask: int
    stride: int


def masks_v6_9(size: int, min_align_mask: int, alloc_align_mask: int, page_size: int) -> SearchMasks:
    """>= 6.9 (Will Deacon's fixes, spec §3.3): real alignment of the first slot.

    The page rule applies only when neither mask is set, and then means true page alignment.
    """
    iotlb = min_align_mask & U32_MASK
    align = alloc_align_mask & U32_MASK
    if align == 0 and iotlb == 0 and size >= page_size:
        align = page_size - 1
    align |= SLOT_LOW_MASK
    iotlb &= ~align & U32_MASK
    return SearchMasks(align, iotlb, (max(align, iotlb) >> IO_TLB_SHIFT) + 1)


def masks_v6_3(size: int, min_align_mask: int, alloc_align_mask: int, page_size: int) -> SearchMasks:
    """6.3-6.8 (spec §3.4): one merged mask compared with ``orig_addr``.

    Buffers become *congruent* to the original modulo the mask, not aligned, and an
    ``orig_addr`` of 0 skips the test (the root of CVE-2024-35814).
    """
    iotlb = (min_align_mask | alloc_align_mask) & U32_MASK
    if size >= page_size:
        iotlb |= page_size - 1
    iotlb &= ~SLOT_LOW_MASK & U32_MASK
    return SearchMasks(0, iotlb, (iotlb >> IO_TLB_SHIFT) + 1)


def masks_v5_12(size: int, min_align_mask: int, alloc_align_mask: int, page_size: int) -> SearchMasks:
    """5.12-6.2 (spec §3.4): min-align bits above the slot, a page stride for big maps."""
    iotlb = min_align_mask & ~SLOT_LOW_MASK & U32_MASK
    stride = (iotlb >> IO_TLB_SHIFT) + 1
    if size >= page_size:
        stride = max(stride, stride << (page_size.bit_length() - 1 - IO_TLB_SHIFT))
    stride = max(stride, (alloc_align_mask >> IO_TLB_SHIFT) + 1)
    return SearchMasks(0, iotlb, stride)


@dataclass(frozen=True, slots=True)
class KernelProfile:
    """The rules of one kernel generation.

    Fields are named after the behaviour they switch, with the kernel version that changed it.
    """

    name: str
    description: str
    areas: bool  # per-area locks and cursors (>= 6.0); False = one global lock/cursor
    search_loop: SearchLoop  # "counted" (>= 6.3) or do/while with wrap (<= 6.2)
    search_masks: Callable[[int, int, int, int], SearchMasks]
    pad_slots: bool  # offsets >= 2 KiB under both masks become padding slots (>= 6.9)
    alloc_size_arg: bool  # swiotlb_tbl_map_single takes alloc_size (<= 6.9)
    area_major: bool  # dynamic search walks areas across pools (>= 6.8)
    early_reject: bool  # dynamic find_slots rejects > 256 KiB before scanning (>= 6.9)
    list_capped: bool  # initial free-run lengths capped at the pool end (>= 6.7, 6.6.3)
    signed_bounce: bool  # partial syncs fixed (>= 6.10); else "access before mapping start"
    always_copy_on_map: bool  # map copies orig -> bounce whatever the direction (>= 5.18)
    hiwater: bool  # debugfs io_tlb_used_hiwater (>= 6.5)
    transient_counter: bool  # debugfs io_tlb_transient_nslabs (>= 6.9)
    dynamic_available: bool  # CONFIG_SWIOTLB_DYNAMIC exists (>= 6.6)
    min_align_limits_size: bool = True  # max mapping size less the min-align mask (by 6.1)


V6_12 = KernelProfile(
    name="v6.12",
    description="Linux >= 6.9 rules as in 6.12: pad slots, true alignment, area-major search",
    areas=True,
    search_loop="counted",
    search_masks=masks_v6_9,
    pad_slots=True,
    alloc_size_arg=False,
    area_major=True,
    early_reject=True,
    list_capped=True,
    signed_bounce=True,
    always_copy_on_map=True,
    hiwater=True,
    transient_counter=True,
    dynamic_available=True,
)

V6_6 = KernelProfile(
    name="v6.6",
    description="Linux 6.3-6.8 rules at the 6.7 merge window: merged alignment mask, pool-major search",
    areas=True,
    search_loop="counted",
    search_masks=masks_v6_3,
    pad_slots=False,
    alloc_size_arg=True,
    area_major=False,
    early_reject=False,
    list_capped=False,
    signed_bounce=False,
    always_copy_on_map=True,
    hiwater=True,
    transient_counter=False,
    dynamic_available=True,
)

V5_15 = KernelProfile(
    name="v5.15",
    description="Linux 5.12-5.19 legacy: one lock, one cursor, do/while search with wrap",
    areas=False,
    search_loop="wrap",
    search_masks=masks_v5_12,
    pad_slots=False,
    alloc_size_arg=True,
    area_major=False,
    early_reject=False,
    list_capped=False,
    signed_bounce=False,
    always_copy_on_map=False,
    hiwater=False,
    transient_counter=False,
    dynamic_available=False,
    min_align_limits_size=False,
)

PROFILES: dict[str, KernelProfile] = {p.name: p for p in (V6_12, V6_6, V5_15)}
DEFAULT_PROFILE = V6_12


def get_profile(name: str | KernelProfile) -> KernelProfile:
    """Look a profile up by name (``"v6.12"``, ``"6.12"``, ``"v6.6"``, ``"v5.15"``)."""
    if isinstance(name, KernelProfile):
        return name
    key = name if name.startswith("v") else f"v{name}"
    try:
        return PROFILES[key]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise ValueError(f"unknown kernel profile {name!r}; known profiles: {known}") from None
