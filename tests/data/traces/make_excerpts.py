#!/usr/bin/env python3
"""Regenerate the real-trace excerpts in ``tests/data/traces`` from ``../shared/traces/real``.

Each excerpt is a PREFIX of one real capture: its first lines, byte for byte, up to and
including one ``MARK end NAME`` marker line. Prefixes (never slices from the middle) because a
replay must start from the kernel's initial pool state: the allocator's next-fit index carries
over from one workload to the next.

For every excerpt two files are written:

* ``NAME.trace.txt.gz``: the prefix, gzip level 9 with no file name and mtime 0 (as ``gzip -9
  -n``; the bytes come from Python's zlib, so they are reproducible with this script).
* ``NAME.meta.json``: the capture's ``swiotlb``, ``guest``, ``kernel`` and ``tracing`` sections
  unchanged (they describe the whole capture: the header counts, per-CPU ring-buffer stats and
  dmesg lines are the full run's), ``workloads`` limited to the workloads the prefix holds, and
  an ``excerpt`` section saying where the prefix comes from (source file, last line, marker,
  sha256 of the excerpt text and of the full capture text).

Usage: python tests/data/traces/make_excerpts.py [--shared PATH] [--check]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_SHARED = HERE.parents[3] / "shared" / "traces" / "real"

# (excerpt name, capture, last workload kept: the prefix ends at its "MARK end" line)
EXCERPTS = (
    # 2 vCPUs, 2 MiB pool (2 areas) that overflows: 149 failed dma_map_page (virtio, 1 MiB
    # workloads), cross-CPU pairing, probe and every virtio workload up to vd_sw1m_qd4. (The
    # orphan bounced lines of failed dma_map_sg only start in nvme_sr1m_qd4, whose prefix is
    # 2.4 MB: too big beside the 1-CPU excerpt.)
    ("c_2cpu_small_overflow_to_vd_sw1m", "c_2cpu_small_overflow", "vd_sw1m_qd4"),
    # 1 vCPU, 64 MiB pool: every virtio workload and every nvme one up to nvme_rr7k5_unal
    # (min_align_mask 0xfff; single and scatter-gather maps; the 512-byte-offset buffers of
    # nvme_rr7k5_unal are what lets a replay infer the mask from the trace alone)
    ("e_1cpu_mem512_to_nvme_rr7k5", "e_1cpu_mem512", "nvme_rr7k5_unal"),
)
META_SECTIONS = ("swiotlb", "guest", "kernel", "tracing")


def prefix_text(trace: Path, last_workload: str) -> tuple[bytes, int]:
    """The capture's text up to and including ``MARK end LAST``, and its line count."""
    end = f"tracing_mark_write: MARK end {last_workload}".encode()
    out = io.BytesIO()
    with gzip.open(trace, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            out.write(line)
            if line.rstrip(b"\n").endswith(end):
                return out.getvalue(), lineno
    raise SystemExit(f"{trace}: no line ending in {end.decode()!r}")


def gzip_bytes(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=buf, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def reduced_meta(meta: dict[str, Any], name: str, text: bytes, lines: int, last: str) -> dict[str, Any]:
    names = []
    for w in meta["workloads"]:
        names.append(w["name"])
        if w["name"] == last:
            break
    else:
        raise SystemExit(f"{meta['name']}: workload {last!r} not in the meta")
    out: dict[str, Any] = {
        "name": name,
        "description": f"prefix of {meta['name']} up to and including 'MARK end {last}' "
                       f"({len(names)} workloads); {meta['description']}",
        "trace_file": f"{name}.trace.txt.gz",
        "excerpt": {
            "source_capture": meta["name"],
            "source_trace_file": meta["trace_file"],
            "source_trace_text_sha256": meta["trace_text_sha256"],
            "source_trace_text_lines": meta["trace_text_lines"],
            "last_workload": last,
            "text_lines": lines,
            "text_bytes": len(text),
            "text_sha256": hashlib.sha256(text).hexdigest(),
            "note": "the first text_lines lines of the capture, unmodified; swiotlb, guest, kernel "
                    "and tracing are copied from the capture's meta and describe the whole run "
                    "(header counts, per-CPU ring-buffer stats, all dmesg lines)",
        },
    }
    for key in META_SECTIONS:
        out[key] = meta[key]
    out["workloads"] = [w for w in meta["workloads"] if w["name"] in names]
    return out


def build(shared: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for name, capture, last in EXCERPTS:
        meta = json.loads((shared / f"{capture}.meta.json").read_text())
        text, lines = prefix_text(shared / f"{capture}.trace.txt.gz", last)
        files[f"{name}.trace.txt.gz"] = gzip_bytes(text)
        reduced = reduced_meta(meta, name, text, lines, last)
        files[f"{name}.meta.json"] = (json.dumps(reduced, indent=1) + "\n").encode()
    return files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="the real captures' directory")
    ap.add_argument("--check", action="store_true", help="verify the files on disk instead of writing")
    args = ap.parse_args(argv)
    files = build(args.shared)
    bad = 0
    for fname, data in files.items():
        path = HERE / fname
        if args.check:
            if not path.exists() or path.read_bytes() != data:
                print(f"differs: {path}")
                bad += 1
        else:
            path.write_bytes(data)
            print(f"{path.relative_to(HERE.parents[2])}: {len(data):,} bytes")
    if args.check:
        print("ok" if not bad else f"{bad} file(s) differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
