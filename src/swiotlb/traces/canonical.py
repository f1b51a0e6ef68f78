"""The canonical trace: one row per mapping entry, with its bounce attempt, map and unmap paired.

Pairing follows what the tracepoints show (../shared/traces/real/README.md, spec §5.6):

* ``swiotlb_bounced`` is logged at the top of ``swiotlb_map()``, before the slot search, with
  the ORIGINAL address. A map line is paired with the most recent unpaired bounced line(s) on
  its own CPU with the same device, address and size, searching backwards (an interrupt can fit
  a whole map between a bounced line and its map line). An sg map takes one line per entry,
  in entry order. The bounced line is where the allocation happened (``alloc_line``).
* A bounced line that no map claims is an *orphan*: an entry of a ``dma_map_sg`` that failed
  (the kernel logs no event for it and frees the held entries silently).
* ``dma_unmap_page`` pairs with the open map of the same (device, dma_addr), FIFO;
  ``dma_unmap_sg`` carries only the original addresses and pairs with the open ``dma_map_sg``
  of the same (device, phys_addrs list), FIFO.
* Workloads are the spans between ``begin NAME`` and ``end NAME`` markers.

Rows are kept in typed columns (``array('q')``), about a third of the text they come from.
"""

from __future__ import annotations

import re
from array import array
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from swiotlb.traces.events import (
    MAP_SINGLE,
    UNMAP_SINGLE,
    BouncedEvent,
    MarkerEvent,
    SgEvent,
    SingleEvent,
    TraceEvent,
)
from swiotlb.traces.reader import TraceInfo, iter_events

KIND_PAGE, KIND_SG, KIND_ORPHAN = 0, 1, 2
KINDS = ("page", "sg", "orphan")
MAX_PENDING = 1 << 16  # unclaimed bounced lines kept per CPU before the oldest count as orphans
_MARK = re.compile(r"(?:MARK\s+)?(begin|end)\s+(\S+)\s*$")

INT_COLUMNS = (
    "alloc_line", "alloc_ns", "cpu", "map_line", "map_ns", "size", "phys_addr", "dma_addr",
    "unmap_line", "unmap_ns", "unmap_cpu", "group", "entry",
)
CODE_COLUMNS = ("kind", "device", "dir", "workload")
BOOL_COLUMNS = ("bounced", "failed")
COLUMNS = INT_COLUMNS + CODE_COLUMNS + BOOL_COLUMNS


@dataclass
class Workload:
    """A marker-delimited span of the trace (``end_line`` -1 while open)."""

    name: str
    begin_line: int
    begin_ns: int
    end_line: int = -1
    end_ns: int = -1

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "begin_line": self.begin_line, "begin_ns": self.begin_ns,
            "end_line": self.end_line, "end_ns": self.end_ns,
        }


