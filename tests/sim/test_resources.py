"""Area locks and CPUs: FIFO grants, wait accounting, misuse errors, and SimPy as an oracle."""

from __future__ import annotations

import random
from typing import Callable

import pytest

from swiotlb.sim import Callback, Cpu, Engine, Lock

NO_SIMPY = "simpy (test oracle only) is not installed; pip install simpy to run this test"


def test_free_lock_is_granted_at_once() -> None:
    eng = Engine(start_ns=7)
    lock = Lock(eng, "area0")
    got: list[tuple[int, int]] = []
    lock.request("cpu0", lambda wait: got.append((eng.now, wait)))
    assert got == [(7, 0)]  # inside the call, not as a later event
    assert lock.locked and lock.holder == "cpu0" and eng.pending == 0
    lock.release("cpu0")
    assert not lock.locked
    assert (lock.acquisitions, lock.contended, lock.wait_total_ns, lock.wait_max_ns) == (1, 0, 0, 0)


def test_acquire_holds_then_releases_and_reports_the_wait() -> None:
    eng = Engine()
    lock = Lock(eng)
    done: list[tuple[str, int, int]] = []
    def arrive(who: str, hold: int) -> Callback:
        return lambda: lock.acquire(who, hold, lambda wait: done.append((who, eng.now, wait)))

    for t, who, hold in [(0, "A", 10), (2, "B", 5), (3, "C", 1)]:
        eng.at(t, arrive(who, hold))
    eng.run()
    # A holds 0-10; B waits 2-10 and holds 10-15; C waits 3-15 and holds 15-16.
    assert done == [("A", 10, 0), ("B", 15, 8), ("C", 16, 12)]
    assert lock.acquisitions == 3 and lock.contended == 2
    assert lock.wait_total_ns == 20 and lock.wait_max_ns == 12
    assert lock.mean_wait_ns == pytest.approx(20 / 3)
    assert lock.held_ns == 16 and lock.max_queue == 2
    assert not lock.locked and lock.waiting == 0


def test_waiters_are_served_first_in_first_out() -> None:
    eng = Engine()
    lock = Lock(eng)
    order: list[str] = []
    lock.acquire("holder", 100)

    def granted(who: str) -> Callable[[int], None]:
        def run(_wait: int) -> None:
            order.append(who)
            eng.after(1, lambda: lock.release(who))

        return run

    for who in ["w3", "w1", "w2", "w0"]:
        lock.request(who, granted(who))
    assert lock.waiting == 4
    eng.run()
    assert order == ["w3", "w1", "w2", "w0"]


def test_no_barging_at_the_release_nanosecond() -> None:
    """A request made at the very nanosecond of a release queues behind the waiter it went to."""
    eng = Engine()
    lock = Lock(eng)
    grants: list[tuple[str, int]] = []
    lock.request("A", lambda _w: grants.append(("A", eng.now)))
    lock.request("B", lambda _w: grants.append(("B", eng.now)))  # queued

    def release_then_newcomer() -> None:
        lock.release("A")  # hands the lock to B at once
        lock.request("C", lambda _w: grants.append(("C", eng.now)))
        assert lock.holder == "B" and lock.waiting == 1

    eng.at(10, release_then_newcomer)
    eng.at(15, lambda: lock.release("B"))
    eng.run()
    assert grants == [("A", 0), ("B", 10), ("C", 15)]
    assert lock.holder == "C" and lock.contended == 2 and lock.wait_total_ns == 10 + 5


def test_long_chain_of_waiters_does_not_recurse() -> None:
    eng = Engine()
    lock = Lock(eng)
    n = 20_000
    served = [0]
    lock.request("first", lambda _w: None)

    def grant(who: int) -> Callable[[int], None]:
        def run(_wait: int) -> None:
            served[0] += 1
            lock.release(who)  # zero-length critical section

        return run

    for i in range(n):
        lock.request(i, grant(i))
    lock.release("first")
    eng.run()
    assert served[0] == n and not lock.locked and lock.wait_max_ns == 0


def test_misuse_is_reported() -> None:
    eng = Engine()
    lock = Lock(eng, "area3")
    with pytest.raises(RuntimeError, match="area3: released by 'x' but not held"):
        lock.release("x")
    with pytest.raises(ValueError, match="holder cannot be None"):
        lock.request(None, lambda _w: None)
    lock.request("cpu1", lambda _w: None)
    with pytest.raises(RuntimeError, match="'cpu1' already holds it"):
        lock.request("cpu1", lambda _w: None)
    with pytest.raises(RuntimeError, match="released by 'cpu2' but held by 'cpu1'"):
        lock.release("cpu2")
    with pytest.raises(ValueError, match="hold_ns must be >= 0"):
        lock.acquire("cpu2", -1)
    with pytest.raises(TypeError, match="hold_ns must be an integer"):
        lock.acquire("cpu2", 1.5)  # type: ignore[arg-type]
    assert "held by 'cpu1'" in repr(lock)


def test_cpu_runs_items_in_order() -> None:
    eng = Engine()
    cpu = Cpu(eng, 3)
    done: list[tuple[str, int, int]] = []
    assert cpu.idle
    assert cpu.run(10, lambda w: done.append(("a", eng.now, w))) == 10
    assert cpu.run(5, lambda w: done.append(("b", eng.now, w))) == 15
    assert not cpu.idle

    def later() -> None:
        cpu.run(1, lambda w: done.append(("c", eng.now, w)))

    eng.at(40, later)
    eng.run()
    assert done == [("a", 10, 0), ("b", 15, 10), ("c", 41, 0)]
    assert cpu.busy_ns == 16 and cpu.items == 3 and cpu.idle
    with pytest.raises(ValueError, match="cost_ns must be >= 0"):
        cpu.run(-5)


@pytest.mark.parametrize("seed", range(6))
def test_lock_matches_simpy_resource(seed: int) -> None:
    """Grant times and waits against SimPy's FIFO ``Resource(capacity=1)``, with many ties."""
    simpy = pytest.importorskip("simpy", reason=NO_SIMPY)
    rng = random.Random(seed)
    reqs = [(f"r{i}", rng.randrange(0, 300, 5), rng.choice([0, 5, 10, 15, 40])) for i in range(200)]

    eng = Engine()
    lock = Lock(eng)
    ours: list[tuple[str, int, int]] = []

    def arrive(who: str, hold: int) -> Callback:
        def granted(wait: int) -> None:
            ours.append((who, eng.now, wait))
            eng.after(hold, lambda: lock.release(who))

        return lambda: lock.request(who, granted)

    for who, t, hold in reqs:
        eng.at(t, arrive(who, hold))
    eng.run()

    env = simpy.Environment()
    res = simpy.Resource(env, capacity=1)
    theirs: list[tuple[str, int, int]] = []

    def proc(who: str, t: int, hold: int):  # type: ignore[no-untyped-def]
        yield env.timeout(t)
        asked = env.now
        with res.request() as req:
            yield req
            theirs.append((who, env.now, env.now - asked))
            yield env.timeout(hold)

    for who, t, hold in reqs:
        env.process(proc(who, t, hold))
    env.run()

    assert ours == theirs
    assert lock.wait_total_ns == sum(w for _, _, w in theirs) and lock.wait_total_ns > 0
    assert lock.wait_max_ns == max(w for _, _, w in theirs)
    assert lock.acquisitions == len(reqs)
    # a request that queues and is handed the lock in the same nanosecond is contended with wait 0
    assert lock.contended >= sum(1 for *_, w in theirs if w > 0)
