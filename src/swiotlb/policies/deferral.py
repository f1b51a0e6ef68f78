"""Deferred maps: a FIFO of requests waiting for bounce room, instead of failing them.

Linux fails a streaming map when the pool is full. FreeBSD's busdma queues a load that may wait
(``bus_dmamap_load`` returns EINPROGRESS, the map joins the bounce zone's waiting list, and a
software interrupt runs its callback once pages are free); SPDK's iobuf keeps a FIFO wait queue
with callbacks. A :class:`DeferralQueue` is that list for one policy zone.

The policy never sees the DMA layer: each entry is a *retry* closure the DMA layer built
(:data:`~swiotlb.policies.base.DeferredRetry`). The policy :meth:`~DeferralQueue.kick`\\ s the
queue when room may have appeared (a release, a new pool) and :meth:`~DeferralQueue.drain`\\ s it
from its deferred work, in process context as FreeBSD's ``busdma_swi`` does: callbacks never
run inside a driver's unmap, which may be atomic and may hold the driver's locks, and a retry
may sleep. Draining is strictly FIFO: it stops at the first request that still does not fit,
so a later request never overtakes an earlier one (the overtaking FreeBSD's manual warns of).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable

from swiotlb.policies.base import DeferredRetry


@dataclass(frozen=True, slots=True)
class Waiter:
    """One queued request: whose it is, how to retry it, and since when it waits (ns)."""

    device: str
    retry: DeferredRetry
    queued_ns: int


class DeferralQueue:
    """FIFO of maps waiting for room, with FreeBSD-style counters (total deferred, waits)."""

    def __init__(self, clock: Callable[[], int]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._waiters: deque[Waiter] = deque()
        self._progress = False  # room may have appeared since the head last failed
        self._draining = False  # one drainer at a time keeps the order
        self.deferred = 0
        self.completed = 0
        self.wait_total_ns = 0
        self.wait_max_ns = 0

    def add(self, device: str, retry: DeferredRetry) -> None:
        """Queue a request at the tail."""
        with self._lock:
            self._waiters.append(Waiter(device, retry, self._clock()))
            self.deferred += 1

    def __len__(self) -> int:
        return len(self._waiters)

    def waiting(self, device: str | None = None) -> int:
        """Queued requests, all or one device's."""
        with self._lock:
            if device is None:
                return len(self._waiters)
            return sum(w.device == device for w in self._waiters)

    def kick(self) -> None:
        """Room may have appeared (slots released, a pool added): the next drain retries.

        Set even with nobody queued: a request refused just before this release may be queued
        just after it, and must not wait for the release after that.
        """
        self._progress = True

    @property
    def ready(self) -> bool:
        """Would :meth:`drain` retry anything now?"""
        return self._progress and bool(self._waiters)

    def drain(self) -> int:
        """Retry from the head while requests complete; returns how many left the queue.

        A head that still does not fit goes back to the head and the drain stops. A retry that
        raises (its callback did) has left the queue; the exception propagates.
        """
        with self._lock:
            if self._draining or not self._progress or not self._waiters:
                return 0
            self._draining = True
            self._progress = False
        done = 0
        try:
            while True:
                with self._lock:  # no break in here: mypyc cannot compile a break out of a with
                    head = self._waiters.popleft() if self._waiters else None
                if head is None:
                    break
                finished = True
                try:
                    finished = head.retry()
                finally:
                    if finished:
                        self._record(head)
                        done += 1
                if not finished:
                    with self._lock:
                        self._waiters.appendleft(head)
                    break
        finally:
            with self._lock:
                self._draining = False
        return done

    def _record(self, waiter: Waiter) -> None:
        wait = self._clock() - waiter.queued_ns
        with self._lock:
            self.completed += 1
            self.wait_total_ns += wait
            self.wait_max_ns = max(self.wait_max_ns, wait)

    def counters(self) -> dict[str, int]:
        """``deferred`` (ever queued), ``deferred_completed``, ``deferred_pending`` and the waits."""
        with self._lock:
            return {
                "deferred": self.deferred,
                "deferred_completed": self.completed,
                "deferred_pending": len(self._waiters),
                "deferred_wait_total_ns": self.wait_total_ns,
                "deferred_wait_max_ns": self.wait_max_ns,
            }
