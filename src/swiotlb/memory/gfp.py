"""Page-allocation flags (``gfp_t``) with the meaning the kernel gives them.

Only the bits that change what the model does are kept: the zone modifiers (``__GFP_DMA``,
``__GFP_DMA32``, ``__GFP_MOVABLE``), the reclaim bits that decide whether a caller may sleep,
and the bits policies pass along (``__GFP_NOWARN``, ``__GFP_ZERO``, ``__GFP_HIGH``). The numeric
values are this model's own; the composites follow ``include/linux/gfp_types.h``:
``GFP_KERNEL`` may enter direct reclaim (so it may sleep), ``GFP_NOWAIT`` only wakes kswapd and
``GFP_ATOMIC`` additionally may dip into reserves. "May sleep" is exactly "may enter direct
reclaim" (the kernel's ``gfpflags_allow_blocking``).
"""

from __future__ import annotations

from enum import IntFlag


class SleepInAtomicContext(RuntimeError):
    """A caller that must not sleep asked for an operation that may sleep (migration, decryption).

    The kernel would warn ("sleeping function called from invalid context") or deadlock; the model
    refuses, so callers have to check :func:`may_sleep` first, as the kernel's callers do (spec §5.4:
    "decrypting pages may sleep, so atomic encrypted guests use the pre-decrypted atomic pool").
    """


class Gfp(IntFlag):
    """Single ``__GFP_*`` bits; ``Gfp.DMA`` is the kernel's ``__GFP_DMA`` and so on."""

    NONE = 0
    DMA = 1 << 0  # highest usable zone is ZONE_DMA
    DMA32 = 1 << 1  # highest usable zone is ZONE_DMA32
    MOVABLE = 1 << 2  # the page can be migrated: may be lent from CMA, may be compacted away
    HIGH = 1 << 3  # may use emergency reserves (GFP_ATOMIC)
    IO = 1 << 4  # reclaim may start physical I/O
    FS = 1 << 5  # reclaim may call into filesystems
    HARDWALL = 1 << 6  # cpuset memory policy is enforced (user allocations)
    ZERO = 1 << 7  # return zeroed pages (no effect on placement)
    NOWARN = 1 << 8  # do not report the failure
    DIRECT_RECLAIM = 1 << 9  # the caller may reclaim and compact itself, i.e. may sleep
    KSWAPD_RECLAIM = 1 << 10  # the caller may wake the background reclaimer


GFP_RECLAIM = Gfp.DIRECT_RECLAIM | Gfp.KSWAPD_RECLAIM
GFP_ATOMIC = Gfp.HIGH | Gfp.KSWAPD_RECLAIM
GFP_NOWAIT = Gfp.KSWAPD_RECLAIM
GFP_NOIO = GFP_RECLAIM
GFP_NOFS = GFP_RECLAIM | Gfp.IO
GFP_KERNEL = GFP_RECLAIM | Gfp.IO | Gfp.FS
GFP_USER = GFP_KERNEL | Gfp.HARDWALL
GFP_HIGHUSER_MOVABLE = GFP_USER | Gfp.MOVABLE  # anonymous and page-cache memory (no highmem on 64-bit)
# Opportunistic huge-page attempts: no direct reclaim or compaction, no warning (THP with the
# default defrag=madvise; SLUB's high-order slab attempts behave alike and fall back to order 0).
GFP_TRANSHUGE_LIGHT = (GFP_HIGHUSER_MOVABLE | Gfp.NOWARN) & ~GFP_RECLAIM
GFP_DMA = Gfp.DMA
GFP_DMA32 = Gfp.DMA32

ZONE_MODIFIERS = Gfp.DMA | Gfp.DMA32

# Plain-int masks for hot paths: IntFlag arithmetic costs microseconds per operation.
_DIRECT_RECLAIM = int(Gfp.DIRECT_RECLAIM)
_ZONE_BITS = int(ZONE_MODIFIERS)


def may_sleep(gfp: Gfp | int) -> bool:
    """True when the allocation may block (``gfpflags_allow_blocking``: direct reclaim allowed)."""
    return bool(int(gfp) & _DIRECT_RECLAIM)


def check_zone_bits(gfp: Gfp | int) -> None:
    """Reject ``__GFP_DMA | __GFP_DMA32`` together, a combination the kernel treats as a bug."""
    if int(gfp) & _ZONE_BITS == _ZONE_BITS:
        raise ValueError(f"gfp {Gfp(gfp)!r} names both __GFP_DMA and __GFP_DMA32")
