"""The event engine: ordering, cancellation, run limits, lazy sources, determinism (issue 4, §1)."""

from __future__ import annotations

import enum
import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.conftest import pure_only

from swiotlb.sim import Callback, Engine, Event, Lock, RngStreams, derive_seed


NO_SIMPY = "simpy (test oracle only) is not installed; pip install simpy to run this test"


def recorder(eng: Engine, trace: list[tuple[int, str]]) -> Callable[[str], Callback]:
    """``mark(label)`` is a callback appending ``(now, label)`` to ``trace``."""

    def mark(label: str) -> Callback:
        return lambda: trace.append((eng.now, label))

    return mark


# --- ordering -------------------------------------------------------------------------------


def test_events_run_in_time_order_whatever_the_scheduling_order() -> None:
    eng = Engine()
    trace: list[tuple[int, str]] = []
    mark = recorder(eng, trace)
    for t in (30, 10, 20, 0):
        eng.at(t, mark(f"e{t}"))
    assert eng.run() == 4
    assert trace == [(0, "e0"), (10, "e10"), (20, "e20"), (30, "e30")]
    assert eng.now == 30 and eng.events == 4


def test_ties_run_in_scheduling_order() -> None:
    eng = Engine()
    trace: list[tuple[int, str]] = []
    mark = recorder(eng, trace)
    for name in "abcde":
        eng.at(5, mark(name))
    eng.run()
    assert [label for _, label in trace] == list("abcde")


def test_event_scheduled_at_now_runs_after_those_already_queued_for_now() -> None:
    eng = Engine()
    trace: list[tuple[int, str]] = []
    mark = recorder(eng, trace)

    def first() -> None:
        trace.append((eng.now, "first"))
        eng.after(0, mark("spawned"))

    eng.at(5, first)
    eng.at(5, mark("second"))
    eng.run()
    assert trace == [(5, "first"), (5, "second"), (5, "spawned")]


def test_after_is_relative_to_now() -> None:
    eng = Engine(start_ns=100)
    trace: list[tuple[int, str]] = []
    mark = recorder(eng, trace)
    eng.after(5, lambda: eng.after(7, mark("child")))
    eng.run()
    assert trace == [(112, "child")]


# --- argument checks -------------------------------------------------------------------------


def test_scheduling_in_the_past_is_an_error() -> None:
    eng = Engine(start_ns=50)
    eng.at(50, lambda: None)  # now itself is fine
    with pytest.raises(ValueError, match=r"cannot schedule at 49 ns: it is in the past \(now is 50 ns\)"):
        eng.at(49, lambda: None)
    with pytest.raises(ValueError, match="delays must be >= 0"):
        eng.after(-1, lambda: None)


@pytest.mark.parametrize("bad", [1.0, 1.5, True, "3"])
@pure_only("swiotlb.sim.engine", "its own TypeError message, and bools pass as ints")
def test_non_integer_times_are_type_errors(bad: object) -> None:
    eng = Engine()
    with pytest.raises(TypeError, match="integer number of nanoseconds"):
        eng.at(bad, lambda: None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="delay_ns must be an integer"):
        eng.after(bad, lambda: None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="until_ns must be an integer"):
        eng.run(until_ns=bad)  # type: ignore[arg-type]


def test_integer_like_times_are_accepted_as_int() -> None:
    class Ns(enum.IntEnum):
        TEN = 10

    eng = Engine()
    ev = eng.at(Ns.TEN, lambda: None)
    assert type(ev[0]) is int
    eng.run()
    assert eng.now == 10 and type(eng.now) is int


# --- cancellation ---------------------------------------------------------------------------


def test_cancelled_event_does_not_run_and_is_not_counted() -> None:
    eng = Engine()
    trace: list[tuple[int, str]] = []
    mark = recorder(eng, trace)
    keep = eng.at(10, mark("keep"))
    drop = eng.at(5, mark("drop"))
    assert eng.pending == 2 and eng.is_pending(drop)
    assert eng.cancel(drop) is True
    assert eng.cancel(drop) is False  # already cancelled
    assert not eng.is_pending(drop) and eng.pending == 1
    assert eng.peek() == 10  # the cancelled entry is skipped (and dropped)
    assert eng.run() == 1
    assert trace == [(10, "keep")] and eng.events == 1
    assert not eng.is_pending(keep)
    assert eng.cancel(keep) is False  # already ran
    assert eng.pending == 0 and eng.peek() is None


def test_cancel_from_a_callback_at_the_same_time() -> None:
    eng = Engine()
    trace: list[tuple[int, str]] = []
    mark = recorder(eng, trace)
    victim: list[Event] = []

    def canceller() -> None:
        trace.append((eng.now, "canceller"))
        assert eng.cancel(victim[0])

    eng.at(5, canceller)
    victim.append(eng.at(5, mark("victim")))
    eng.at(5, mark("bystander"))
    eng.run()
    assert trace == [(5, "canceller"), (5, "bystander")]


