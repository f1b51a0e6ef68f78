"""Per-run metrics of the simulator (issue 4, §4) and their ``--json`` form (issue 4, §5).

Three building blocks, none of which knows about allocators or policies:

* :class:`StepGauge` follows a piecewise-constant quantity over integer-nanosecond time (bytes
  reserved for bouncing, bytes in use) with an exact running integral, so its time-weighted
  average is exact; it keeps its change points, coalesced per nanosecond, for sampling onto a
  fixed grid. :class:`Footprint` pairs the two gauges the issue asks for.
* :class:`Samples` records non-negative integers (modelled CPU ns per map, deferral waits) in an
  ``array('q')`` (8 bytes a sample) and answers exact nearest-rank percentiles.
* :class:`RunMetrics` accumulates everything else and renders :meth:`RunMetrics.to_json`.

All arithmetic is on ``int`` (averages are also available as exact :class:`~fractions.Fraction`),
so two runs with the same inputs produce byte-identical JSON.
"""

from __future__ import annotations

import heapq
import json
from array import array
from bisect import bisect_left, bisect_right
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Iterable, Mapping, Sequence

FAILURE_CAUSES: tuple[str, ...] = ("full", "too_large", "unaddressable", "no_memory")
"""The map failure causes of issue 4, §4/§5, in schema order."""

DEFAULT_GRID_POINTS = 100
"""Intervals of the time-series grid when :meth:`RunMetrics.to_json` is given no step."""


