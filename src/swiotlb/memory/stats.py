"""The counters of the page allocator and of memory encryption, in a module of their own.

They live apart from :mod:`swiotlb.memory.pages` and :mod:`swiotlb.memory.encryption` (which
re-export them) so that the optional mypyc build (``swiotlb.native``) can compile them without
compiling those modules: the simulator reads seven of these counters before and after every map
of a policy that allocates memory (``Simulation._memory_sig``), and compiled code reads a
compiled class's field directly, where an interpreted object's attribute is a generic lookup
(about 3 % of a compiled adaptive run). Nothing else changes: same fields, same defaults.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["EncryptionStats", "PageStats"]


@dataclass
class EncryptionStats:
    decrypt_ops: int = 0
    encrypt_ops: int = 0
    decrypted_pages: int = 0
    encrypted_pages: int = 0
    cost_ns: int = 0
    shared_pages_hiwater: int = 0


@dataclass
class PageStats:
    """Counters; ``allocations`` and ``failures`` are keyed by (zone name, order). A failure is
    charged to the highest zone the request allowed."""

    allocations: Counter[tuple[str, int]] = field(default_factory=Counter)
    failures: Counter[tuple[str, int]] = field(default_factory=Counter)
    frees: int = 0
    cma_lent: int = 0  # movable allocations served from CMA pages
    migrated_pages: int = 0
    migration_cost_ns: int = 0
    compactions: int = 0
    compaction_successes: int = 0
    contig_allocations: int = 0
    contig_failures: int = 0
    oom_events: int = 0
    oom_by_owner: Counter[str] = field(default_factory=Counter)
    warnings: int = 0  # failures without __GFP_NOWARN ("page allocation failure")
    injected_failures: int = 0
