"""Guest physical memory: real bytes (:class:`PhysicalMemory`), who owns which range at boot
(:class:`RangeAllocator`), and the running machine's memory model: allocation flags, buddy
allocator, zones, page allocator with CMA and migration, memory encryption and background load.
Independent of the allocator model in :mod:`swiotlb.core`."""

from swiotlb.memory.buddy import BuddyAllocator, BuddyError, DoubleFree, aligned_blocks
from swiotlb.memory.encryption import EncryptionError, EncryptionStats, MemoryEncryption
from swiotlb.memory.gfp import (
    GFP_ATOMIC,
    GFP_DMA,
    GFP_DMA32,
    GFP_HIGHUSER_MOVABLE,
    GFP_KERNEL,
    GFP_NOFS,
    GFP_NOIO,
    GFP_NOWAIT,
    GFP_TRANSHUGE_LIGHT,
    GFP_USER,
    Gfp,
    SleepInAtomicContext,
    may_sleep,
)
from swiotlb.memory.load import BackgroundLoad, LoadStats
from swiotlb.memory.pages import (
    CMA_ALIGNMENT,
    PAGE_ALLOC_COSTLY_ORDER,
    CmaRegion,
    PageAllocator,
    PageError,
    PageStats,
)
from swiotlb.memory.physical import MemoryAccessError, MemorySnapshot, PhysicalMemory
from swiotlb.memory.ranges import OutOfMemory, RangeAllocator, RangeError
from swiotlb.memory.zones import ZONE_DMA, ZONE_DMA32, ZONE_NORMAL, Zone, ZoneLayout

__all__ = [
    "MemoryAccessError",
    "MemorySnapshot",
    "OutOfMemory",
    "PhysicalMemory",
    "RangeAllocator",
    "RangeError",
    # allocation flags
    "GFP_ATOMIC",
    "GFP_DMA",
    "GFP_DMA32",
    "GFP_HIGHUSER_MOVABLE",
    "GFP_KERNEL",
    "GFP_NOFS",
    "GFP_NOIO",
    "GFP_NOWAIT",
    "GFP_TRANSHUGE_LIGHT",
    "GFP_USER",
    "Gfp",
    "SleepInAtomicContext",
    "may_sleep",
    # buddy allocator and zones
    "BuddyAllocator",
    "BuddyError",
    "DoubleFree",
    "aligned_blocks",
    "ZONE_DMA",
    "ZONE_DMA32",
    "ZONE_NORMAL",
    "Zone",
    "ZoneLayout",
    # page allocator
    "CMA_ALIGNMENT",
    "PAGE_ALLOC_COSTLY_ORDER",
    "CmaRegion",
    "PageAllocator",
    "PageError",
    "PageStats",
    # encryption and load
    "EncryptionError",
    "EncryptionStats",
    "MemoryEncryption",
    "BackgroundLoad",
    "LoadStats",
]
