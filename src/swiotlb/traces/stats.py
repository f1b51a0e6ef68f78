"""Summary statistics of a canonical trace: per device, per workload and overall.

:func:`trace_stats` computes, for every group of mapping rows (all rows; the rows of one
device; the rows of one workload, i.e. allocated between its ``MARK begin``/``MARK end``):

``mappings``
    map entries: one per ``dma_map_page``/``dma_map_phys`` line (failed ones included) and one
    per ``dma_map_sg`` entry. Orphan bounced lines (entries of a failed ``dma_map_sg``, which
    logs no map event) are not mappings; they are counted in ``orphan_entries``.
``map_events``
    map lines (a ``dma_map_sg`` line counts once, whatever its number of entries).
``bounced``, ``bounce_rate``
    mappings paired with a ``swiotlb_bounced`` line, and ``bounced / mappings`` (``None`` when
    the group has no mapping). A failed map that was attempted through swiotlb is bounced.
``failed_maps``
    maps logged with ``dma_addr=ffffffffffffffff``.
``bytes``
    total size of the mappings (failed ones included: it is what was asked for).
``size``
    the distribution of mapping sizes in bytes (failed maps included): ``min``, ``p50``,
    ``p90``, ``p99``, ``max`` and ``histogram``, a dict from the lower bound ``2**k`` of each
    power-of-two bucket ``[2**k, 2**(k+1))`` to its count, ascending (size 0 goes to bucket 0).
``peak_bytes_in_flight``, ``peak_slots_in_flight``
    the largest total size, and the largest number of 2 KiB swiotlb slots, held at once by the
    group's mappings. A mapping is in flight from its ``alloc_line`` (the ``swiotlb_bounced``
    line, or the map line of a mapping with none) until its ``unmap_line``, or to the end of
    the trace when it is never unmapped; events are swept in line order (one trace line never
    both allocates and releases). Failed maps and orphans are never in flight. Slots are counted
    for bounced mappings only: ``ceil((size + offset) / 2048)`` where ``offset = phys_addr &
    min_align_mask & 0x7ff`` with the device's ``min_align_mask`` from ``masks`` (0 when not
    given). The two peaks are taken separately (they may fall at different moments).
``lifetime_us``
    ``unmap_ns - alloc_ns`` in microseconds over the mappings that were unmapped: ``count``,
    ``p50``, ``p90``, ``p99``, ``max``.
``first_ns``, ``last_ns``, ``duration_ns``
    for a workload the span of its markers (``MARK begin`` to ``MARK end``; the trace's
    last event time when never ended); otherwise the span from the group's first allocation to
    its last allocation, map or unmap. ``None`` for an empty group without markers.

Percentiles use the nearest-rank method: the p-th percentile of ``n`` sorted values is the
value at 1-based rank ``ceil(p * n / 100)`` (so it is always one of the observed values; p50 of
``[1, 2, 3, 4]`` is 2). Every percentile is ``None`` for an empty group.

:func:`render_stats` turns the result into ``rich`` tables. Plain Python, no numpy: the full
``a_1cpu_default`` capture (344k rows) takes about two seconds.
"""

from __future__ import annotations

from itertools import accumulate
from typing import Any

from rich.table import Table

from swiotlb.traces.canonical import CanonicalTrace

SLOT_SHIFT = 11  # 2 KiB swiotlb slots (IO_TLB_SHIFT)
SLOT_SIZE = 1 << SLOT_SHIFT
PERCENTILES = (50, 90, 99)
OUTSIDE = ""  # the workload name of rows outside every marker span


