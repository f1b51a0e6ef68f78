"""``swiotlb replay``: a real trace through the exact allocator (static) or any design (simulated).

With ``static`` the capture's own pool is rebuilt and the kernel's recorded bounce addresses
judge every decision (:mod:`swiotlb.traces.fidelity`). Other policies run the trace through
the simulator (:mod:`swiotlb.traces.workload`) and report what they would have held and failed.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Sequence

from swiotlb.traces.canonical import CanonicalTrace
from swiotlb.traces.fidelity import FidelityResult, infer_min_align_masks, replay_fidelity
from swiotlb.traces.meta import CaptureMeta, MetaError, PoolLayout, load_meta, parse_pool_option
from swiotlb.traces.reader import open_text
from swiotlb.traces.workload import simulate_trace


def sibling_meta(trace_path: str | Path) -> Path | None:
    """``NAME.meta.json`` beside ``NAME.trace.txt[.gz]`` or ``NAME.parquet``, if there is one."""
    p = Path(trace_path)
    name = p.name
    for suffix in (".trace.txt.gz", ".trace.txt", ".txt.gz", ".txt", ".parquet", ".jsonl", ".gz"):
        if name.endswith(suffix):
            candidate = p.with_name(name[: -len(suffix)] + ".meta.json")
            if candidate.exists():
                return candidate
    return None


def parse_masks(values: Sequence[str]) -> dict[str, int]:
    """``DEVICE=MASK`` options (mask in hex or decimal)."""
    out: dict[str, int] = {}
    for v in values:
        dev, sep, mask = v.partition("=")
        try:
            if not sep or not dev:
                raise ValueError
            out[dev] = int(mask, 0)
        except ValueError:
            raise MetaError(f"--mask {v!r}: expected DEVICE=MASK, e.g. 0000:00:03.0=0xfff") from None
    return out


def choose_pool(meta: CaptureMeta | None, pool_option: str | None) -> PoolLayout:
    """The pool to rebuild: ``--pool`` first, then the metadata; an error says what is missing."""
    if pool_option:
        return parse_pool_option(pool_option)
    if meta is not None and meta.pool is not None:
        return meta.pool
    where = f" ({meta.path} has no pool range)" if meta is not None else ""
    raise MetaError(
        "the kernel's pool is unknown" + where + ": give --meta NAME.meta.json (from the capture "
        "script) or --pool START:SIZE[:AREAS], e.g. --pool 0x6fa00000:64M:1 (see docs/capturing.md)"
    )


def context_lines(path: str, line: int, before: int = 4, after: int = 4) -> list[tuple[int, str]]:
    """Lines ``line-before .. line+after`` of a text trace (empty for a stored canonical trace)."""
    p = Path(path)
    if not p.exists() or p.suffix in (".parquet", ".jsonl"):
        return []
    lo = max(1, line - before)
    with open_text(p) as fh:
        return [(n, text.rstrip("\n")) for n, text in enumerate(itertools.islice(fh, lo - 1, line + after), lo)]


def fidelity(
    trace: CanonicalTrace, meta: CaptureMeta | None, pool_option: str | None, masks: dict[str, int]
) -> FidelityResult:
    return replay_fidelity(trace, choose_pool(meta, pool_option), meta=meta, masks=masks)


def policy_record(
    trace: CanonicalTrace, policy: str, meta: CaptureMeta | None, masks: dict[str, int]
) -> dict[str, Any]:
    """The simulator's record for ``policy`` on this trace, with the masks the trace implies."""
    full = infer_min_align_masks(trace)
    full.update(masks)
    return simulate_trace(trace, policy, meta=meta, masks=full)


def load_meta_option(trace_path: str, meta_path: str | None) -> CaptureMeta | None:
    path = meta_path or sibling_meta(trace_path)
    return load_meta(path) if path is not None else None