def test_cancelling_everything_leaves_time_alone() -> None:
    eng = Engine(start_ns=3)
    evs = [eng.at(t, lambda: None) for t in (10, 20, 30)]
    assert all(eng.cancel(ev) for ev in evs)
    assert eng.run() == 0
    assert eng.now == 3 and eng.pending == 0


def test_timeout_pattern_cancel_and_reschedule() -> None:
    """The usual use: a timeout armed per request and cancelled when the completion wins."""
    eng = Engine()
    timeouts: list[int] = []
    completions: list[int] = []

    def request(i: int, service_ns: int) -> Callback:
        def arrive() -> None:
            timer = eng.after(100, lambda: timeouts.append(i))

            def complete() -> None:
                eng.cancel(timer)
                completions.append(i)

            eng.after(service_ns, complete)

        return arrive

    for i, service in enumerate([50, 150, 99, 100, 101]):
        eng.at(i, request(i, service))
    eng.run()
    # request 3's completion ties with its timeout; the timeout was armed first, so it fires first.
    assert timeouts == [1, 3, 4] and completions == [0, 2, 3, 4, 1]
    assert eng.pending == 0


# --- run limits ------------------------------------------------------------------------------


def test_run_until_is_half_open_and_advances_now() -> None:
    eng = Engine()
    trace: list[tuple[int, str]] = []
    mark = recorder(eng, trace)
    for t in (0, 9, 10, 11, 25):
        eng.at(t, mark(str(t)))
    assert eng.run(until_ns=10) == 2
    assert eng.now == 10 and [x for x, _ in trace] == [0, 9]
    assert eng.peek() == 10  # the event at exactly until_ns is still queued
    assert eng.run(until_ns=20) == 2
    assert eng.now == 20
    assert eng.run(until_ns=20) == 0  # an empty slice is fine
    with pytest.raises(ValueError, match=r"cannot run until 19 ns: it is in the past"):
        eng.run(until_ns=19)
    assert eng.run() == 1
    assert [x for x, _ in trace] == [0, 9, 10, 11, 25] and eng.events == 5


def test_run_until_on_an_empty_engine_just_advances_time() -> None:
    eng = Engine()
    assert eng.run(until_ns=1_000) == 0
    assert eng.now == 1_000
    eng.after(1, lambda: None)
    eng.run()
    assert eng.now == 1_001


def test_max_events_stops_at_the_last_event_run() -> None:
    eng = Engine()
    for t in (1, 2, 3, 4):
        eng.at(t, lambda: None)
    cancelled = eng.at(2, lambda: None)
    eng.cancel(cancelled)
    assert eng.run(max_events=0) == 0 and eng.now == 0
    assert eng.run(max_events=2) == 2 and eng.now == 2  # the cancelled one is not counted
    assert eng.run(until_ns=100, max_events=1) == 1
    assert eng.now == 3  # stopped by max_events, so now is not moved to until_ns
    assert eng.run(until_ns=100, max_events=5) == 1 and eng.now == 100
    with pytest.raises(ValueError, match="max_events must be >= 0"):
        eng.run(max_events=-1)


def test_run_from_a_callback_is_refused() -> None:
    eng = Engine()

    def nested() -> None:
        eng.run()

    eng.at(1, nested)
    with pytest.raises(RuntimeError, match="inside a callback"):
        eng.run()


def test_callback_exception_propagates_and_the_engine_can_go_on() -> None:
    eng = Engine()
    trace: list[tuple[int, str]] = []
    mark = recorder(eng, trace)

    def boom() -> None:
        raise KeyError("boom")

    eng.at(1, boom)
    eng.at(2, mark("after"))
    with pytest.raises(KeyError):
        eng.run()
    assert eng.now == 1 and eng.events == 1
    eng.run()
    assert trace == [(2, "after")] and eng.events == 2


# --- lazy sources ----------------------------------------------------------------------------


def test_sources_merge_in_time_order() -> None:
    eng = Engine()
    trace: list[tuple[int, str]] = []
    mark = recorder(eng, trace)
    eng.add_source(((t, mark(f"a{t}")) for t in (0, 10, 20)), name="a")
    eng.add_source(((t, mark(f"b{t}")) for t in (5, 10, 15)), name="b")
    eng.add_source(iter([]), name="empty")
    assert eng.pending == 2  # one arrival per non-empty source
    eng.run()
    # at 10, a's arrival was read when a0 ran, before b's (read when b5 ran)
    assert trace == [(0, "a0"), (5, "b5"), (10, "a10"), (10, "b10"), (15, "b15"), (20, "a20")]


