"""Guest physical memory: real bytes (:class:`PhysicalMemory`) and who owns which range
(:class:`RangeAllocator`). Independent of the allocator model in :mod:`swiotlb.core`."""

from swiotlb.memory.physical import MemoryAccessError, MemorySnapshot, PhysicalMemory
from swiotlb.memory.ranges import OutOfMemory, RangeAllocator, RangeError

__all__ = [
    "MemoryAccessError",
    "MemorySnapshot",
    "OutOfMemory",
    "PhysicalMemory",
    "RangeAllocator",
    "RangeError",
]
