"""Background memory load: the rest of the system's page cache, anonymous and kernel memory.

A bounce-pool design is only as good as the memory it can get. On a real machine most RAM is
held by page cache and process memory, which scatters small allocations over the address space,
so a 4 MiB contiguous block (a dynamic SWIOTLB pool, spec §5.4) or a 34 MiB display buffer
(scenario S4) may be unavailable although plenty of memory is free. This module supplies that
pressure, deterministically for a given random source.

Model (all numbers are parameters; the defaults are assumptions to sweep):

* ``target(now_ns)`` (or a fixed ``target_bytes``) is the memory the load wants to hold. Each
  :meth:`BackgroundLoad.step` allocates or frees whole blocks towards it, at most
  ``max_bytes_per_step`` of change if given; the last allocation may overshoot by one block.
* Each allocation is movable (page cache, anonymous memory: ``GFP_HIGHUSER_MOVABLE``) with
  probability ``movable_fraction``, otherwise unmovable kernel memory (``GFP_KERNEL``). Its order
  is drawn from ``order_mix`` (order -> weight). An order > 0 is tried opportunistically, without
  sleeping (no compaction, no OOM; like THP with the default ``defrag=madvise`` or SLUB's high-order
  attempts) and falls back to order 0 on failure (counted in ``fallbacks``).
* Frees pick a victim uniformly at random, which is what punches scattered holes. Movable memory
  is preferred (it is what reclaim drops first), but the unmovable share is kept at about
  ``1 - movable_fraction``: an unmovable block is freed whenever that share is exceeded.
* A failed order-0 allocation is an OOM event: the allocator counts it (its rules), the load
  counts it too and stops growing for this step. Nothing raises.
* The load registers a migration hook, so its movable pages can be compacted or moved out of CMA.
"""

from __future__ import annotations

import bisect
import itertools
from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from swiotlb.memory.gfp import GFP_HIGHUSER_MOVABLE, GFP_KERNEL, Gfp
from swiotlb.memory.pages import PageAllocator, RandomSource

_MOVABLE, _UNMOVABLE = 0, 1


@dataclass
class LoadStats:
    allocations: int = 0
    frees: int = 0
    fallbacks: int = 0  # order > 0 attempts that fell back to order 0
    oom_events: int = 0
    migrations_seen: int = 0


