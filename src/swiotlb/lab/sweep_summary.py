"""``swiotlb sweep summarize DIR``: a finished (or partly finished) sweep, across seeds.

Per scenario, policy, pool size and knob setting: the mean of each main metric across seeds
with a Student-t confidence interval (n - 1 degrees of freedom, the sample standard deviation),
and per scenario, policy and knob setting the smallest pool size with zero failures in every
seed. Pool sizes are ordered by the pool the kernel actually made (``boot_pool_slots``): the
``swiotlb=`` count is not always the pool size (on a CoCo x86 guest ``swiotlb=32768`` equals
the built-in default, so the 6 % rule still applies, as in the kernel).
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from swiotlb.lab.sweep import MANIFEST, SweepError, load_results, pool_label

METRICS: tuple[tuple[str, str], ...] = (
    ("failures", "failures"),
    ("avg_footprint_bytes", "avg fp"),
    ("peak_footprint_bytes", "peak fp"),
    ("map_ns_p50", "map ns p50"),
    ("map_ns_p99", "map ns p99"),
    ("decrypt_ops", "decrypt"),
)
"""The summarized metrics (a column of the cells' rows, a heading)."""

SIZE_METRICS = frozenset({"avg_footprint_bytes", "peak_footprint_bytes"})


def interval(values: Sequence[float], confidence: float) -> dict[str, float | int | None]:
    """``n``, ``mean``, ``sd`` (n - 1), the t-interval ``ci_low``/``ci_high`` (None for n < 2),
    ``min`` and ``max`` of ``values``."""
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {"n": n, "mean": mean, "sd": None, "ci_low": None, "ci_high": None,
                "min": min(values), "max": max(values)}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half,
            "min": min(values), "max": max(values)}


def _manifest_cells(out: Path) -> list[dict[str, Any]]:
    path = out / MANIFEST
    if not path.exists():
        raise SweepError(str(out), "", f"not a sweep directory: {path} is missing")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT id, seq, params, status FROM cells ORDER BY seq").fetchall()
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    finally:
        db.close()
    cells = []
    for cid, seq, params, status in rows:
        p = json.loads(params)
        cells.append({"id": cid, "seq": seq, "status": status, "meta": meta, **p})
    return cells