def grid_step(end_ns: int, step_ns: int | None = None) -> int:
    """The time-series grid step: ``step_ns``, or ``ceil(end_ns / 100)`` (at least 1) when None."""
    if step_ns is None:
        return max(1, -(-_int(end_ns, "end_ns") // DEFAULT_GRID_POINTS))
    return _int(step_ns, "grid_step_ns")


def _int(value: object, what: str) -> int:
    """``value`` if it is an ``int`` (not a bool), else a TypeError naming ``what``."""
    if type(value) is int:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    raise TypeError(f"{what} must be an int, got {type(value).__name__} {value!r}")


def _nonneg(value: object, what: str) -> int:
    v = _int(value, what)
    if v < 0:
        raise ValueError(f"{what} must be >= 0, got {v}")
    return v


def round_half_even(num: int, den: int) -> int:
    """``num / den`` rounded to the nearest int, ties to even (``den`` > 0); exact."""
    if den <= 0:
        raise ValueError(f"denominator must be > 0, got {den}")
    q, r = divmod(num, den)
    if 2 * r > den or (2 * r == den and q % 2):
        q += 1
    return q


class StepGauge:
    """A piecewise-constant integer quantity over integer-ns time, e.g. bytes in use.

    :meth:`set` is O(1) (amortised): it folds the interval since the previous call into a
    running integral (an unbounded Python int, in value·ns) and keeps the change points, one per
    nanosecond at most, in two ``array('q')`` columns. Several calls in one nanosecond leave one
    point, the last value, or none if that value equals the one before it; a call that does not
    change the value records nothing. Times must not decrease.

    The newest point stays *open* (:attr:`value` from the time of the last call) until a call
    at a later time stores it, so that a change undone in the same nanosecond — an unmap and
    the next map of a closed-loop I/O, two or three gauges every time — costs no array work.
    The initial value is the first open point: a call at ``start_ns`` replaces it.

    :attr:`peak` is the largest value ever set, including one replaced within the same
    nanosecond (memory reserved for a map undone at once was still reserved), like the kernel's
    ``used_hiwater``. The time-weighted average over ``[start_ns, end_ns]`` is the integral
    divided by the duration, exact as a :class:`Fraction` (:meth:`average`) or rounded half to
    even (:meth:`average_int`).
    """

    __slots__ = ("start_ns", "value", "peak", "updates", "_at", "_before", "_area", "_times", "_values")

    def __init__(self, start_ns: int = 0, value: int = 0) -> None:
        self.start_ns = _int(start_ns, "start_ns")
        self.value = _int(value, "value")  # in force from _at on
        self.peak = self.value
        self.updates = 0
        self._at = self.start_ns  # the time of the last call: the open point's
        self._before: int | None = None  # the last stored value (None: nothing stored yet)
        self._area = 0  # integral from start_ns to _at
        self._times = array("q")  # the stored points, all before _at; the first at start_ns
        self._values = array("q")

    def set(self, now_ns: int, value: int) -> None:
        """The quantity is ``value`` from ``now_ns`` on.

        Checks its arguments, then stores them with :meth:`set_trusted`.
        """
        if type(now_ns) is not int or type(value) is not int or now_ns < self._at:
            now_ns, value = self._checked(now_ns, value)
        self.set_trusted(now_ns, value)

    def set_trusted(self, now_ns: int, value: int) -> None:
        """:meth:`set` without the checks, for a caller whose arguments cannot be wrong: ints,
        and a time not before the last call's (the simulator sets its footprint gauges at the
        engine's clock after every map and unmap)."""
        at = self._at
        self.updates += 1
        if value > self.peak:
            self.peak = value
        if now_ns != at:  # time moved on: the open point is history, stored if it is a change
            current = self.value
            if current != self._before:
                self._times.append(at)
                self._values.append(current)
                self._before = current
            self._area += current * (now_ns - at)
            self._at = now_ns
        self.value = value

    def _checked(self, now_ns: object, value: object) -> tuple[int, int]:
        """The slow path of :meth:`set`: ints through ``__index__``, or the error."""
        t, v = _int(now_ns, "now_ns"), _int(value, "value")
        if t < self._at:
            raise ValueError(f"gauge went back in time: set at {t} ns, but it was last set at {self._at} ns")
        return t, v

    def add(self, now_ns: int, delta: int) -> None:
        """The quantity changes by ``delta`` at ``now_ns``."""
        self.set(now_ns, self.value + _int(delta, "delta"))

    @property
    def last_ns(self) -> int:
        """The time of the last change point (the start if the value never changed)."""
        return self._at if self.value != self._before else self._times[-1]

    @property
    def changes(self) -> int:
        """Change points (the initial value included)."""
        return len(self._times) + (self.value != self._before)

    def value_at(self, t_ns: int) -> int:
        """The value in force at ``t_ns`` (after every change at or before ``t_ns``)."""
        t = _int(t_ns, "t_ns")
        if t < self.start_ns:
            raise ValueError(f"{t} ns is before the gauge's start, {self.start_ns} ns")
        if t >= self._at:
            return self.value
        return self._values[bisect_right(self._times, t) - 1]

    def _prefix(self, t: int) -> int:
        """Integral from ``start_ns`` to ``t``: O(1) at or after the last call, else O(changes)."""
        if t >= self._at:
            return self._area + self.value * (t - self._at)
        if t < self.start_ns:
            raise ValueError(f"{t} ns is before the gauge's start, {self.start_ns} ns")
        times, values = self._times, self._values  # every point up to t is stored
        j = bisect_right(times, t) - 1
        area = 0
        for i in range(j):
            area += values[i] * (times[i + 1] - times[i])
        return area + values[j] * (t - times[j])

    def integral(self, end_ns: int, start_ns: int | None = None) -> int:
        """Exact integral of the quantity over ``[start_ns, end_ns]`` in value·ns.

        ``start_ns`` defaults to the gauge's start; both must be at or after it.
        """
        end = _int(end_ns, "end_ns")
        start = self.start_ns if start_ns is None else _int(start_ns, "start_ns")
        if end < start:
            raise ValueError(f"window ends ({end} ns) before it starts ({start} ns)")
        if start == self.start_ns:
            return self._prefix(end)
        return self._prefix(end) - self._prefix(start)

    def average(self, end_ns: int, start_ns: int | None = None) -> Fraction:
        """Exact time-weighted average over ``[start_ns, end_ns]``; the value itself if empty."""
        start = self.start_ns if start_ns is None else _int(start_ns, "start_ns")
        end = _int(end_ns, "end_ns")
        if end == start:
            return Fraction(self.value_at(start))
        return Fraction(self.integral(end, start), end - start)

    def average_int(self, end_ns: int, start_ns: int | None = None) -> int:
        """:meth:`average` rounded to the nearest int, ties to even."""
        avg = self.average(end_ns, start_ns)
        return round_half_even(avg.numerator, avg.denominator)

    def grid(self, step_ns: int, end_ns: int) -> list[tuple[int, int]]:
        """``(t, value in force at t)`` for every multiple ``t`` of ``step_ns`` in ``[start_ns, end_ns]``.

        The grid is absolute (multiples of ``step_ns`` from time 0), so gauges sampled with the
        same step line up; O(points · log changes).
        """
        step = _int(step_ns, "step_ns")
        end = _int(end_ns, "end_ns")
        if step <= 0:
            raise ValueError(f"step_ns must be > 0, got {step}")
        first = -(-self.start_ns // step) * step
        times, values, at = self._times, self._values, self._at
        out: list[tuple[int, int]] = []
        i = 0
        for t in range(first, end + 1, step):
            if t >= at:
                out.append((t, self.value))
                continue
            i = bisect_right(times, t, i) - 1
            out.append((t, values[i]))
        return out

    def __repr__(self) -> str:
        return f"StepGauge(value={self.value}, peak={self.peak}, last_ns={self.last_ns}, changes={self.changes})"


@dataclass
class Footprint:
    """The bounce footprint: bytes reserved for bouncing (pools) and bytes mapped in them."""

    reserved: StepGauge = field(default_factory=StepGauge)
    in_use: StepGauge = field(default_factory=StepGauge)

    def set(self, now_ns: int, *, reserved: int | None = None, in_use: int | None = None) -> None:
        """Update either or both gauges at ``now_ns``."""
        if reserved is not None:
            self.reserved.set(now_ns, reserved)
        if in_use is not None:
            self.in_use.set(now_ns, in_use)


class Samples:
    """Non-negative integer samples (e.g. modelled ns per map) with exact percentiles.

    Values live in an ``array('q')``, 8 bytes each, so a few million samples cost tens of MB.
    Percentiles use the **nearest-rank** method: for ``0 < p <= 100`` the ``p``-th percentile of
    ``n`` samples is the ``ceil(p * n / 100)``-th smallest (1-based), always a recorded value;
    ``p = 0`` gives the minimum. ``p`` is an ``int`` or :class:`Fraction` so the rank is exact.
    The array is sorted in place on the first query after an :meth:`add`, in chunks of
    :attr:`chunk` values merged back into an array, so the transient cost of sorting is about one
    chunk of Python ints plus a second array rather than a list of every sample.

    :meth:`add` runs for every map (and every I/O a workload times), so it only appends;
    :attr:`total` and :attr:`max` are computed when asked for (once per run, in C), and whether
    the samples are in order is only known up to :attr:`_nsorted`, the length of the prefix the
    last query sorted. :meth:`appender` gives hot loops the array's own ``append``.
    """

    __slots__ = ("_a", "_nsorted", "chunk")

    def __init__(self, values: Iterable[int] = (), *, chunk: int = 1 << 20) -> None:
        if chunk <= 0:
            raise ValueError(f"chunk must be > 0, got {chunk}")
        self._a = array("q")
        self._nsorted = 0  # the samples are sorted when this is their count
        self.chunk = chunk
        for v in values:
            self.add(v)

    def add(self, value: int) -> None:
        if type(value) is not int or value < 0:
            value = _nonneg(value, "sample")
        self._a.append(value)

    def appender(self) -> Callable[[int], None]:
        """The unchecked :meth:`add`: for callers whose values are ints >= 0 by construction
        (one C call per sample). It stays valid: sorting reorders the array in place."""
        return self._a.append

    def __len__(self) -> int:
        return len(self._a)

    @property
    def total(self) -> int:
        """The sum of the samples."""
        return sum(self._a)

    @property
    def max(self) -> int | None:
        """The largest sample, None when there are none."""
        a = self._a
        if not a:
            return None
        return a[-1] if self._nsorted == len(a) else max(a)

    @property
    def count(self) -> int:
        return len(self._a)

    def _sort(self) -> None:
        """Sort the array in place (the same object: :meth:`appender` keeps working)."""
        a, n, c = self._a, len(self._a), self.chunk
        if n <= c:
            a[:] = array("q", sorted(a))
        else:
            runs = [array("q", sorted(a[i : i + c])) for i in range(0, n, c)]
            del a[:]
            merged = heapq.merge(*runs)
            while batch := [x for _, x in zip(range(c), merged)]:
                a.extend(batch)
        self._nsorted = n

    def percentile(self, p: int | Fraction) -> int | None:
        """The nearest-rank ``p``-th percentile, or None when there are no samples."""
        if isinstance(p, bool) or not isinstance(p, (int, Fraction)):
            raise TypeError(f"percentile must be an int or Fraction, got {type(p).__name__} {p!r}")
        if not 0 <= p <= 100:
            raise ValueError(f"percentile must be in [0, 100], got {p}")
        n = len(self._a)
        if n == 0:
            return None
        if self._nsorted != n:
            self._sort()
        q = Fraction(p) * n / 100
        rank = max(1, -(-q.numerator // q.denominator))
        return self._a[rank - 1]

    def log2_histogram(self) -> list[int]:
        """Sample counts by bit length: entry 0 counts the zeros, entry ``k`` the samples in
        ``[2**(k-1), 2**k)``; no trailing zero entries. Log buckets keep a cost distribution
        that spans ns to ms in a few dozen ints, and they come from the sorted array by
        bisection, so the histogram costs nothing per sample."""
        a, n = self._a, len(self._a)
        if n == 0:
            return []
        if self._nsorted != n:
            self._sort()
        out: list[int] = []
        below = 0  # samples below 2**(k-1), i.e. of bit length < k
        k = 0
        while below < n:
            upto = bisect_left(a, 1 << k, below)  # samples of bit length <= k
            out.append(upto - below)
            below = upto
            k += 1
        return out

    def summary(self) -> dict[str, int | None]:
        """``count``, ``total``, ``p50``, ``p99`` and ``max`` (None where there are no samples)."""
        return {
            "count": self.count,
            "max": self.max,
            "p50": self.percentile(50),
            "p99": self.percentile(99),
            "total": self.total,
        }


def _sorted_json(obj: Any) -> Any:
    """``obj`` with every dict's keys in sorted order, so the dict itself is deterministic."""
    if isinstance(obj, dict):
        return {k: _sorted_json(obj[k]) for k in sorted(obj)}
    if isinstance(obj, (list, tuple)):
        return [_sorted_json(x) for x in obj]
    return obj


@dataclass
class RunMetrics:
    """Everything issue 4, §4 asks to measure for one run.

    The simulator calls :meth:`map_attempt` once per map (with its modelled CPU ns and lock
    wait, and its failure cause if it failed), :meth:`deferred_map` when a map is deferred and
    :meth:`deferral_wait` when a deferred map resumes, :meth:`step` for the raw step counts,
    and updates :attr:`footprint` whenever pools or mappings change. Counters that have no
    helper are plain attributes to increment.

    ``peak_footprint_bytes`` and ``avg_footprint_bytes`` in the JSON are those of the
    *reserved* gauge (memory set aside for bouncing, the cost a dynamic design tries to cut);
    the in-use gauge appears as ``peak_in_use_bytes`` and ``avg_in_use_bytes``.
    """

    maps_attempted: int = 0
    maps_succeeded: int = 0
    failures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAILURE_CAUSES, 0))
    deferred: int = 0
    defer_wait_ns: Samples = field(default_factory=Samples)
    bytes_copied: int = 0
    lock_wait_ns_total: int = 0
    decrypt_ops: int = 0
    encrypt_ops: int = 0
    pools_created: int = 0
    pools_freed: int = 0
    oom_events: int = 0
    hiwater_slots: int = 0
    steps: Counter[str] = field(default_factory=Counter)
    map_ns: Samples = field(default_factory=Samples)
    footprint: Footprint = field(default_factory=Footprint)

    @staticmethod
    def check_cause(cause: str) -> str:
        """``cause`` if it is one of :data:`FAILURE_CAUSES`, else a ValueError listing them."""
        if cause not in FAILURE_CAUSES:
            raise ValueError(f"unknown map failure cause {cause!r}; expected one of {', '.join(FAILURE_CAUSES)}")
        return cause

    def fail(self, cause: str) -> None:
        """Count one failure of ``cause`` (without counting an attempt)."""
        self.failures[self.check_cause(cause)] += 1

    def map_attempt(self, cpu_ns: int | None = None, lock_wait_ns: int = 0, failure: str | None = None) -> None:
        """One map attempt: succeeded unless ``failure`` names its cause.

        ``cpu_ns`` (if given) is recorded in :attr:`map_ns`; ``lock_wait_ns`` is added to the
        lock-wait total.
        """
        if failure is not None:
            self.check_cause(failure)
        if type(lock_wait_ns) is not int or lock_wait_ns < 0:  # one test on the hot path
            lock_wait_ns = _nonneg(lock_wait_ns, "lock_wait_ns")
        if cpu_ns is not None:
            self.map_ns.add(cpu_ns)
        self.lock_wait_ns_total += lock_wait_ns
        self.maps_attempted += 1
        if failure is None:
            self.maps_succeeded += 1
        else:
            self.failures[failure] += 1

    def deferred_map(self) -> None:
        """A map was deferred (to wait for space or a new pool)."""
        self.deferred += 1

    def deferral_wait(self, wait_ns: int) -> None:
        """A deferred map resumed after ``wait_ns``."""
        self.defer_wait_ns.add(_nonneg(wait_ns, "wait_ns"))

    def observe_used_slots(self, used: int) -> None:
        """Raise :attr:`hiwater_slots` to ``used`` if it is higher."""
        if used > self.hiwater_slots:
            self.hiwater_slots = used

    def step(self, name: str, n: int = 1) -> None:
        self.steps[name] += n

    def to_json(
        self, scenario: str, policy: str, seed: int, end_ns: int, *, grid_step_ns: int | None = None,
        series: Mapping[str, Sequence[int]] | None = None,
    ) -> dict[str, Any]:
        """The issue 4, §5 ``--json`` record, keys sorted at every level, values ints or None.

        Schema keys: ``scenario, policy, seed, maps, failures {full, too_large, unaddressable,
        no_memory}, deferred, peak_footprint_bytes, avg_footprint_bytes, hiwater_slots,
        bytes_copied, map_ns {p50, p99}, lock_wait_ns_total, decrypt_ops, encrypt_ops,
        pools_created, pools_freed, oom_events``. ``maps`` is the attempts. Extras: ``succeeded``,
        ``end_ns``, ``map_ns.{max, count, total}`` (percentiles and max are None with no samples),
        ``defer_wait_ns`` (the same summary), ``deferred_pending``, ``peak_in_use_bytes``,
        ``avg_in_use_bytes``, the exact integrals ``reserved_byte_ns`` and ``in_use_byte_ns``
        (averages are rounded half to even; integral / ``end_ns`` - start is exact), ``steps``,
        ``time_series`` ``{step_ns, t_ns, reserved_bytes, in_use_bytes}`` on the grid of
        multiples of ``grid_step_ns`` (default: ``ceil(end_ns / 100)``, at least 1), joined by
        ``series`` (other columns sampled on the same grid, one value per grid time), and
        ``map_ns_hist`` (:meth:`Samples.log2_histogram` of ``map_ns``).
        """
        end = _int(end_ns, "end_ns")
        bad = sorted(set(self.failures) - set(FAILURE_CAUSES))
        if bad:
            self.check_cause(bad[0])
        step = grid_step(end, grid_step_ns)
        res, use = self.footprint.reserved, self.footprint.in_use
        res_grid = res.grid(step, end)
        use_grid = use.grid(step, end)
        if [t for t, _ in res_grid] != [t for t, _ in use_grid]:
            raise ValueError("reserved and in-use gauges start at different times; their grids differ")
        times = [t for t, _ in res_grid]
        extra = dict(series or {})
        for name, column in extra.items():
            if name in ("step_ns", "t_ns", "reserved_bytes", "in_use_bytes"):
                raise ValueError(f"time series {name!r} clashes with a built-in column")
            if len(column) != len(times):
                raise ValueError(f"time series {name!r} has {len(column)} values for {len(times)} grid times")
        map_summary = self.map_ns.summary()
        doc: dict[str, Any] = {
            "scenario": scenario,
            "policy": policy,
            "seed": _int(seed, "seed"),
            "end_ns": end,
            "maps": self.maps_attempted,
            "succeeded": self.maps_succeeded,
            "failures": {c: self.failures.get(c, 0) for c in FAILURE_CAUSES},
            "deferred": self.deferred,
            "deferred_pending": self.deferred - self.defer_wait_ns.count,
            "defer_wait_ns": self.defer_wait_ns.summary(),
            "peak_footprint_bytes": res.peak,
            "avg_footprint_bytes": res.average_int(end),
            "reserved_byte_ns": res.integral(end),
            "peak_in_use_bytes": use.peak,
            "avg_in_use_bytes": use.average_int(end),
            "in_use_byte_ns": use.integral(end),
            "hiwater_slots": self.hiwater_slots,
            "bytes_copied": self.bytes_copied,
            "map_ns": map_summary,
            "map_ns_hist": self.map_ns.log2_histogram(),
            "lock_wait_ns_total": self.lock_wait_ns_total,
            "decrypt_ops": self.decrypt_ops,
            "encrypt_ops": self.encrypt_ops,
            "pools_created": self.pools_created,
            "pools_freed": self.pools_freed,
            "oom_events": self.oom_events,
            "steps": dict(self.steps),
            "time_series": {
                "step_ns": step,
                "t_ns": times,
                "reserved_bytes": [v for _, v in res_grid],
                "in_use_bytes": [v for _, v in use_grid],
                **{name: list(column) for name, column in extra.items()},
            },
        }
        result: dict[str, Any] = _sorted_json(doc)
        return result

    def to_json_text(self, scenario: str, policy: str, seed: int, end_ns: int, **kw: Any) -> str:
        """:meth:`to_json` as canonical text: sorted keys, no spaces after separators."""
        return json.dumps(self.to_json(scenario, policy, seed, end_ns, **kw), sort_keys=True, separators=(",", ":"))