def test_source_is_read_one_arrival_ahead_only() -> None:
    eng = Engine()
    read: list[int] = []

    def arrivals() -> Iterator[tuple[int, Callback]]:
        for t in range(0, 1000, 10):
            read.append(t)
            yield t, lambda: None

    eng.add_source(arrivals())
    assert read == [0]
    eng.run(until_ns=25)
    assert read == [0, 10, 20, 30]  # 30 is the pending arrival; nothing beyond it was read
    assert eng.pending == 1


def test_source_next_arrival_is_read_before_its_callback_runs() -> None:
    """Ties between a source's arrivals and what its callbacks schedule do not depend on the callbacks."""
    eng = Engine()
    trace: list[tuple[int, str]] = []
    mark = recorder(eng, trace)

    def first() -> None:
        trace.append((eng.now, "arrival1"))
        eng.after(0, mark("spawned"))

    eng.add_source(iter([(5, first), (5, mark("arrival2"))]))
    eng.run()
    assert trace == [(5, "arrival1"), (5, "arrival2"), (5, "spawned")]


def test_million_event_source_keeps_one_pending_arrival() -> None:
    eng = Engine()
    n = 1_000_000
    done = [0]
    worst = [0]

    def complete() -> None:
        done[0] += 1

    def arrive() -> None:
        eng.after(35, complete)  # each arrival has a device completion 35 ns later

    def arrivals() -> Iterator[tuple[int, Callback]]:
        for i in range(n):
            p = eng.pending
            if p > worst[0]:
                worst[0] = p
            yield i * 10, arrive

    eng.add_source(arrivals(), name="million")
    eng.run()
    assert eng.events == 2 * n and done[0] == n
    # one pending arrival plus at most four completions in flight (35 ns / 10 ns apart)
    assert worst[0] <= 5


def test_source_going_back_in_time_is_an_error() -> None:
    eng = Engine()
    eng.add_source(iter([(5, lambda: None), (4, lambda: None)]), name="nic0")
    with pytest.raises(ValueError, match=r"'nic0' went back in time: arrival at 4 ns, but it is already 5"):
        eng.run()


def test_source_starting_before_now_is_an_error() -> None:
    eng = Engine(start_ns=100)
    with pytest.raises(ValueError, match="source 'late' went back in time: arrival at 99 ns"):
        eng.add_source(iter([(99, lambda: None)]), name="late")


@pure_only("swiotlb.sim.engine", "the source's tuple is type-checked first, with its own message")
def test_source_with_non_integer_time_is_a_type_error() -> None:
    eng = Engine()
    with pytest.raises(TypeError, match="source 'f': arrival time must be an integer number of nanoseconds"):
        eng.add_source(iter([(1.5, lambda: None)]), name="f")  # type: ignore[arg-type]


# --- determinism -----------------------------------------------------------------------------


def toy_model(seed: int, workloads: int = 2, n: int = 2000) -> list[str]:
    """Poisson arrivals per workload, a random area lock per request, random device delays and
    timeouts; returns the trace as text lines."""
    eng = Engine()
    rng = RngStreams(seed)
    locks = [Lock(eng, f"area{i}") for i in range(4)]
    trace: list[str] = []

    def request(name: str, area: int, hold: int, service: int) -> Callback:
        def arrive() -> None:
            timer = eng.after(2500, lambda: trace.append(f"{eng.now} timeout {name}"))

            def done() -> None:
                eng.cancel(timer)
                trace.append(f"{eng.now} done {name}")

            def mapped(wait: int) -> None:
                trace.append(f"{eng.now} mapped {name} area{area} wait={wait}")
                eng.after(service, done)

            locks[area].acquire(name, hold, mapped)

        return arrive

    def workload(w: int) -> Iterator[tuple[int, Callback]]:
        draw = rng.substream(f"workload/{w}")
        t = 0
        for i in range(n):
            t += int(draw.expovariate(1 / 500))
            area, hold, service = draw.randrange(4), draw.randrange(10, 200), draw.randrange(100, 3000)
            yield t, request(f"w{w}r{i}", area, hold, service)

    for w in range(workloads):
        eng.add_source(workload(w), name=f"w{w}")
    eng.run()
    for lk in locks:
        trace.append(f"{lk.name} {lk.acquisitions} {lk.contended} {lk.wait_total_ns} {lk.wait_max_ns}")
    return trace


def digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def test_same_seed_gives_byte_identical_traces() -> None:
    a, b = toy_model(7), toy_model(7)
    assert digest(a) == digest(b)
    assert any("timeout" in line for line in a)
    assert any("wait=0" not in line for line in a if "mapped" in line)  # the locks were contended
    assert digest(toy_model(8)) != digest(a)


