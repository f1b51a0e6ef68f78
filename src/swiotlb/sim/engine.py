"""A deterministic discrete-event engine with integer-nanosecond time (issue 4, §1).

A plain ``heapq`` loop over ``[time_ns, seq, callback]`` entries: /work/shared/stack.md measured
such a loop at several times SimPy's speed, and the simulator is dominated by allocator work, not
by the loop, so nothing heavier is warranted. ``seq`` is a global scheduling counter: events at
the same nanosecond run in the order they were scheduled (FIFO), the rule SimPy applies to
normal-priority events, so a run depends only on its inputs.

Time is an ``int`` so that no rounding can make two runs, or two machines, disagree. Arrivals from
workloads and traces come from *sources*, iterators that are read lazily: only the next arrival of
each source sits on the heap, so a million-request workload costs one heap entry, not a million.
"""

from __future__ import annotations

import heapq
import operator
from typing import Any, Callable, Iterable, Iterator, SupportsIndex

Callback = Callable[[], object]
"""What events run; any return value is ignored."""

Event = list[Any]
"""A scheduled event: the heap entry ``[time_ns, seq, fn]`` itself, returned by :meth:`Engine.at`
and :meth:`Engine.after` as the handle for :meth:`Engine.cancel` (as the standard library's
``sched`` returns its queue entries). Treat it as read-only: ``ev[0]`` is its time. A list, not a
handle object, because building an object per event would cost more than the rest of scheduling
it; ``fn`` becomes None once the event has run or been cancelled, which is what makes
cancelling O(1) and lazy (the entry is dropped when it reaches the top of the heap)."""

_heappush = heapq.heappush
_heappop = heapq.heappop


def _as_ns(value: object, what: str) -> int:
    """``value`` as an int, or a TypeError naming ``what``; the slow path of the type checks.

    Integer-like objects (an ``IntEnum``, ``numpy.int64``) are accepted through ``__index__``;
    floats and bools are not, because a fractional or boolean time is always a caller's bug.
    """
    if isinstance(value, SupportsIndex) and not isinstance(value, bool):
        return operator.index(value)
    raise TypeError(f"{what} must be an integer number of nanoseconds, got {type(value).__name__} {value!r}")


class _Source:
    """One lazy arrival stream; its :meth:`fire` is the heap callback, on the heap at most once."""

    __slots__ = ("engine", "it", "name", "fn", "last", "_fire")

    def __init__(self, engine: Engine, it: Iterator[tuple[int, Callback]], name: str) -> None:
        self.engine = engine
        self.it = it
        self.name = name
        self.fn: Callback | None = None
        self.last = engine.now
        self._fire = self.fire  # one bound method for all arrivals, not one per push

    def pull(self) -> None:
        """Put the source's next arrival on the heap (nothing if it is exhausted)."""
        item = next(self.it, None)
        if item is None:
            return
        t, fn = item
        if type(t) is not int or t < self.last:
            t = self._check(t)
        self.last = t
        self.fn = fn
        eng = self.engine
        eng._seq = seq = eng._seq + 1
        _heappush(eng._heap, [t, seq, self._fire])

    def _check(self, time_ns: object) -> int:
        t = _as_ns(time_ns, f"source {self.name!r}: arrival time")
        if t < self.last:
            # ``last`` is now at the first pull and this source's previous arrival (= now) after.
            raise ValueError(
                f"source {self.name!r} went back in time: arrival at {t} ns, but it is already {self.last} ns"
                " (sources must yield non-decreasing times, not before the engine's now)"
            )
        return t

    def fire(self) -> None:
        # Queue the next arrival before running this one, so the order of a source's arrivals
        # against other events never depends on what its callbacks schedule.
        fn = self.fn
        assert fn is not None
        self.pull()
        fn()


