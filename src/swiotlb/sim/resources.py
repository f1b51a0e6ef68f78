"""Contended resources on top of :class:`~swiotlb.sim.engine.Engine`: area spinlocks and CPUs.

Issue 4, §1 asks that a map finding its area's lock held waits, and that the wait is measured.
:class:`Lock` models the kernel's spinlock as a FIFO queue (qspinlock hands the lock to waiters
in arrival order): no barging, so a newcomer at the very nanosecond of a release still queues
behind the waiters, and the result does not depend on event order within that nanosecond.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from swiotlb.sim.engine import Engine, _as_ns

Granted = Callable[[int], object]
"""Called with the time (ns) the holder waited for the lock or CPU (0 if it was free); any return
value is ignored."""


def _duration(value: int, what: str) -> int:
    if type(value) is not int:
        value = _as_ns(value, what)
    if value < 0:
        raise ValueError(f"{what} must be >= 0, got {value}")
    return value


class Lock:
    """One spinlock (a swiotlb area's ``area->lock``), with contention statistics.

    Holders are any objects other than None (a CPU number, a request); they name the holder in
    error messages and guard :meth:`release`. The statistics count grants: ``acquisitions``
    grants in all, ``contended`` of which had to queue; ``wait_total_ns`` and ``wait_max_ns``
    over all grants; ``held_ns`` over completed holds; ``max_queue`` the longest wait queue.
    """

    def __init__(self, engine: Engine, name: str = "lock") -> None:
        self.engine = engine
        self.name = name
        self.holder: object = None
        self._since = 0
        self._queue: deque[tuple[object, int, Granted]] = deque()
        self.acquisitions = 0
        self.contended = 0
        self.wait_total_ns = 0
        self.wait_max_ns = 0
        self.held_ns = 0
        self.max_queue = 0

    @property
    def locked(self) -> bool:
        return self.holder is not None

    @property
    def waiting(self) -> int:
        """Holders queued for the lock now."""
        return len(self._queue)

    @property
    def mean_wait_ns(self) -> float:
        """Mean wait over all grants, uncontended ones included (0.0 before the first)."""
        return self.wait_total_ns / self.acquisitions if self.acquisitions else 0.0

    def request(self, holder: object, granted: Granted) -> None:
        """Take the lock for ``holder``; ``granted(wait_ns)`` runs once it is held.

        If the lock is free, ``granted(0)`` runs at once, inside this call; otherwise the holder
        queues and ``granted`` runs as its own event at the release that hands it the lock. The
        holder must call :meth:`release`: use this form when the critical section's length is only
        known inside it (a slot search whose cost depends on what it scanned).
        """
        if holder is None:
            raise ValueError(f"{self.name}: a lock holder cannot be None")
        if self.holder is not None:
            if holder == self.holder:
                raise RuntimeError(f"{self.name}: {holder!r} already holds it (spinlocks are not recursive)")
            self._queue.append((holder, self.engine.now, granted))
            if len(self._queue) > self.max_queue:
                self.max_queue = len(self._queue)
            return
        self.holder = holder
        self._since = self.engine.now
        self.acquisitions += 1
        granted(0)

    def release(self, holder: object) -> None:
        """End ``holder``'s hold; the longest waiter, if any, gets the lock at this nanosecond."""
        if self.holder is None:
            raise RuntimeError(f"{self.name}: released by {holder!r} but not held")
        if holder != self.holder:
            raise RuntimeError(f"{self.name}: released by {holder!r} but held by {self.holder!r}")
        now = self.engine.now
        self.held_ns += now - self._since
        if not self._queue:
            self.holder = None
            return
        nxt, queued_at, granted = self._queue.popleft()
        wait = now - queued_at
        self.holder = nxt
        self._since = now
        self.acquisitions += 1
        self.contended += 1
        self.wait_total_ns += wait
        if wait > self.wait_max_ns:
            self.wait_max_ns = wait
        # A separate event, not a nested call: a chain of waiters must not recurse, and the
        # releasing side finishes its own step before the next holder's step starts.
        self.engine.at(now, lambda: granted(wait))

    def acquire(self, holder: object, hold_ns: int, then: Granted | None = None) -> None:
        """Hold the lock for ``hold_ns`` once granted, release it, then call ``then(wait_ns)``.

        The fixed-length form of :meth:`request`: the critical section starts at the grant (now
        if the lock is free) and ``then`` runs when it ends, with the time spent waiting for it.
        """
        hold_ns = _duration(hold_ns, "hold_ns")
        engine = self.engine

        def granted(wait: int) -> None:
            def done() -> None:
                self.release(holder)
                if then is not None:
                    then(wait)

            engine.after(hold_ns, done)

        self.request(holder, granted)

    def __repr__(self) -> str:
        state = f"held by {self.holder!r}, {len(self._queue)} waiting" if self.holder is not None else "free"
        return f"<Lock {self.name} {state}>"


class Cpu:
    """A CPU that runs work items one at a time, in submission order, each for a known cost.

    With known costs and FIFO order no queue is needed: an item starts at ``max(now,
    busy_until)``. ``busy_ns`` sums the costs of the items submitted so far.
    """

    def __init__(self, engine: Engine, index: int = 0) -> None:
        self.engine = engine
        self.index = index
        self.busy_until = engine.now
        self.busy_ns = 0
        self.items = 0

    @property
    def idle(self) -> bool:
        return self.busy_until <= self.engine.now

    def run(self, cost_ns: int, then: Granted | None = None) -> int:
        """Queue ``cost_ns`` of work; ``then(wait_ns)`` runs when it finishes. Returns the finish time."""
        cost_ns = _duration(cost_ns, "cost_ns")
        now = self.engine.now
        start = self.busy_until if self.busy_until > now else now
        self.busy_until = finish = start + cost_ns
        self.busy_ns += cost_ns
        self.items += 1
        if then is not None:
            wait = start - now
            self.engine.at(finish, lambda: then(wait))
        return finish

    def __repr__(self) -> str:
        return f"<Cpu {self.index} busy until {self.busy_until} ns>"
