"""Allocator speed: map+unmap operations per second on the kernel's long vectors and on
fragmented pools (issue 2, §7). A benchmark, not a test: run it by hand.

    python benchmarks/replay.py            # a table, with the issue's reference rates
    python benchmarks/replay.py --json     # {"name": ops_per_second, ...}

Each figure is the best of ``--repeat`` runs (the machine is shared and noisy). Vector files are
parsed and fragmented pools built before timing, so only the allocator and the replay loop are
measured. The C reference rates are the ones the issue quotes for the kernel's own code compiled
-O2 on this kind of machine; they were not measured here.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable

from swiotlb.core import DeviceParams, IoTlbMem, IoTlbPool, IoTlbSteps, SlotMapping, get_profile
from swiotlb.core.search import take_slots
from swiotlb.lab.vectors import LEGACY_PROFILE, iter_cases

SHARED = Path(__file__).resolve().parents[2] / "shared" / "vectors"
LONG_FILES = [SHARED / "kernel-slots" / "long.jsonl", SHARED / "kernel-slots-6.12" / "long.jsonl"]
C_LONG = (0.22e6, 0.70e6)  # the kernel's C code on the long cases (issue 2, §7)
C_HOLES = 0.31e6  # ... on the 1-8-slot-hole pool
C_SINGLE = 0.07e6  # ... on the single-slot-hole pool (target: 3x)

FRAGMENTED = {  # name: (slots, areas, occupancy, largest hole)
    "frag-holes-1-8": (32768, 2, 0.96, 8),
    "frag-single-slot": (32768, 2, 0.96, 1),
    "frag-99pct-64mib": (32768, 2, 0.99, 8),
    "frag-99pct-1gib": (524288, 2, 0.99, 8),
}


def best_time(run: Callable[[], None], repeat: int, setup: Callable[[], Any] | None = None) -> float:
    best = float("inf")
    for _ in range(repeat):
        arg = setup() if setup else None
        t0 = time.perf_counter()
        run(arg) if setup else run()  # type: ignore[call-arg]
        best = min(best, time.perf_counter() - t0)
    return best


def long_case(case: dict[str, Any]) -> tuple[int, Callable[[], None]]:
    """The case's ops as tuples, and a function replaying them on a fresh allocator."""
    prof = get_profile(case.get("profile") or LEGACY_PROFILE)
    dev = DeviceParams(case["device"]["min_align_mask"], case["device"]["seg_boundary_mask"])
    ops: list[tuple[int, ...]] = []
    for op in case["ops"]:
        if op["op"] == "map":
            alloc = op.get("alloc_size") if prof.alloc_size_arg else None
            ops.append((op["id"], op["orig_addr"], op["mapping_size"], op["alloc_align_mask"], op["cpu"], alloc))
        else:
            ops.append((op["id"],))

    def run() -> None:
        mem = IoTlbMem([IoTlbPool(p["start"], p["nslabs"], p["nareas"]) for p in case["pools"]], prof, dynamic=True)
        live: dict[int, SlotMapping] = {}
        tbl_map, release = mem.tbl_map_single, mem.release_slots
        for op in ops:
            if len(op) == 1:
                m = live.pop(op[0])
                release(dev, m.tlb_addr, m.pool)
            else:
                r = tbl_map(dev, op[1], op[2], op[3], cpu=op[4], alloc_size=op[5])  # type: ignore[arg-type]
                if type(r) is SlotMapping:
                    live[op[0]] = r

    return len(ops), run


