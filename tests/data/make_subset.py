#!/usr/bin/env python3
"""Regenerate the golden-vector subset in ``tests/data/vectors`` from ``../shared``.

The full kernel-derived vector sets live beside the repository in
``../shared/vectors/kernel-slots`` (Linux v6.7 merge window, replayed as profile v6.6) and
``../shared/vectors/kernel-slots-6.12`` (Linux 6.12.117). A clone without ``../shared`` still
replays this subset. Selection rule, per set and per family file (deterministic):

1. ``long.jsonl`` is skipped (every case is about 2 MB).
2. Take the shortest case (fewest bytes on its line; ties go to the earlier line), and the
   second shortest as well when its line is under 64 KiB.
3. For each property the set requires of that family (``REQUIRED`` below), if no chosen case
   has it, add the shortest case that does.

Chosen lines are copied byte for byte, in their original order; cases are never edited or
truncated, so every expected value is still the kernel's. ``--check`` verifies the files on
disk instead of writing them.

Usage: python tests/data/make_subset.py [--shared PATH] [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
DEFAULT_SHARED = HERE.parents[2] / "shared" / "vectors"
OUT = HERE / "vectors"
SETS = ("kernel-slots", "kernel-slots-6.12")
SKIP = {"long.jsonl"}
SECOND_LIMIT = 64 * 1024

Case = dict[str, Any]


def _seg_0xffff(case: Case) -> bool:
    return case["device"]["seg_boundary_mask"] == 0xFFFF


def _wrap_scenario(case: Case) -> bool:
    return "-wrap-" in case["name"]


def _orig0_scenario(case: Case) -> bool:
    return "-orig0-" in case["name"]


def _pad_slots(case: Case) -> bool:
    return any(op.get("expect", {}).get("pad_slots", 0) for op in case["ops"])


def _several_pools(case: Case) -> bool:
    return len(case["pools"]) > 1


def _mixed_area_counts(case: Case) -> bool:
    return len({p["nareas"] for p in case["pools"]}) > 1


REQUIRED: dict[tuple[str, str], list[tuple[str, Callable[[Case], bool]]]] = {
    ("kernel-slots", "boundary.jsonl"): [("seg_boundary_mask 0xffff", _seg_0xffff)],
    ("kernel-slots", "edge.jsonl"): [
        ("wrap scenario", _wrap_scenario),
        ("orig0 scenario", _orig0_scenario),  # 6.3-6.8: no alignment at all for orig_addr 0
    ],
    ("kernel-slots", "multipool.jsonl"): [("several pools", _several_pools)],
    ("kernel-slots-6.12", "boundary.jsonl"): [("seg_boundary_mask 0xffff", _seg_0xffff)],
    ("kernel-slots-6.12", "edge.jsonl"): [
        ("wrap scenario", _wrap_scenario),
        ("orig0 scenario", _orig0_scenario),
    ],
    ("kernel-slots-6.12", "align.jsonl"): [("pad_slots > 0", _pad_slots)],
    ("kernel-slots-6.12", "multipool.jsonl"): [
        ("several pools", _several_pools),
        ("pools with different area counts", _mixed_area_counts),
    ],
}


def select(set_name: str, path: Path) -> tuple[list[bytes], list[str]]:
    """The chosen lines of one family file (in file order) and why each was chosen."""
    lines = [line for line in path.read_bytes().splitlines(keepends=True) if line.strip()]
    order = sorted(range(len(lines)), key=lambda i: (len(lines[i]), i))
    chosen = {order[0]: "shortest"}
    if len(order) > 1 and len(lines[order[1]]) < SECOND_LIMIT:
        chosen[order[1]] = "second shortest"
    for label, pred in REQUIRED.get((set_name, path.name), []):
        if any(pred(json.loads(lines[i])) for i in chosen):
            continue
        pick = next((i for i in order if pred(json.loads(lines[i]))), None)
        if pick is None:
            raise SystemExit(f"{path}: no case has the required property {label!r}")
        chosen[pick] = f"shortest with {label}"
    keep = sorted(chosen)
    why = [f"{json.loads(lines[i])['name']} ({chosen[i]})" for i in keep]
    return [lines[i] for i in keep], why


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="the shared vectors directory")
    ap.add_argument("--check", action="store_true", help="compare with the files on disk, write nothing")
    args = ap.parse_args(argv)
    stale = []
    total = 0
    for set_name in SETS:
        src_dir = args.shared / set_name
        if not src_dir.is_dir():
            raise SystemExit(f"{src_dir}: not found (pass --shared)")
        for path in sorted(src_dir.glob("*.jsonl")):
            if path.name in SKIP:
                continue
            lines, why = select(set_name, path)
            data = b"".join(lines)
            total += len(data)
            dest = OUT / set_name / path.name
            print(f"{set_name}/{path.name}: {len(data)} bytes: {', '.join(why)}")
            if args.check:
                if not dest.exists() or dest.read_bytes() != data:
                    stale.append(str(dest))
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data)
    print(f"total {total} bytes")
    if stale:
        print("out of date: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