class BackgroundLoad:
    """Memory held by everything but the DMA path; see the module docstring for the model."""

    def __init__(
        self,
        allocator: PageAllocator,
        rng: RandomSource,
        *,
        target_bytes: int | None = None,
        target: Callable[[int], int] | None = None,
        movable_fraction: float = 0.9,
        order_mix: Mapping[int, float] | None = None,
        owner: str = "background",
        max_bytes_per_step: int | None = None,
    ) -> None:
        if (target_bytes is None) == (target is None):
            raise ValueError("give exactly one of target_bytes and target")
        if not 0.0 <= movable_fraction <= 1.0:
            raise ValueError(f"movable_fraction {movable_fraction} is outside [0, 1]")
        mix = dict(order_mix or {0: 1.0})
        for order, weight in mix.items():
            if not 0 <= order <= allocator.max_order or weight < 0:
                raise ValueError(
                    f"order_mix entry {order}: {weight} needs 0 <= order <= {allocator.max_order}, weight >= 0"
                )
        if sum(mix.values()) <= 0:
            raise ValueError("order_mix weights sum to zero")
        if max_bytes_per_step is not None and max_bytes_per_step <= 0:
            raise ValueError(f"max_bytes_per_step must be positive, got {max_bytes_per_step}")
        self._target: Callable[[int], int] = lambda _now: 0
        self.set_target(target if target is not None else int(target_bytes or 0))
        self.allocator = allocator
        self.rng = rng
        self.movable_fraction = movable_fraction
        self.owner = owner
        self.max_bytes_per_step = max_bytes_per_step
        self.stats = LoadStats()
        self._orders = sorted(mix)
        self._cum = list(itertools.accumulate(mix[o] for o in self._orders))
        self._pfns = (array("q"), array("q"))  # per class: head pfns of held blocks
        self._ords = (array("b"), array("b"))  # per class: their orders
        self._bytes = [0, 0]  # per class
        self._pos = array("i", [-1]) * allocator.end_pfn  # head pfn -> index (movable class)
        self._shift = allocator.page_shift
        allocator.set_migration_hook(owner, self._on_migrate)

    # -- queries ---------------------------------------------------------------------------
    @property
    def resident_bytes(self) -> int:
        return self._bytes[_MOVABLE] + self._bytes[_UNMOVABLE]

    @property
    def movable_bytes(self) -> int:
        return self._bytes[_MOVABLE]

    @property
    def unmovable_bytes(self) -> int:
        return self._bytes[_UNMOVABLE]

    @property
    def blocks(self) -> int:
        return len(self._pfns[_MOVABLE]) + len(self._pfns[_UNMOVABLE])

    # -- driving ---------------------------------------------------------------------------
    def set_target(self, target: int | Callable[[int], int]) -> None:
        """Replace the target: a fixed byte count or a function of ``now_ns``."""
        if callable(target):
            self._target = target
        else:
            fixed = int(target)
            self._target = lambda _now: fixed
    def step(self, now_ns: int) -> int:
        """Move towards ``target(now_ns)``; returns the resident bytes afterwards."""
        goal = max(0, int(self._target(now_ns)))
        budget = self.max_bytes_per_step if self.max_bytes_per_step is not None else -1
        while self.resident_bytes < goal and budget != 0:
            size = self._alloc_one()
            if size == 0:
                break
            budget = max(0, budget - size) if budget > 0 else budget
        while self.resident_bytes > goal and budget != 0:
            size = self._free_one()
            budget = max(0, budget - size) if budget > 0 else budget
        return self.resident_bytes

    def release_all(self) -> None:
        """Free every block the load holds."""
        while self.blocks:
            self._free_one()

    # -- internals -------------------------------------------------------------------------
    def _alloc_one(self) -> int:
        movable = self.rng.random() < self.movable_fraction
        order = self._orders[bisect.bisect_right(self._cum, self.rng.random() * self._cum[-1])]
        gfp = GFP_HIGHUSER_MOVABLE if movable else GFP_KERNEL
        phys = None
        if order > 0:
            light = (gfp | Gfp.NOWARN) & ~Gfp.DIRECT_RECLAIM
            phys = self.allocator.alloc_pages(order, light, owner=self.owner)
            if phys is None:
                self.stats.fallbacks += 1
                order = 0
        if phys is None:
            phys = self.allocator.alloc_pages(0, gfp, owner=self.owner)
        if phys is None:
            self.stats.oom_events += 1
            return 0
        cls = _MOVABLE if movable else _UNMOVABLE
        pfn = phys >> self._shift
        if movable:
            self._pos[pfn] = len(self._pfns[cls])
        self._pfns[cls].append(pfn)
        self._ords[cls].append(order)
        size = self.allocator.page_size << order
        self._bytes[cls] += size
        self.stats.allocations += 1
        return size

    def _free_one(self) -> int:
        n_mov, n_unmov = len(self._pfns[_MOVABLE]), len(self._pfns[_UNMOVABLE])
        over = self._bytes[_UNMOVABLE] > (1.0 - self.movable_fraction) * self.resident_bytes
        cls = _UNMOVABLE if n_unmov and (over or not n_mov) else _MOVABLE
        pfns, ords = self._pfns[cls], self._ords[cls]
        i = min(int(self.rng.random() * len(pfns)), len(pfns) - 1)
        pfn, order = pfns[i], ords[i]
        last_pfn, last_order = pfns.pop(), ords.pop()
        if i < len(pfns):  # swap-remove: move the last block into the hole
            pfns[i], ords[i] = last_pfn, last_order
            if cls == _MOVABLE:
                self._pos[last_pfn] = i
        if cls == _MOVABLE:
            self._pos[pfn] = -1
        self.allocator.free_pages(pfn << self._shift, order)
        size = self.allocator.page_size << order
        self._bytes[cls] -= size
        self.stats.frees += 1
        return size

    def _on_migrate(self, old_phys: int, new_phys: int, order: int) -> None:
        old, new = old_phys >> self._shift, new_phys >> self._shift
        i = self._pos[old]
        if i < 0 or self._pfns[_MOVABLE][i] != old or self._ords[_MOVABLE][i] != order:
            raise AssertionError(f"migration of {old_phys:#x} (order {order}) names no block of {self.owner!r}")
        self._pos[old] = -1
        self._pos[new] = i
        self._pfns[_MOVABLE][i] = new
        self.stats.migrations_seen += 1

    def __repr__(self) -> str:
        return f"BackgroundLoad({self.owner!r}, resident={self.resident_bytes:#x}, blocks={self.blocks})"