def test_trace_does_not_depend_on_the_process_hash_seed() -> None:
    """String hashing is randomised per process; nothing in a run may depend on it."""
    code = "import sys; from tests.sim.test_engine import toy_model, digest; print(digest(toy_model(7, n=300)))"
    root = Path(__file__).resolve().parents[2]
    outs = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        res = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        outs.add(res.stdout.strip())
    assert outs == {digest(toy_model(7, n=300))}


def test_adding_a_workload_leaves_the_others_draws_alone() -> None:
    def mapped_areas(lines: list[str]) -> list[str]:
        return [line.split()[2] + line.split()[3] for line in lines if " mapped w0r" in line]

    # the order and timing of events change with the extra load, but w0's own draws do not
    assert sorted(mapped_areas(toy_model(7, workloads=2))) == sorted(mapped_areas(toy_model(7, workloads=3)))


def test_substreams_are_named_and_stable() -> None:
    rng = RngStreams(42)
    s = rng.substream("workload/nvme0")
    assert rng.substream("workload/nvme0") is s
    assert [s.randrange(1000) for _ in range(5)] == [791, 7, 370, 716, 644]  # pinned across versions
    assert derive_seed(42, "workload/nvme0") == 225766893920574328273166814264460381318
    other = RngStreams(42)
    other.substream("something-else").random()  # creating and using another stream first ...
    assert [other.substream("workload/nvme0").randrange(1000) for _ in range(5)] == [791, 7, 370, 716, 644]
    assert rng.names() == ["workload/nvme0"]
    with pytest.raises(TypeError, match="seed must be an int"):
        RngStreams(1.0)  # type: ignore[arg-type]


# --- oracle: SimPy -----------------------------------------------------------------------------


Plan = tuple[list[tuple[int, str]], dict[str, list[tuple[int, str]]], set[str]]


def random_tree(seed: int, roots: int = 60) -> Plan:
    """Root events, each event's children (delay, label) and the labels whose firing cancels
    an earlier-labelled sibling; drawn per label so the plan does not depend on run order."""
    rng = random.Random(seed)
    root = [(rng.randrange(0, 50), f"r{i}") for i in range(roots)]
    children: dict[str, list[tuple[int, str]]] = {}
    cancellers: set[str] = set()
    todo = [label for _, label in root]
    while todo:
        label = todo.pop()
        r = random.Random(f"{seed}/{label}")
        if label.count(".") < 4:
            kids = [(r.choice([0, 0, 1, 2, 5, 7]), f"{label}.{k}") for k in range(r.randrange(3))]
            children[label] = kids
            todo.extend(lbl for _, lbl in kids)
            if len(kids) == 2 and r.random() < 0.5:
                cancellers.add(kids[1][1])  # the second child cancels the first if it has not run
    return root, children, cancellers


@pytest.mark.parametrize("seed", range(5))
def test_ordering_matches_simpy(seed: int) -> None:
    simpy = pytest.importorskip("simpy", reason=NO_SIMPY)
    root, children, cancellers = random_tree(seed)

    # ours
    eng = Engine()
    ours: list[tuple[int, str]] = []
    handles: dict[str, Event] = {}
    effective = [0]

    def fire(label: str) -> Callback:
        def run() -> None:
            ours.append((eng.now, label))
            if label in cancellers:
                effective[0] += eng.cancel(handles[label[:-1] + "0"])
            for delay, kid in children.get(label, []):
                handles[kid] = eng.after(delay, fire(kid))

        return run

    for t, label in root:
        eng.at(t, fire(label))
    eng.run(until_ns=20)
    ours.append((eng.now, "--- until 20"))
    eng.run()

    # SimPy: a Timeout is scheduled when created, normal priority, FIFO among equal times
    env = simpy.Environment()
    theirs: list[tuple[int, str]] = []
    cancelled: set[str] = set()
    fired: set[str] = set()

    def sim_fire(label: str) -> None:
        if label in cancelled:
            return
        fired.add(label)
        theirs.append((env.now, label))
        if label in cancellers and label[:-1] + "0" not in fired:
            cancelled.add(label[:-1] + "0")
        for delay, kid in children.get(label, []):
            env.timeout(delay).callbacks.append(lambda _e, kid=kid: sim_fire(kid))

    for t, label in root:
        env.timeout(t).callbacks.append(lambda _e, label=label: sim_fire(label))
    env.run(until=20)
    theirs.append((env.now, "--- until 20"))
    env.run()

    assert ours == theirs
    assert len(ours) > 100 and effective[0] > 0 and eng.now > 20