def summarize(out: str | Path, confidence: float = 0.95) -> dict[str, Any]:
    """The summary of the sweep under ``out`` as a JSON-ready dict (see the module docstring)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence}: must be in (0, 1)")
    out = Path(out)
    cells = _manifest_cells(out)
    meta = cells[0]["meta"] if cells else {}
    frame = load_results(out)
    rows = {r["cell_id"]: r for r in frame.to_dicts()} if frame.height else {}
    counts: dict[str, int] = {}
    for c in cells:
        counts[c["status"]] = counts.get(c["status"], 0) + 1

    # groups: (scenario, policy, pool_slots, knobs) in the sweep's order
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for c in cells:
        knobs = json.dumps(c["knobs"], sort_keys=True)
        key = (c["scenario"], c["policy"], c["pool_slots"], knobs)
        g = groups.setdefault(key, {"cells": 0, "rows": []})
        g["cells"] += 1
        if c["id"] in rows:
            g["rows"].append(rows[c["id"]])

    summaries: list[dict[str, Any]] = []
    for (scenario, policy, pool_slots, knobs), g in groups.items():
        done = g["rows"]
        live = [r for r in done if r.get("skipped") is None]
        entry: dict[str, Any] = {
            "scenario": scenario, "policy": policy, "pool": pool_label(pool_slots), "pool_slots": pool_slots,
            "boot_pool_slots": max((r["boot_pool_slots"] for r in live if r.get("boot_pool_slots") is not None),
                                   default=None),
            "knobs": json.loads(knobs), "cells": g["cells"], "finished": len(done),
            "seeds": sorted(r["seed"] for r in live),
            "skipped": next((r["skipped"] for r in done if r.get("skipped") is not None), None),
            "metrics": {},
        }
        for metric, _ in METRICS:
            values = [float(r[metric]) for r in live if r.get(metric) is not None]
            entry["metrics"][metric] = interval(values, confidence) if values else None
        summaries.append(entry)

    # the smallest pool with zero failures in every seed, per (scenario, policy, knobs)
    smallest: list[dict[str, Any]] = []
    by: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for s in summaries:
        by.setdefault((s["scenario"], s["policy"], json.dumps(s["knobs"], sort_keys=True)), []).append(s)
    for (scenario, policy, knobs), entries in by.items():
        ran = [e for e in entries if e["metrics"]["failures"] is not None]
        ran.sort(key=lambda e: (e["boot_pool_slots"] if e["boot_pool_slots"] is not None else -1,
                                e["pool_slots"] if e["pool_slots"] is not None else -1))
        best = next((e for e in ran if e["finished"] == e["cells"] and e["metrics"]["failures"]["max"] == 0), None)
        smallest.append({
            "scenario": scenario, "policy": policy, "knobs": json.loads(knobs),
            "pool": best["pool"] if best else "none",
            "pool_slots": best["pool_slots"] if best else None,
            "boot_pool_slots": best["boot_pool_slots"] if best else None,
            "tried": [{"pool": e["pool"], "boot_pool_slots": e["boot_pool_slots"],
                       "max_failures": int(e["metrics"]["failures"]["max"]),
                       "complete": e["finished"] == e["cells"]} for e in ran],
            "complete": all(e["finished"] == e["cells"] for e in entries),
            "skipped": next((e["skipped"] for e in entries if e["skipped"] is not None and not ran), None),
        })
    return {
        "sweep": meta.get("spec_name"), "source": meta.get("spec_source"), "spec_hash": meta.get("spec_hash"),
        "confidence": confidence,
        "cells": {"total": len(cells), "done": counts.get("done", 0), "pending": counts.get("pending", 0),
                  "error": counts.get("error", 0)},
        "groups": summaries,
        "smallest_zero_failure_pool": smallest,
    }


# -- the terminal tables -----------------------------------------------------------------------
def _number(metric: str, value: float) -> str:
    if metric in SIZE_METRICS:
        from swiotlb.lab.compare import format_bytes

        return format_bytes(int(round(value)))
    return f"{value:,.0f}" if abs(value) >= 100 or value == int(value) else f"{value:,.2f}"


def _cell(metric: str, stats: dict[str, Any] | None) -> str:
    if stats is None:
        return "-"
    mean = _number(metric, stats["mean"])
    if stats["ci_low"] is None:
        return mean
    half = (stats["ci_high"] - stats["ci_low"]) / 2
    return mean if half == 0 else f"{mean} ± {_number(metric, half)}"


def _knobs_text(knobs: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in knobs.items()) or "-"


def _pool_text(pool: str, boot: int | None, slots: int | None) -> str:
    if boot is None or boot == slots:
        return pool
    return f"{pool} (= {pool_label(boot)})"


def tables(summary: dict[str, Any]) -> list[Any]:
    """Rich tables: the metrics per group, then the smallest zero-failure pools."""
    from rich.table import Table

    c = summary["cells"]
    conf = summary["confidence"]
    metrics = Table(title=f"sweep {summary['sweep']}: mean ± {conf:.0%} t-interval across seeds "
                          f"({c['done']}/{c['total']} cells done"
                          + (f", {c['error']} failed" if c["error"] else "") + ")",
                    title_justify="left")
    for heading in ("scenario", "policy", "pool", "knobs", "seeds"):
        metrics.add_column(heading)
    for _, heading in METRICS:
        metrics.add_column(heading, justify="right")
    for g in summary["groups"]:
        pool = _pool_text(g["pool"], g["boot_pool_slots"], g["pool_slots"])
        seeds = f"{len(g['seeds'])}" + ("" if g["finished"] == g["cells"] else f"/{g['cells']}")
        if g["skipped"] is not None and not g["seeds"]:
            metrics.add_row(g["scenario"], g["policy"], pool, _knobs_text(g["knobs"]), "0",
                            f"[dim]skipped: {g['skipped']}[/dim]", *[""] * (len(METRICS) - 1))
            continue
        metrics.add_row(g["scenario"], g["policy"], pool, _knobs_text(g["knobs"]), seeds,
                        *[_cell(m, g["metrics"][m]) for m, _ in METRICS])
    smallest = Table(title="smallest pool with zero failures in every seed", title_justify="left")
    for heading in ("scenario", "policy", "knobs", "pool", "tried (max failures over seeds)"):
        smallest.add_column(heading)
    for s in summary["smallest_zero_failure_pool"]:
        if s["skipped"] is not None:
            smallest.add_row(s["scenario"], s["policy"], _knobs_text(s["knobs"]), "-", f"[dim]skipped: {s['skipped']}[/dim]")
            continue
        pool = "none" if s["pool_slots"] is None and s["pool"] == "none" else _pool_text(
            s["pool"], s["boot_pool_slots"], s["pool_slots"])
        tried = ", ".join(f"{t['pool']}: {t['max_failures']:,}" + ("" if t["complete"] else " (incomplete)")
                          for t in s["tried"])
        smallest.add_row(s["scenario"], s["policy"], _knobs_text(s["knobs"]),
                         pool + ("" if s["complete"] else " (incomplete)"), tried)
    return [metrics, smallest]