@dataclass
class PairingStats:
    """What did not pair: each is a count the replay reports rather than an error."""

    unmatched_unmaps: int = 0
    unmap_size_mismatches: int = 0
    open_at_end: int = 0
    orphans: int = 0
    unpaired_map_entries: int = 0  # bounced-looking maps with no bounced line (lost events)

    def to_json(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class CanonicalTrace:
    """Mapping rows in column form plus what the trace says about itself.

    Row order is the order of ``alloc_line`` (the moment of the slot search), which is the
    order a replay must follow. String columns hold codes into :attr:`names`.
    """

    columns: dict[str, array[int]]
    names: dict[str, list[str]]
    workloads: list[Workload]
    info: dict[str, Any]
    pairing: PairingStats
    source: str = ""
    devices: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.columns["alloc_line"])

    def value(self, column: str, row: int) -> Any:
        """One cell, decoded (strings and booleans as such)."""
        v = self.columns[column][row]
        if column in CODE_COLUMNS:
            return self.names[column][v]
        if column in BOOL_COLUMNS:
            return bool(v)
        return v

    def row(self, i: int) -> dict[str, Any]:
        return {c: self.value(c, i) for c in COLUMNS}

    def rows(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self.row(i)

    def meta(self) -> dict[str, Any]:
        """The trace-level part, as stored beside the rows in Parquet and JSONL."""
        return {
            "format": "swiotlb-canonical-trace",
            "version": 1,
            "source": self.source,
            "info": self.info,
            "pairing": self.pairing.to_json(),
            "workloads": [w.to_json() for w in self.workloads],
            "devices": self.devices,
        }


class _Builder:
    """Consumes events in file order and fills the columns."""

    def __init__(self) -> None:
        self.cols: dict[str, array[int]] = {c: array("q") for c in COLUMNS}
        self.codes: dict[str, dict[str, int]] = {c: {} for c in CODE_COLUMNS}
        self.pending: dict[int, list[BouncedEvent]] = {}
        self.open_single: dict[tuple[str, int], deque[int]] = {}
        self.open_sg: dict[tuple[str, tuple[int, ...]], deque[list[int]]] = {}
        self.workloads: list[Workload] = []
        self.open_workloads: list[Workload] = []
        self.stats = PairingStats()
        self.orphan_lines: list[BouncedEvent] = []

    def code(self, column: str, text: str) -> int:
        table = self.codes[column]
        c = table.get(text)
        if c is None:
            c = table[text] = len(table)
        return c

    def workload_name(self) -> str:
        return self.open_workloads[-1].name if self.open_workloads else ""

    def add_row(
        self, kind: int, alloc: TraceEvent, map_ev: TraceEvent | None, device: str, direction: str,
        size: int, phys: int, dma: int, bounced: bool, failed: bool, group: int, entry: int,
        workload: str,
    ) -> int:
        c = self.cols
        row = len(c["alloc_line"])
        c["alloc_line"].append(alloc.lineno)
        c["alloc_ns"].append(alloc.ts_ns)
        c["cpu"].append(alloc.cpu)
        c["map_line"].append(map_ev.lineno if map_ev is not None else -1)
        c["map_ns"].append(map_ev.ts_ns if map_ev is not None else -1)
        c["size"].append(size)
        c["phys_addr"].append(phys)
        c["dma_addr"].append(dma)
        c["unmap_line"].append(-1)
        c["unmap_ns"].append(-1)
        c["unmap_cpu"].append(-1)
        c["group"].append(group)
        c["entry"].append(entry)
        c["kind"].append(self.code("kind", KINDS[kind]))
        c["device"].append(self.code("device", device))
        c["dir"].append(self.code("dir", direction))
        c["workload"].append(self.code("workload", workload))
        c["bounced"].append(int(bounced))
        c["failed"].append(int(failed))
        return row

    # -- bounced lines -----------------------------------------------------------------------
    def bounced(self, ev: BouncedEvent) -> None:
        lines = self.pending.setdefault(ev.cpu, [])
        lines.append(ev)
        if len(lines) > MAX_PENDING:
            self.orphan(lines.pop(0))

    def orphan(self, ev: BouncedEvent) -> None:
        self.stats.orphans += 1
        self.add_row(
            KIND_ORPHAN, ev, None, ev.device, "", ev.size, ev.orig_addr, -1, True, True, -1, 0,
            self.workload_at(ev),
        )

    def workload_at(self, ev: TraceEvent) -> str:
        for w in reversed(self.workloads):
            if w.begin_line <= ev.lineno and (w.end_line < 0 or ev.lineno <= w.end_line):
                return w.name
        return ""

    def claim(self, cpu: int, device: str, wanted: list[tuple[int, int]]) -> list[BouncedEvent] | None:
        """The bounced lines of one map (``wanted`` = (orig, size) per entry, in order), or None."""
        lines = self.pending.get(cpu)
        if not lines:
            return None
        found: list[int] = []
        pos = len(lines)
        for orig, size in reversed(wanted):
            pos -= 1
            while pos >= 0:
                b = lines[pos]
                if b.orig_addr == orig and b.size == size and b.device == device:
                    break
                pos -= 1
            if pos < 0:
                return None
            found.append(pos)
        claimed = [lines[p] for p in reversed(found)]
        for p in found:  # descending positions: deleting keeps the others valid
            del lines[p]
        return claimed

    # -- maps and unmaps ---------------------------------------------------------------------
    def map_single(self, ev: SingleEvent) -> None:
        claimed = self.claim(ev.cpu, ev.device, [(ev.phys_addr, ev.size)])
        failed = ev.failed
        alloc: TraceEvent = claimed[0] if claimed else ev
        if claimed is None and ev.phys_addr != ev.dma_addr and not failed:
            self.stats.unpaired_map_entries += 1
        row = self.add_row(
            KIND_PAGE, alloc, ev, ev.device, ev.dir, ev.size, ev.phys_addr,
            -1 if failed else ev.dma_addr, claimed is not None, failed, ev.lineno, 0,
            self.workload_name(),
        )
        if not failed:
            self.open_single.setdefault((ev.device, ev.dma_addr), deque()).append(row)

    def map_sg(self, ev: SgEvent) -> None:
        wanted = list(zip(ev.phys_addrs, ev.sizes))
        claimed = self.claim(ev.cpu, ev.device, wanted)
        rows: list[int] = []
        workload = self.workload_name()
        for i, (phys, size) in enumerate(wanted):
            dma = ev.dma_addrs[i]
            alloc: TraceEvent = claimed[i] if claimed else ev
            if claimed is None and phys != dma:
                self.stats.unpaired_map_entries += 1
            rows.append(self.add_row(
                KIND_SG, alloc, ev, ev.device, ev.dir, size, phys, dma, claimed is not None,
                False, ev.lineno, i, workload,
            ))
        self.open_sg.setdefault((ev.device, ev.phys_addrs), deque()).append(rows)

    def unmap_single(self, ev: SingleEvent) -> None:
        q = self.open_single.get((ev.device, ev.dma_addr))
        if not q:
            self.stats.unmatched_unmaps += 1
            return
        row = q.popleft()
        if not q:
            del self.open_single[(ev.device, ev.dma_addr)]
        if self.cols["size"][row] != ev.size:
            self.stats.unmap_size_mismatches += 1
        self.close(row, ev)

    def unmap_sg(self, ev: SgEvent) -> None:
        key = (ev.device, ev.phys_addrs)
        q = self.open_sg.get(key)
        if not q:
            self.stats.unmatched_unmaps += 1
            return
        rows = q.popleft()
        if not q:
            del self.open_sg[key]
        for row in rows:
            self.close(row, ev)

    def close(self, row: int, ev: TraceEvent) -> None:
        c = self.cols
        c["unmap_line"][row] = ev.lineno
        c["unmap_ns"][row] = ev.ts_ns
        c["unmap_cpu"][row] = ev.cpu

    def marker(self, ev: MarkerEvent) -> None:
        m = _MARK.search(ev.text)
        if m is None:
            return
        what, name = m.groups()
        if what == "begin":
            w = Workload(name, ev.lineno, ev.ts_ns)
            self.workloads.append(w)
            self.open_workloads.append(w)
            return
        for w in reversed(self.open_workloads):
            if w.name == name:
                w.end_line, w.end_ns = ev.lineno, ev.ts_ns
                self.open_workloads.remove(w)
                return

    def feed(self, events: Iterable[TraceEvent]) -> None:
        for ev in events:
            name = ev.event
            if name == "swiotlb_bounced":
                assert isinstance(ev, BouncedEvent)
                self.bounced(ev)
            elif name in MAP_SINGLE:
                assert isinstance(ev, SingleEvent)
                self.map_single(ev)
            elif name in UNMAP_SINGLE:
                assert isinstance(ev, SingleEvent)
                self.unmap_single(ev)
            elif name == "dma_map_sg":
                assert isinstance(ev, SgEvent)
                self.map_sg(ev)
            elif name == "dma_unmap_sg":
                assert isinstance(ev, SgEvent)
                self.unmap_sg(ev)
            elif name == "tracing_mark_write":
                assert isinstance(ev, MarkerEvent)
                self.marker(ev)

    def finish(self, info: dict[str, Any], source: str) -> CanonicalTrace:
        for lines in self.pending.values():
            for ev in lines:
                self.orphan(ev)
        self.pending.clear()
        self.stats.open_at_end = sum(len(q) for q in self.open_single.values()) + sum(
            len(q) for q in self.open_sg.values()
        )
        cols = self.cols
        order = sorted(range(len(cols["alloc_line"])), key=cols["alloc_line"].__getitem__)
        if order != list(range(len(order))):
            cols = {c: array("q", (col[i] for i in order)) for c, col in cols.items()}
        names = {c: list(table) for c, table in self.codes.items()}
        for c in CODE_COLUMNS:  # codes are first-seen order, so the tables need no remap
            names.setdefault(c, [])
        devices = sorted(self.codes["device"])
        return CanonicalTrace(cols, names, self.workloads, info, self.stats, source, devices)


def build(events: Iterable[TraceEvent], info: dict[str, Any] | None = None, source: str = "") -> CanonicalTrace:
    """Pair an event stream (in file order) into a canonical trace."""
    b = _Builder()
    b.feed(events)
    return b.finish(info or {}, source)


def from_text(path: str | Path, *, skip_bad: bool = False) -> CanonicalTrace:
    """Parse and pair a text trace (tracefs, trace-cmd report or perf script; gzip or not)."""
    info = TraceInfo(str(path))
    b = _Builder()
    b.feed(iter_events(path, info, skip_bad=skip_bad))
    return b.finish(info.to_json(), str(path))
