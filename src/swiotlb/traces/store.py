"""Canonical traces on disk: Parquet (zstd, the trace-level part in the file's key-value
metadata) or JSONL (a header object, then one row per line) for small ones.

``load_trace`` takes either, or a raw text trace (parsed and paired on the fly), so every
command that reads a trace accepts all three.
"""

from __future__ import annotations

import json
from array import array
from pathlib import Path
from typing import Any

from swiotlb.traces.canonical import (
    BOOL_COLUMNS,
    CODE_COLUMNS,
    COLUMNS,
    CanonicalTrace,
    PairingStats,
    Workload,
    from_text,
)

META_KEY = "swiotlb_trace"
FORMAT = "swiotlb-canonical-trace"


class TraceStoreError(ValueError):
    """A stored trace that is not a canonical trace (names the file and what is wrong)."""


def _frame(trace: CanonicalTrace) -> Any:
    import polars as pl

    data: dict[str, Any] = {}
    for c in COLUMNS:
        col = trace.columns[c]
        if c in CODE_COLUMNS:
            names = trace.names[c]
            data[c] = pl.Series(c, [names[v] for v in col], dtype=pl.Categorical)
        elif c in BOOL_COLUMNS:
            data[c] = pl.Series(c, list(col), dtype=pl.Int8).cast(pl.Boolean)
        else:
            data[c] = pl.Series(c, col.tolist(), dtype=pl.Int64)
    return pl.DataFrame(data)


def write_trace(trace: CanonicalTrace, path: str | Path) -> Path:
    """Write ``.parquet`` or ``.jsonl`` (chosen by the suffix)."""
    p = Path(path)
    meta = trace.meta()
    if p.suffix == ".jsonl":
        with p.open("w") as fh:
            fh.write(json.dumps({META_KEY: meta}, sort_keys=True) + "\n")
            for row in trace.rows():
                fh.write(json.dumps(row, sort_keys=True) + "\n")
        return p
    if p.suffix != ".parquet":
        raise TraceStoreError(f"{p}: the output must end in .parquet or .jsonl")
    _frame(trace).write_parquet(p, compression="zstd", metadata={META_KEY: json.dumps(meta, sort_keys=True)})
    return p


def _assemble(meta: dict[str, Any], columns: dict[str, list[Any]], where: str) -> CanonicalTrace:
    """Rebuild a trace from decoded columns (strings for code columns, ints elsewhere)."""
    if meta.get("format") != FORMAT:
        raise TraceStoreError(f"{where}: not a canonical trace (format {meta.get('format')!r})")
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        raise TraceStoreError(f"{where}: missing columns {', '.join(missing)}")
    cols: dict[str, array[int]] = {}
    names: dict[str, list[str]] = {}
    try:
        for c in COLUMNS:
            values = columns[c]
            if c in CODE_COLUMNS:
                table: dict[str, int] = {}
                cols[c] = array("q", [table.setdefault(str(v), len(table)) for v in values])
                names[c] = list(table)
            else:
                cols[c] = array("q", [int(v) for v in values])
    except (TypeError, ValueError, OverflowError) as exc:
        raise TraceStoreError(f"{where}: bad value in column {c!r} ({exc})") from None
    try:
        workloads = [Workload(**w) for w in meta.get("workloads", [])]
        pairing = PairingStats(**meta.get("pairing", {}))
    except TypeError as exc:
        raise TraceStoreError(f"{where}: bad trace header ({exc})") from None
    return CanonicalTrace(
        cols, names, workloads, dict(meta.get("info", {})), pairing,
        str(meta.get("source", "")), list(meta.get("devices", [])),
    )


def read_trace(path: str | Path) -> CanonicalTrace:
    """Read a canonical trace written by :func:`write_trace`."""
    p = Path(path)
    if p.suffix == ".jsonl":
        with p.open() as fh:
            try:
                head = json.loads(fh.readline())
                meta = head[META_KEY]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise TraceStoreError(f"{p}:1: not a canonical trace header") from None
            columns: dict[str, list[Any]] = {c: [] for c in COLUMNS}
            for n, line in enumerate(fh, 2):
                try:
                    row = json.loads(line)
                    for c in COLUMNS:
                        columns[c].append(row[c])
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise TraceStoreError(f"{p}:{n}: not a canonical trace row ({exc})") from None
        return _assemble(meta, columns, str(p))
    import polars as pl

    try:
        kv = pl.read_parquet_metadata(p)
        meta = json.loads(kv[META_KEY])
        frame = pl.read_parquet(p)
    except Exception as exc:  # polars raises several types for a file that is not Parquet
        raise TraceStoreError(f"{p}: not a canonical trace Parquet file ({exc})") from None
    columns = {
        c: frame[c].cast(pl.String if c in CODE_COLUMNS else pl.Int64).to_list()
        for c in COLUMNS if c in frame.columns
    }
    return _assemble(meta, columns, str(p))


def load_trace(path: str | Path, *, skip_bad: bool = False) -> CanonicalTrace:
    """A canonical trace from ``.parquet``/``.jsonl``, or parsed from a text trace (gzip or not)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    if p.suffix in (".parquet", ".jsonl"):
        return read_trace(p)
    return from_text(p, skip_bad=skip_bad)
