"""The cost model of the simulator (issue 4, §2): default prices for each step, and raw counts.

A policy or allocator model counts what it does in *steps* (slots probed, slots marked, bytes
copied, pages converted, ...) into a ``Counter``; :class:`CostModel` turns those counts into
modelled nanoseconds. Every run reports the raw counts as well, so two designs can be compared by
counts without trusting any constant below.

All prices are integers and all arithmetic is integer arithmetic, so a run prices identically on
every platform. Copy cost is given as a bandwidth in bytes per microsecond (1 byte/µs = 1 MB/s,
so ``10_000`` is 10 GB/s) and the byte total is priced once, rounded *up* to whole nanoseconds.

Count keys (the unit each step is counted in):

==========================  ================================================================
key                         unit
==========================  ================================================================
``slot_probe``              slots examined by a search (one per slot index tested)
``slot_mark``               slots marked allocated or free (``list[i]``, ``orig_addr``, size)
``list_fixup``              slots whose free-run counter is rewritten after an alloc or free
``lock_acquire``            area/pool lock acquisitions (uncontended part; waiting is measured
                            by :class:`~swiotlb.sim.resources.Lock`, not priced here)
``copy_byte``               bytes bounced (both directions, summed)
``page_alloc_order_<k>``    page allocations of order ``k`` (``k`` decimal, 0..63), each
                            priced ``page_alloc_base_ns + page_alloc_page_ns * 2**k``
``decrypt_page``            pages converted to shared (``set_memory_decrypted``)
``encrypt_page``            pages converted back to private (``set_memory_encrypted``)
``conversion_call``         conversion calls (each covers a range of pages; TLB flush + hypercall)
``pool_walk``               pools examined by a pool lookup or a pool-list search
``migrate_page``            pages migrated (CMA / compaction)
``worker_wakeup``           deferred-work wake-ups (e.g. the dynamic-pool growth worker)
==========================  ================================================================

Defaults (every one overridable from the scenario's ``[costs]`` table by field name):

========================  =========  ===============================================================
field                     default    source / calibration note
========================  =========  ===============================================================
``slot_probe_ns``         2          assumption, sweep it: one load and compare of a 24-byte
                                     ``io_tlb_slot`` (scenarios §1 "slot metadata"), cache-warm.
``slot_mark_ns``          3          assumption, sweep it: stores to one ``io_tlb_slot`` entry.
``list_fixup_ns``         2          assumption, sweep it: one store per free-run counter rewritten.
``lock_acquire_ns``       20         assumption, sweep it: an uncontended spin_lock/unlock pair (one
                                     atomic on a local cache line). Contention is not a price: it
                                     is the wait measured by the simulated lock (scenarios §3.1,
                                     Kleen's "20+% CPU time in locks", is a target, not an input).
``copy_bytes_per_us``     10_000     10 GB/s single-core memcpy; assumption, sweep it. Calibration
                                     floor: S1/J3 (scenarios §3.2, CVM_eval fio) bounced ~4.0 GB/s
                                     with no IOPS loss versus native, so the copy is well above
                                     4 GB/s; §3.4 (Tesarik) says the copy dominates allocator cost.
                                     Must be > 0.
``page_alloc_base_ns``    500        assumption, sweep it: buddy-allocator fast path per call.
``page_alloc_page_ns``    50         assumption, sweep it: per 4 KiB page of the block (struct page
                                     init and split/merge work grow with 2**order).
``decrypt_page_ns``       1_000      the memory model's assumed default,
                                     ``swiotlb.memory.encryption.DEFAULT_COST_NS_PER_PAGE``;
                                     assumption, sweep it. Bifrost's "CVM-IO tax > 50% of CPU
                                     cycles" (scenarios §3.2) bounds the sum, not this term.
``encrypt_page_ns``       1_000      as ``decrypt_page_ns`` (same memory-model default).
``conversion_call_ns``    20_000     the memory model's ``DEFAULT_COST_NS_PER_CALL`` (TLB shootdown
                                     + hypercall round trip); assumption, sweep it. swiotlb.rst
                                     calls conversion "relatively high cost" (scenarios S12).
``pool_walk_ns``          10         assumption, sweep it: one RCU list step plus a range compare
                                     per pool (``swiotlb_find_pool`` walks the list linearly).
``migrate_page_ns``       2_000      the memory model's default,
                                     ``PageAllocator(migrate_cost_ns_per_page=2_000)``; assumption,
                                     sweep it.
``worker_wakeup_ns``      10_000     assumption, sweep it: ``schedule_work`` to the kworker running
                                     (tens of µs on an idle VM). The simulator also passes it as
                                     every policy's ``worker_delay_ns`` knob unless the scenario
                                     sets that knob, so all designs wait the same.
========================  =========  ===============================================================
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

STEPS: tuple[str, ...] = (
    "slot_probe",
    "slot_mark",
    "list_fixup",
    "lock_acquire",
    "copy_byte",
    "page_alloc",
    "decrypt_page",
    "encrypt_page",
    "conversion_call",
    "pool_walk",
    "migrate_page",
    "worker_wakeup",
)
"""The canonical step names, in report order. ``page_alloc`` is counted per order under the keys
``page_alloc_order_<k>`` (see :func:`page_alloc_key`); every other step is its own count key."""

PAGE_ALLOC_PREFIX = "page_alloc_order_"
MAX_COUNTED_ORDER = 63
"""Largest order accepted in a ``page_alloc_order_<k>`` key (a sanity bound, not MAX_PAGE_ORDER)."""

_ORDER_KEY = re.compile(r"page_alloc_order_(0|[1-9][0-9]?)")

_SIMPLE_STEP_FIELD: dict[str, str] = {
    "slot_probe": "slot_probe_ns",
    "slot_mark": "slot_mark_ns",
    "list_fixup": "list_fixup_ns",
    "lock_acquire": "lock_acquire_ns",
    "decrypt_page": "decrypt_page_ns",
    "encrypt_page": "encrypt_page_ns",
    "conversion_call": "conversion_call_ns",
    "pool_walk": "pool_walk_ns",
    "migrate_page": "migrate_page_ns",
    "worker_wakeup": "worker_wakeup_ns",
}


class CostConfigError(ValueError):
    """A bad cost override or count: the message names the key (and, for overrides, ``where``)."""


def page_alloc_key(order: int) -> str:
    """The count key for one page allocation of ``order`` (``page_alloc_order_<order>``)."""
    if type(order) is not int or not 0 <= order <= MAX_COUNTED_ORDER:
        raise CostConfigError(f"page allocation order must be an int in 0..{MAX_COUNTED_ORDER}, "
                              f"got {order!r}")
    return f"{PAGE_ALLOC_PREFIX}{order}"


def _order_of(key: str) -> int | None:
    m = _ORDER_KEY.fullmatch(key)
    if m is None:
        return None
    order = int(m.group(1))
    return order if order <= MAX_COUNTED_ORDER else None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class CostModel:
    """Integer prices of each simulator step; see the module docstring for the table of defaults
    and their sources. Field names are the keys of the scenario's ``[costs]`` table."""

    slot_probe_ns: int = 2
    slot_mark_ns: int = 3
    list_fixup_ns: int = 2
    lock_acquire_ns: int = 20
    copy_bytes_per_us: int = 10_000
    page_alloc_base_ns: int = 500
    page_alloc_page_ns: int = 50
    decrypt_page_ns: int = 1_000
    encrypt_page_ns: int = 1_000
    conversion_call_ns: int = 20_000
    pool_walk_ns: int = 10
    migrate_page_ns: int = 2_000
    worker_wakeup_ns: int = 10_000

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_value(f.name, getattr(self, f.name), "CostModel()")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_mapping(
        cls, mapping: Mapping[str, object], where: str = "scenario.toml [costs]"
    ) -> CostModel:
        """The defaults with the entries of ``mapping`` overriding fields of the same name.

        Raises :class:`CostConfigError` for an unknown key (naming it and listing the known
        ones), and for a value that is not an int (bools and floats included) or is negative
        (``copy_bytes_per_us`` must be > 0); every message names the key and ``where``.
        """
        known = cls.field_names()
        overrides: dict[str, int] = {}
        for key, value in mapping.items():
            if key not in known:
                raise CostConfigError(
                    f"{where}: unknown cost key {key!r}; known keys: {', '.join(known)}"
                )
            overrides[key] = _check_value(key, value, where)
        return replace(cls(), **overrides)

    def copy_ns(self, nbytes: int) -> int:
        """Nanoseconds to copy ``nbytes`` at ``copy_bytes_per_us``, rounded up."""
        return -(-nbytes * 1000 // self.copy_bytes_per_us)

    def page_alloc_ns(self, order: int) -> int:
        """Nanoseconds of one page allocation of ``order``: base + per-page * 2**order."""
        page_alloc_key(order)  # validates
        return self.page_alloc_base_ns + (self.page_alloc_page_ns << order)

    def step_ns(self, key: str, count: int) -> int:
        """Nanoseconds of ``count`` occurrences of count key ``key``."""
        _check_count(key, count)
        field = _SIMPLE_STEP_FIELD.get(key)
        if field is not None:
            price: int = getattr(self, field)
            return count * price
        if key == "copy_byte":
            return self.copy_ns(count)
        order = _order_of(key)
        if order is not None:
            return count * self.page_alloc_ns(order)
        raise CostConfigError(_unknown_count_key(key))

    def explain(self, counts: Mapping[str, int]) -> list[tuple[str, int, int]]:
        """``(key, count, ns)`` for every key of ``counts``, in :data:`STEPS` order (page
        allocations by ascending order); the ``ns`` column sums to :meth:`cost_ns`."""
        keyed: list[tuple[int, int, str]] = []
        for key in counts:
            keyed.append((*_sort_key(key), key))
        keyed.sort()
        return [(key, counts[key], self.step_ns(key, counts[key])) for _, _, key in keyed]

    def cost_ns(self, counts: Mapping[str, int]) -> int:
        """Total modelled nanoseconds of the raw step ``counts`` (e.g. a ``Counter``)."""
        return sum(ns for _, _, ns in self.explain(counts))


def _sort_key(key: str) -> tuple[int, int]:
    if not isinstance(key, str):
        raise CostConfigError(f"count key must be a str, got {key!r}")
    if key in STEPS and key != "page_alloc":
        return (STEPS.index(key), 0)
    order = _order_of(key)
    if order is not None:
        return (STEPS.index("page_alloc"), order)
    raise CostConfigError(_unknown_count_key(key))


def _unknown_count_key(key: str) -> str:
    simple = [s for s in STEPS if s != "page_alloc"]
    return (
        f"unknown step count key {key!r}; known keys: {', '.join(simple)}, "
        f"and {PAGE_ALLOC_PREFIX}<k> for k in 0..{MAX_COUNTED_ORDER}"
    )


def _check_count(key: str, count: object) -> int:
    if not _is_int(count):
        raise CostConfigError(
            f"count of {key!r} must be an int, got {type(count).__name__} {count!r}"
        )
    assert isinstance(count, int)
    if count < 0:
        raise CostConfigError(f"count of {key!r} must be >= 0, got {count}")
    return int(count)


def _check_value(key: str, value: object, where: str) -> int:
    if not _is_int(value):
        raise CostConfigError(
            f"{where}: cost {key!r} must be an integer, got {type(value).__name__} {value!r}"
        )
    assert isinstance(value, int)
    v = int(value)
    if key == "copy_bytes_per_us":
        if v <= 0:
            raise CostConfigError(f"{where}: cost {key!r} must be > 0 (a bandwidth), got {v}")
    elif v < 0:
        raise CostConfigError(f"{where}: cost {key!r} must be >= 0, got {v}")
    return v


__all__ = [
    "MAX_COUNTED_ORDER",
    "PAGE_ALLOC_PREFIX",
    "STEPS",
    "CostConfigError",
    "CostModel",
    "page_alloc_key",
]
