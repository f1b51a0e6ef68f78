"""Allocator speed: map+unmap operations per second on the kernel's long vectors and on
fragmented pools (issue 2, §7). A benchmark, not a test: run it by hand.

    python benchmarks/replay.py            # a table
    python benchmarks/replay.py --json     # {"name": ops_per_second, ...}

Each figure is the best of ``--repeat`` runs (the machine is shared and noisy); vectors are
parsed before timing, so only the allocator and the replay loop are measured.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from swiotlb.core import DeviceParams, IoTlbMem, IoTlbPool, SlotMapping, get_profile
from swiotlb.core.search import take_slots
from swiotlb.lab.vectors import LEGACY_PROFILE, iter_cases

SHARED = Path(__file__).resolve().parents[2] / "shared" / "vectors"
LONG_FILES = [SHARED / "kernel-slots" / "long.jsonl", SHARED / "kernel-slots-6.12" / "long.jsonl"]


def _best(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def long_case(case: dict) -> tuple[int, object]:  # type: ignore[type-arg]
    prof = get_profile(case.get("profile") or LEGACY_PROFILE)
    dev = DeviceParams(case["device"]["min_align_mask"], case["device"]["seg_boundary_mask"])
    ops = []
    for op in case["ops"]:
        if op["op"] == "map":
            alloc = op.get("alloc_size") if prof.alloc_size_arg else None
            ops.append((op["id"], op["orig_addr"], op["mapping_size"], op["alloc_align_mask"], op["cpu"], alloc))
        else:
            ops.append((op["id"],))

    def run() -> None:
        pools = [IoTlbPool(p["start"], p["nslabs"], p["nareas"]) for p in case["pools"]]
        mem = IoTlbMem(pools, prof, dynamic=True)
        live: dict[int, SlotMapping] = {}
        tbl_map = mem.tbl_map_single
        release = mem.release_slots
        for op in ops:
            if len(op) == 1:
                m = live.pop(op[0])
                release(dev, m.tlb_addr, m.pool)
            else:
                r = tbl_map(dev, op[1], op[2], op[3], cpu=op[4], alloc_size=op[5])
                if type(r) is SlotMapping:
                    live[op[0]] = r

    return len(ops), run


def fragmented(nslabs: int, nareas: int, occupancy: float, max_hole: int, attempts: int, seed: int):  # type: ignore[no-untyped-def]
    """A pool filled to ``occupancy`` with free holes of 1..max_hole slots, then map attempts
    of random sizes up to 64 KiB, each success unmapped at once."""
    rng = random.Random(seed)
    mean_hole = (1 + max_hole) / 2
    mean_run = mean_hole * occupancy / (1 - occupancy)
    layout: list[tuple[int, int]] = []  # (start, length) of allocated runs
    for seg in range(0, nslabs, 128):
        i = seg
        while i < seg + 128:
            run = min(seg + 128 - i, max(1, int(rng.expovariate(1 / mean_run)) + 1))
            layout.append((i, run))
            i += run + rng.randint(1, max_hole)
    requests = [
        (rng.randrange(1 << 30) << 12 | rng.choice((0, 0, 0x200, 0x800)), rng.randint(1, 65536), rng.randrange(nareas))
        for _ in range(attempts)
    ]
    dev = DeviceParams(0, 0xFFFFFFFF)
    prof = get_profile("v6.12")

    def build() -> IoTlbMem:
        pool = IoTlbPool(0x4000_0000, nslabs, nareas)
        for start, run in layout:
            take_slots(pool, start // pool.area_nslabs, start, run, run << 11)
        for k, area in enumerate(pool.areas):
            area.index = rng_idx[k]
        mem = IoTlbMem([pool], prof)
        mem.total_used = pool.used
        return mem

    rng_idx = [rng.randrange(nslabs // nareas) for _ in range(nareas)]

    def run() -> None:
        mem = build_cache.pop() if build_cache else build()
        tbl_map = mem.tbl_map_single
        release = mem.release_slots
        for orig, size, cpu in requests:
            r = tbl_map(dev, orig, size, 0, cpu=cpu)
            if type(r) is SlotMapping:
                release(dev, r.tlb_addr, r.pool)

    build_cache: list[IoTlbMem] = []
    probe = build()
    used = probe.pool_used = sum(p.used for p in probe.pools)  # type: ignore[attr-defined]
    ok = 0
    for orig, size, cpu in requests:
        r = probe.tbl_map_single(dev, orig, size, 0, cpu=cpu)
        if type(r) is SlotMapping:
            ok += 1
            probe.release_slots(dev, r.tlb_addr, r.pool)
    calls = attempts + ok

    def timed() -> None:
        build_cache.append(build())
        t0 = time.perf_counter()
        run()
        timed.elapsed = time.perf_counter() - t0  # type: ignore[attr-defined]

    return calls, timed, used / nslabs, ok / attempts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object name -> ops/s")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    results: dict[str, float] = {}
    notes: dict[str, str] = {}
    for f in LONG_FILES:
        if not f.exists():
            print(f"skipping {f}: not found (needs ../shared beside the repo)", file=sys.stderr)
            continue
        for _, case in iter_cases([f]):
            nops, run = long_case(case)
            results[case["name"]] = nops / _best(run, args.repeat)  # type: ignore[arg-type]
    for name, (nslabs, nareas, occ, hole) in {
        "frag-holes-1-8": (32768, 2, 0.96, 8),
        "frag-single-slot": (32768, 2, 0.96, 1),
        "frag-99pct-64mib": (32768, 2, 0.99, 8),
        "frag-99pct-1gib": (524288, 2, 0.99, 8),
    }.items():
        calls, timed, real_occ, success = fragmented(nslabs, nareas, occ, hole, 20000, seed=7)
        best = float("inf")
        for _ in range(args.repeat):
            timed()
            best = min(best, timed.elapsed)  # type: ignore[attr-defined]
        results[name] = calls / best
        notes[name] = f"occupancy {real_occ:.3f}, maps succeeded {success:.1%}"
    if args.json:
        print(json.dumps({k: round(v) for k, v in results.items()}))
    else:
        for k, v in results.items():
            print(f"{k:55s} {v / 1e6:8.3f} M ops/s  {notes.get(k, '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