class Engine:
    """The event loop: ``now`` in integer ns, callbacks scheduled with :meth:`at` or :meth:`after`.

    ``events`` counts callbacks that ran (cancelled events are not counted), the denominator for
    events-per-second figures; it is brought up to date when :meth:`run` returns.
    """

    def __init__(self, start_ns: int = 0) -> None:
        if type(start_ns) is not int:
            start_ns = _as_ns(start_ns, "start_ns")
        self.now: int = start_ns
        self.events: int = 0
        self._heap: list[Event] = []
        self._seq = 0
        self._ncancelled = 0  # cancelled entries still on the heap
        self._running = False

    def at(self, time_ns: int, fn: Callback) -> Event:
        """Run ``fn()`` at absolute time ``time_ns`` (not before ``now``); returns the event."""
        if type(time_ns) is not int or time_ns < self.now:
            time_ns = self._check_time(time_ns)
        self._seq = seq = self._seq + 1
        ev = [time_ns, seq, fn]
        _heappush(self._heap, ev)
        return ev

    def after(self, delay_ns: int, fn: Callback) -> Event:
        """Run ``fn()`` ``delay_ns`` (>= 0) after ``now``; returns the event."""
        if type(delay_ns) is not int or delay_ns < 0:
            delay_ns = self._check_delay(delay_ns)
        self._seq = seq = self._seq + 1
        ev = [self.now + delay_ns, seq, fn]
        _heappush(self._heap, ev)
        return ev

    def _check_time(self, time_ns: object) -> int:
        t = _as_ns(time_ns, "time_ns")
        if t < self.now:
            raise ValueError(f"cannot schedule at {t} ns: it is in the past (now is {self.now} ns)")
        return t

    def _check_delay(self, delay_ns: object) -> int:
        d = _as_ns(delay_ns, "delay_ns")
        if d < 0:
            raise ValueError(f"cannot schedule {d} ns from now: delays must be >= 0")
        return d

    @staticmethod
    def is_pending(event: Event) -> bool:
        """True until ``event`` has run or been cancelled."""
        return event[2] is not None

    def cancel(self, event: Event) -> bool:
        """Stop ``event`` from running; False if it already ran or was already cancelled."""
        if event[2] is None:
            return False
        event[2] = None
        self._ncancelled += 1
        return True

    def add_source(self, arrivals: Iterable[tuple[int, Callback]], name: str = "source") -> None:
        """Feed ``(time_ns, fn)`` pairs, in non-decreasing time, into the run lazily.

        The iterator is read one arrival ahead: its first pair now, each next one when the
        previous one runs (before its ``fn``), so generators may be unbounded and may look at the
        simulation's state when they produce a later arrival. Ties with other events at the same
        nanosecond go by when the arrival was read, like any other event. ``name`` is only used
        in error messages.
        """
        _Source(self, iter(arrivals), name).pull()

    @property
    def pending(self) -> int:
        """Events waiting to run (cancelled ones excluded)."""
        return len(self._heap) - self._ncancelled

    def peek(self) -> int | None:
        """Time of the next event to run, or None if there is none."""
        heap = self._heap
        while heap and heap[0][2] is None:
            _heappop(heap)
            self._ncancelled -= 1
        return heap[0][0] if heap else None

    def run(self, until_ns: int | None = None, max_events: int | None = None) -> int:
        """Run events in (time, seq) order; returns how many ran.

        With ``until_ns`` the run covers ``[now, until_ns)``: events at exactly ``until_ns`` stay
        queued (as in SimPy's ``run(until=...)``) and ``now`` ends at ``until_ns``, so consecutive
        ``run(until_ns=t)`` calls slice time without gaps or double counting. ``max_events`` stops
        after that many events, leaving ``now`` at the last one's time. Without either, runs until
        no event is left. An exception from a callback propagates; that event counts as run and
        the engine can be run again.
        """
        if self._running:
            raise RuntimeError("Engine.run() called from inside a callback; schedule an event instead")
        if until_ns is not None:
            if type(until_ns) is not int:
                until_ns = _as_ns(until_ns, "until_ns")
            if until_ns < self.now:
                raise ValueError(f"cannot run until {until_ns} ns: it is in the past (now is {self.now} ns)")
        if max_events is not None and max_events < 0:
            raise ValueError(f"max_events must be >= 0, got {max_events}")
        heap = self._heap
        budget = -1 if max_events is None else max_events
        ran = 0
        self._running = True
        try:
            if until_ns is None and budget < 0:
                while heap:
                    ev = _heappop(heap)
                    fn = ev[2]
                    if fn is None:
                        self._ncancelled -= 1
                        continue
                    ev[2] = None
                    self.now = ev[0]
                    ran += 1
                    fn()
            else:
                while heap and ran != budget:
                    if until_ns is not None and heap[0][0] >= until_ns:
                        break
                    ev = _heappop(heap)
                    fn = ev[2]
                    if fn is None:
                        self._ncancelled -= 1
                        continue
                    ev[2] = None
                    self.now = ev[0]
                    ran += 1
                    fn()
                if until_ns is not None and ran != budget:
                    self.now = until_ns
        finally:
            self._running = False
            self.events += ran
        return ran
