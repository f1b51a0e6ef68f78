"""Event-loop speed: events per second of :class:`swiotlb.sim.Engine` with empty callbacks
(issue 4, §1). A benchmark, not a test: run it by hand.

    python benchmarks/engine.py            # a table
    python benchmarks/engine.py --json     # {"name": events_per_second, ...}

Cases: a bare heapq loop without the engine (this machine's ceiling, for reference); events
scheduled up front with ``at`` and then run (a heap of ``-n`` entries: what lazy sources avoid);
a chain where each callback schedules the next with ``after`` (schedule + dispatch per event, the
pattern of completions); lazy sources (one pending arrival per source, the pattern of workloads
and trace replay). /work/shared/stack.md
measured a hand-written heapq loop at about 3.2 M events/s on this kind of machine. Each figure is
the best of ``--repeat`` runs (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import heapq
import json
import time
from typing import Callable

from swiotlb.sim import Engine


def _empty() -> None:
    pass


def bare_heapq(n: int) -> Callable[[], Engine]:
    """The chain as a bare heapq loop with no engine: this machine's ceiling, for reference."""

    def run() -> Engine:
        heap: list[tuple[int, int, Callable[[], None]]] = [(0, 0, _empty)]
        for seq in range(1, n + 1):
            t, _, fn = heapq.heappop(heap)
            fn()
            heapq.heappush(heap, (t + 7, seq, _empty))
        eng = Engine()
        eng.events = n
        return eng

    return run


def preloaded(n: int) -> Callable[[], Engine]:
    def run() -> Engine:
        eng = Engine()
        at = eng.at
        for i in range(n):
            at(i % 1000, _empty)
        eng.run()
        return eng

    return run


def chain(n: int) -> Callable[[], Engine]:
    def run() -> Engine:
        eng = Engine()
        left = [n]

        def tick() -> None:
            left[0] -= 1
            if left[0]:
                eng.after(7, tick)

        eng.after(0, tick)
        eng.run()
        return eng

    return run


def sources(n: int, k: int) -> Callable[[], Engine]:
    def run() -> Engine:
        eng = Engine()
        per = n // k
        for s in range(k):
            eng.add_source(((i * 13 + s, _empty) for i in range(per)), name=f"s{s}")
        eng.run()
        return eng

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=1_000_000, help="events per case")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    cases = {
        "bare-heapq": bare_heapq(args.n),
        "at-preloaded": preloaded(args.n),
        "after-chain": chain(args.n),
        "source-1": sources(args.n, 1),
        "sources-16": sources(args.n, 16),
    }
    rates: dict[str, float] = {}
    for name, run in cases.items():
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            eng = run()
            best = min(best, time.perf_counter() - t0)
        rates[name] = eng.events / best
    if args.json:
        print(json.dumps(rates))
        return
    print(f"{'case':<14} {'events/s':>12}")
    for name, rate in rates.items():
        print(f"{name:<14} {rate / 1e6:>10.2f} M")


if __name__ == "__main__":
    main()