def percentile(sorted_values: list[int], p: int) -> int | None:
    """Nearest-rank percentile of already sorted values (``None`` when there are none).

    The value at 1-based rank ``ceil(p * n / 100)``, at least rank 1.
    """
    n = len(sorted_values)
    if n == 0:
        return None
    rank = -(-p * n // 100)  # ceil without floats
    return sorted_values[max(rank, 1) - 1]


def size_bucket(size: int) -> int:
    """The lower bound of the power-of-two bucket holding ``size`` (0 for 0)."""
    return 1 << (size.bit_length() - 1) if size > 0 else 0


def slots_for(size: int, phys_addr: int, min_align_mask: int) -> int:
    """Slots a bounced mapping holds: the sub-slot offset kept by ``min_align_mask`` counts."""
    offset = phys_addr & min_align_mask & (SLOT_SIZE - 1) if phys_addr >= 0 else 0
    return (size + offset + SLOT_SIZE - 1) >> SLOT_SHIFT


class _Columns:
    """The columns a group's statistics read, plus per-row derived values."""

    def __init__(self, trace: CanonicalTrace, masks: dict[str, int]) -> None:
        cols = trace.columns
        n = len(trace)
        kinds = trace.names["kind"]
        self.orphan = kinds.index("orphan") if "orphan" in kinds else -1
        self.kind, self.failed, self.bounced = cols["kind"], cols["failed"], cols["bounced"]
        self.size, self.entry = cols["size"], cols["entry"]
        self.alloc_ns, self.map_ns, self.unmap_ns = cols["alloc_ns"], cols["map_ns"], cols["unmap_ns"]
        dev_mask = [masks.get(name, 0) for name in trace.names["device"]]
        size, phys, dev, bounced = self.size, cols["phys_addr"], cols["device"], self.bounced
        slots = [
            slots_for(size[i], phys[i], dev_mask[dev[i]]) if bounced[i] else 0 for i in range(n)
        ]
        # Sweep keys: (line << shift) | event, event = 2 * row + 1 for the allocation and 2 * row
        # for the release. Distinct trace lines are distinct events, and one line never both
        # allocates and releases, so sorting the keys gives the line order.
        self.shift = shift = (2 * n + 1).bit_length()
        self.event_mask = (1 << shift) - 1
        alloc_line, unmap_line = cols["alloc_line"], cols["unmap_line"]
        self.alloc_key = [(alloc_line[i] << shift) | (2 * i + 1) for i in range(n)]
        self.unmap_key = [(unmap_line[i] << shift) | (2 * i) if unmap_line[i] >= 0 else -1 for i in range(n)]
        self.event_bytes = [0] * (2 * n)
        self.event_slots = [0] * (2 * n)
        self.event_bytes[1::2] = size
        self.event_bytes[0::2] = [-v for v in size]
        self.event_slots[1::2] = slots
        self.event_slots[0::2] = [-v for v in slots]


def _distribution(values: list[int], scale: int = 1) -> dict[str, Any]:
    """min, nearest-rank percentiles and max of sorted ``values``, divided by ``scale`` if not 1."""
    def conv(v: int | None) -> int | float | None:
        return v if v is None or scale == 1 else v / scale

    out: dict[str, Any] = {"min": conv(values[0] if values else None)}
    for p in PERCENTILES:
        out[f"p{p}"] = conv(percentile(values, p))
    out["max"] = conv(values[-1] if values else None)
    return out


def _group(c: _Columns, rows: list[int], span: tuple[int, int] | None = None) -> dict[str, Any]:
    """The statistics of the rows ``rows`` (ascending); ``span`` overrides the time span."""
    kind, orphan = c.kind, c.orphan
    maps = [i for i in rows if kind[i] != orphan] if orphan >= 0 else rows
    entry, failed_c, bounced_c = c.entry, c.failed, c.bounced
    size_c, alloc_ns, map_ns, unmap_ns = c.size, c.alloc_ns, c.map_ns, c.unmap_ns
    sizes = sorted([size_c[i] for i in maps])
    bounced = sum([bounced_c[i] for i in maps])
    failed = sum([failed_c[i] for i in maps])
    live = [i for i in maps if not failed_c[i]] if failed else maps
    lifetimes = sorted([unmap_ns[i] - alloc_ns[i] for i in maps if unmap_ns[i] >= 0])
    hist: dict[int, int] = {}
    for v in sizes:  # ascending, so the dict comes out ascending
        b = size_bucket(v)
        hist[b] = hist.get(b, 0) + 1
    size = _distribution(sizes)
    size["histogram"] = hist
    life: dict[str, Any] = {"count": len(lifetimes)}
    life.update(_distribution(lifetimes, 1000))
    del life["min"]
    # in flight: allocations and releases of the group's live mappings, in line order
    alloc_key, unmap_key, mask = c.alloc_key, c.unmap_key, c.event_mask
    keys = [alloc_key[i] for i in live]
    keys += [k for k in [unmap_key[i] for i in live] if k >= 0]
    keys.sort()
    events = [k & mask for k in keys]
    peak_bytes = max(accumulate([c.event_bytes[e] for e in events]), default=0)
    peak_slots = max(accumulate([c.event_slots[e] for e in events]), default=0)
    first: int | None
    last: int | None
    if span is not None:
        first, last = span
    elif maps:
        first = min([alloc_ns[i] for i in maps])
        last = max(max([map_ns[i] for i in maps]), max([unmap_ns[i] for i in maps]), first)
    else:
        first = last = None
    return {
        "mappings": len(maps),
        "map_events": sum([1 for i in maps if entry[i] == 0]),
        "bounced": bounced,
        "bounce_rate": bounced / len(maps) if maps else None,
        "failed_maps": failed,
        "orphan_entries": len(rows) - len(maps),
        "bytes": sum(sizes),
        "size": size,
        "peak_bytes_in_flight": max(peak_bytes, 0),
        "peak_slots_in_flight": max(peak_slots, 0),
        "lifetime_us": life,
        "first_ns": first,
        "last_ns": last,
        "duration_ns": None if first is None or last is None else last - first,
    }


def trace_stats(trace: CanonicalTrace, masks: dict[str, int] | None = None) -> dict[str, Any]:
    """Statistics of ``trace`` overall, per device and per workload (see the module docstring).

    ``masks`` maps a device name to its ``min_align_mask`` (for the slot counts; default 0).
    Returns ``{"source", "rows", "masks", "overall", "devices": {name: ...}, "workloads":
    {name: ...}}``: devices by name; workloads in marker order (a workload without mappings
    too), then ``""`` for the rows outside every workload when there are any.
    """
    masks = dict(masks or {})
    c = _Columns(trace, masks)
    n = len(trace)
    dev_names, wl_names = trace.names["device"], trace.names["workload"]
    dev_c, wl_c = trace.columns["device"], trace.columns["workload"]
    by_dev: list[list[int]] = [[] for _ in dev_names]
    by_wl: list[list[int]] = [[] for _ in wl_names]
    for i in range(n):
        by_dev[dev_c[i]].append(i)
        by_wl[wl_c[i]].append(i)
    overall = _group(c, list(range(n)))

    # a workload's time span is that of its markers (first begin to last end when a name
    # repeats; the trace's last event time when it never ended)
    trace_last = overall["last_ns"]
    spans: dict[str, tuple[int, int]] = {}
    for wl in trace.workloads:
        end = wl.end_ns if wl.end_ns >= 0 else (trace_last if trace_last is not None else wl.begin_ns)
        old = spans.get(wl.name)
        spans[wl.name] = (wl.begin_ns, end) if old is None else (min(old[0], wl.begin_ns), max(old[1], end))
    order = list(spans)
    order += [name for name in wl_names if name not in spans and name != OUTSIDE]
    if OUTSIDE in wl_names and OUTSIDE not in spans:
        order.append(OUTSIDE)
    codes = {name: code for code, name in enumerate(wl_names)}
    workloads = {
        name: _group(c, by_wl[codes[name]] if name in codes else [], spans.get(name)) for name in order
    }
    return {
        "source": trace.source,
        "rows": n,
        "masks": {k: hex(v) for k, v in sorted(masks.items())},
        "overall": overall,
        "devices": {name: _group(c, by_dev[code]) for code, name in sorted(enumerate(dev_names), key=lambda x: x[1])},
        "workloads": workloads,
    }


# -- rendering ----------------------------------------------------------------------------------

def _bytes(v: int | None) -> str:
    if v is None:
        return "-"
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if v >= 1 << shift and v % (1 << shift) == 0:
            return f"{v >> shift}{unit}"
    if v >= 1 << 20:
        return f"{v / (1 << 20):.1f}M"
    if v >= 1 << 10:
        return f"{v / (1 << 10):.1f}K"
    return str(v)


def _us(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def _duration(ns: int | None) -> str:
    if ns is None:
        return "-"
    if ns >= 1_000_000_000:
        return f"{ns / 1e9:.2f} s"
    return f"{ns / 1e6:.2f} ms"


def _rate(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _summary_row(table: Table, label: str, g: dict[str, Any]) -> None:
    size, life = g["size"], g["lifetime_us"]
    table.add_row(
        label, f"{g['mappings']:,}", f"{g['map_events']:,}", f"{g['bounced']:,}", _rate(g["bounce_rate"]),
        f"{g['failed_maps']:,}", f"{g['orphan_entries']:,}",
        _bytes(size["p50"]), _bytes(size["p99"]), _bytes(size["max"]),
        _bytes(g["peak_bytes_in_flight"]), f"{g['peak_slots_in_flight']:,}",
        _us(life["p50"]), _us(life["p99"]), _us(life["max"]), _duration(g["duration_ns"]),
    )


def render_stats(stats: dict[str, Any]) -> list[Table]:
    """Rich tables for :func:`trace_stats`' result: a summary per group, and size histograms."""
    summary = Table(title=f"Trace statistics{': ' + stats['source'] if stats.get('source') else ''}")
    summary.add_column("group")
    for head in ("mappings", "map events", "bounced", "rate", "failed", "orphans",
                 "size p50", "size p99", "size max", "peak bytes", "peak slots",
                 "life p50 µs", "life p99 µs", "life max µs", "duration"):
        summary.add_column(head, justify="right")
    _summary_row(summary, "overall", stats["overall"])
    summary.add_section()
    for name, g in stats["devices"].items():
        _summary_row(summary, name, g)
    summary.add_section()
    for name, g in stats["workloads"].items():
        _summary_row(summary, name or "(outside workloads)", g)

    groups = [("overall", stats["overall"])] + list(stats["devices"].items())
    buckets = sorted({int(b) for _, g in groups for b in g["size"]["histogram"]})
    hist = Table(title="Mapping sizes by power-of-two bucket [2^k, 2^(k+1))")
    hist.add_column("size ≥", justify="right")
    for name, _ in groups:
        hist.add_column(name, justify="right")
    counts = [{int(b): c for b, c in g["size"]["histogram"].items()} for _, g in groups]  # JSON keys are str
    for b in buckets:
        hist.add_row(_bytes(b), *(f"{c.get(b, 0):,}" for c in counts))
    return [summary, hist]