class Fragmented:
    """A pool filled to ``occupancy`` with free holes of 1..max_hole slots, then map attempts of
    random sizes up to 64 KiB from random CPUs, each success unmapped at once (seeded)."""

    def __init__(self, nslabs: int, nareas: int, occupancy: float, max_hole: int, attempts: int, seed: int) -> None:
        rng = random.Random(seed)
        mean_hole = (1 + max_hole) / 2
        mean_run = mean_hole * occupancy / (1 - occupancy)
        self.runs: list[tuple[int, int]] = []  # allocated (start, length), never across a segment
        for seg in range(0, nslabs, 128):
            i = seg
            while i < seg + 128:
                run = min(seg + 128 - i, int(rng.expovariate(1 / mean_run)) + 1)
                self.runs.append((i, run))
                i += run + rng.randint(1, max_hole)
        self.cursors = [rng.randrange(nslabs // nareas) for _ in range(nareas)]
        self.requests = [
            ((rng.randrange(1 << 30) << 12) | rng.choice((0, 0, 0x200, 0x800)), rng.randint(1, 65536), rng.randrange(nareas))
            for _ in range(attempts)
        ]
        self.shape = (nslabs, nareas)
        self.dev = DeviceParams(0, 0xFFFFFFFF)
        probe = self.build()
        self.occupancy = probe.total_used / nslabs
        self.successes = self.replay(probe)
        self.calls = attempts + self.successes

    def build(self) -> IoTlbMem:
        nslabs, nareas = self.shape
        pool = IoTlbPool(0x4000_0000, nslabs, nareas)
        for start, run in self.runs:
            take_slots(pool, start // pool.area_nslabs, start, run, run << 11)
        for area, cursor in zip(pool.areas, self.cursors):
            area.index = cursor
        mem = IoTlbMem([pool], get_profile("v6.12"))
        mem.total_used = pool.used
        return mem

    def replay(self, mem: IoTlbMem) -> int:
        ok = 0
        dev, tbl_map, release = self.dev, mem.tbl_map_single, mem.release_slots
        for orig, size, cpu in self.requests:
            r = tbl_map(dev, orig, size, 0, cpu=cpu)
            if type(r) is SlotMapping:
                ok += 1
                release(dev, r.tlb_addr, r.pool)
        return ok


class Easy:
    """The simulator's common case: a mostly empty 1 GiB pool with 8 areas, 4 KiB and 128 KiB
    maps from random CPUs, 64 mappings live (each map releases the oldest), through the
    public ``tbl_map_single`` and ``release_slots`` (seeded). ``steps`` counts the kernel's
    steps into a shared ``IoTlbSteps``, as a policy's zones do."""

    def __init__(self, ops: int, live: int, steps: bool, seed: int) -> None:
        rng = random.Random(seed)
        self.requests = [
            (rng.randrange(1 << 30) << 12, rng.choice((4096, 131072)), rng.randrange(8)) for _ in range(ops)
        ]
        self.live = live
        self.steps = steps
        self.dev = DeviceParams(0xFFF, 0xFFFFFFFF)  # an NVMe-like device
        self.calls = 2 * ops - live

    def build(self) -> IoTlbMem:
        counter = IoTlbSteps()
        return IoTlbMem([IoTlbPool(0x1_0000_0000, 524288, 8)], get_profile("v6.12"),
                        count_steps=counter if self.steps else False)

    def replay(self, mem: IoTlbMem) -> None:
        dev, tbl_map, release = self.dev, mem.tbl_map_single, mem.release_slots
        ring: list[SlotMapping] = []
        live = self.live
        for orig, size, cpu in self.requests:
            if len(ring) == live:
                m = ring.pop(0)
                release(dev, m.tlb_addr, m.pool)
            r = tbl_map(dev, orig, size, 0, cpu=cpu)
            assert type(r) is SlotMapping
            ring.append(r)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object name -> ops/s")
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure; the best is kept")
    args = ap.parse_args(argv)
    rates: dict[str, float] = {}
    notes: dict[str, str] = {}
    for f in LONG_FILES:
        if not f.exists():
            print(f"skipping {f}: not found (needs ../shared beside the repository)", file=sys.stderr)
            continue
        for _, case in iter_cases([f]):
            nops, run = long_case(case)
            rates[case["name"]] = nops / best_time(run, args.repeat)
            notes[case["name"]] = f"C {C_LONG[0] / 1e6:.2f}-{C_LONG[1] / 1e6:.2f}"
    for name, (nslabs, nareas, occ, hole) in FRAGMENTED.items():
        frag = Fragmented(nslabs, nareas, occ, hole, 20000, seed=7)
        rates[name] = frag.calls / best_time(frag.replay, args.repeat, frag.build)  # type: ignore[arg-type]
        notes[name] = f"occupancy {frag.occupancy:.3f}, maps succeeded {frag.successes / 20000:.1%}"
    for name, steps in (("easy-1gib-8areas", False), ("easy-1gib-8areas-steps", True)):
        easy = Easy(20000, 64, steps, seed=11)
        rates[name] = easy.calls / best_time(easy.replay, args.repeat, easy.build)  # type: ignore[arg-type]
        notes[name] = "64 live maps of 4 KiB or 128 KiB" + ("; count_steps on (shared IoTlbSteps)" if steps else "")
    notes["frag-holes-1-8"] += f"; C {C_HOLES / 1e6:.2f}"
    notes["frag-single-slot"] += f"; C {C_SINGLE / 1e6:.2f}, target {3 * C_SINGLE / 1e6:.2f}"
    ratio = rates["frag-99pct-64mib"] / rates["frag-99pct-1gib"]
    notes["frag-99pct-1gib"] += f"; cost per op {ratio:.2f}x the 64 MiB pool's (target <= 2)"
    if args.json:
        print(json.dumps({k: round(v) for k, v in rates.items()}))
    else:
        from swiotlb.native import describe

        print(describe())
        for k, v in rates.items():
            print(f"{k:42s} {v / 1e6:7.3f} M ops/s   {notes.get(k, '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