def render_fidelity(result: FidelityResult, console: Any) -> None:
    """The fidelity summary, the per-workload hiwater table and the first mismatch in context."""
    from rich.table import Table

    j = result.to_json()
    checked = j["address_checked"]

    def pct(n: int) -> str:
        return f"{n:,}/{checked:,} ({100 * n / checked:.3f}%)" if checked else "-"

    pool = result.pool
    console.print(
        f"[bold]{result.source}[/bold]: pool {pool.start:#x}, {pool.nslabs} slots, {pool.nareas} "
        f"area(s) ({pool.source}); profile {result.profile}; min_align_mask "
        + ", ".join(f"{d}={m:#x}" for d, m in sorted(result.masks.items()))
    )
    if result.lost_events:
        console.print(
            f"[yellow]the trace lost {result.lost_events:,} events: only the decisions whose lines "
            "survived are checked, and hiwater comparisons may not hold[/yellow]"
        )
    table = Table(title="static policy against the kernel", show_header=True)
    table.add_column("check")
    table.add_column("result", justify="right")
    table.add_row("maps (page maps + sg entries)", f"{j['maps']:,}")
    table.add_row("bounced maps", f"{j['bounced_maps']:,}")
    table.add_row("addresses, decision by decision", pct(j["address_matches"]))
    table.add_row("addresses, straight replay", pct(j["address_matches_straight"]))
    if j["kernel_failed_maps"]:
        table.add_row("failed maps reproduced", f"{j['failed_maps_reproduced']}/{j['kernel_failed_maps']} "
                      f"(straight {j['failed_maps_reproduced_straight']})")
    if j["orphan_entries"]:
        table.add_row("failed sg attempts (orphan entries)", f"{j['orphan_attempts']} ({j['orphan_entries']})")
    table.add_row("workload hiwater = debugfs", f"{j['workload_hiwater_matches']}/{j['workload_hiwater_checked']}")
    table.add_row("hiwater slots (model / kernel)", f"{j['hiwater_slots']} / {j['kernel_hiwater_slots']}")
    if j["buffer_full_lines"]:
        table.add_row("'buffer is full' lines matched", f"{j['buffer_full_lines_matched']}/{j['buffer_full_lines']}")
    table.add_row("failures (full / too large)", f"{j['failures']['full']} / {j['failures']['too_large']}")
    console.print(table)
    bad = [w for w in j["workloads"] if w["match"] is False]
    if bad:
        t = Table(title="workloads whose hiwater differs")
        for c in ("workload", "model", "kernel"):
            t.add_column(c)
        for w in bad:
            t.add_row(w["name"], str(w["hiwater_slots"]), str(w["kernel_hiwater_slots"]))
        console.print(t)
    first = result.decision.first
    if first is not None:
        console.print(f"[bold]first difference[/bold]: {first.describe(result.pool)}")
        after = min(max(5, first.map_line - first.line + 1), 12)  # down to the map line if near
        for n, text in context_lines(result.source, first.line, 3, after):
            mark = ">>" if n in (first.line, first.map_line) else "  "
            console.print(f"{mark} {n:>8} {text}", markup=False, highlight=False)
        console.print("(docs/fidelity.md explains the kinds of difference a multi-CPU trace shows)")


def render_policies(records: Sequence[dict[str, Any]], console: Any) -> None:
    from rich.table import Table

    from swiotlb.lab.compare import format_bytes

    t = Table(title="the same trace under each design (simulated)")
    for c in ("policy", "maps", "failures", "peak footprint", "avg footprint", "peak in flight",
              "decrypts", "pools +/-"):
        t.add_column(c, justify="right")
    for r in records:
        t.add_row(
            r["policy"], f"{r['maps']:,}", f"{sum(r['failures'].values()):,}",
            format_bytes(r["peak_footprint_bytes"]), format_bytes(r["avg_footprint_bytes"]),
            format_bytes(r["peak_inflight_bytes"]), str(r["decrypt_ops"]),
            f"{r['pools_created']}/{r['pools_freed']}",
        )
    console.print(t)
