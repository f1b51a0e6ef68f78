"""Trace pipeline speed: parsing, pairing and replay of a real capture (issue 5).

A benchmark, not a test: run it by hand.

    python benchmarks/traces.py                          # the test-data excerpt of capture e
    python benchmarks/traces.py ../shared/traces/real/c_2cpu_small_overflow.trace.txt.gz
    python benchmarks/traces.py TRACE --json

Stages, each timed on its own (best of ``--repeat``, CPU clock, which another busy process on this shared machine disturbs less than wall time):

* ``parse``: :func:`swiotlb.traces.events.parse_event` over every line, the text already in memory;
* ``read+pair``: :func:`swiotlb.traces.canonical.from_text` (gunzip, parse, pair);
* ``replay``: :func:`swiotlb.traces.fidelity.replay_fidelity` (both replays) against the kernel;
* ``parquet``: writing and reading the canonical trace.

Rates are lines per second for text stages and allocation+release operations per second
for the replay.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "tests" / "data" / "traces" / "e_1cpu_mem512_to_nvme_rr7k5.trace.txt.gz"


def best(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace", nargs="?", default=str(DEFAULT))
    ap.add_argument("--meta", default=None, help="NAME.meta.json (default: the one beside the trace)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from swiotlb.lab.replay import sibling_meta
    from swiotlb.traces.canonical import from_text
    from swiotlb.traces.events import parse_event
    from swiotlb.traces.fidelity import replay_fidelity
    from swiotlb.traces.meta import load_meta
    from swiotlb.traces.reader import open_text
    from swiotlb.traces.store import read_trace, write_trace

    with open_text(args.trace) as fh:
        lines = fh.readlines()
    meta_path = args.meta or sibling_meta(args.trace)
    if meta_path is None:
        sys.exit(f"{args.trace}: no NAME.meta.json beside it; give --meta")
    meta = load_meta(meta_path)
    assert meta.pool is not None

    def parse() -> None:
        for n, line in enumerate(lines, 1):
            parse_event(line, n)

    trace = from_text(args.trace)
    ops = 2 * sum(1 for i in range(len(trace)) if trace.columns["bounced"][i])
    out: dict[str, float] = {}
    out["parse_lines_per_s"] = len(lines) / best(parse, args.repeat)
    out["read_pair_lines_per_s"] = len(lines) / best(lambda: from_text(args.trace), args.repeat)
    out["replay_ops_per_s"] = ops / best(lambda: replay_fidelity(trace, meta.pool, meta=meta), args.repeat) * 2
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.parquet"
        out["parquet_write_rows_per_s"] = len(trace) / best(lambda: write_trace(trace, path), args.repeat)
        out["parquet_read_rows_per_s"] = len(trace) / best(lambda: read_trace(path), args.repeat)
    if args.json:
        print(json.dumps({"trace": args.trace, "lines": len(lines), "rows": len(trace), **out}, indent=1))
        return
    print(f"{args.trace}: {len(lines):,} lines, {len(trace):,} mapping rows")
    for key, value in out.items():
        print(f"  {key:28} {value:>12,.0f}")


if __name__ == "__main__":
    main()
