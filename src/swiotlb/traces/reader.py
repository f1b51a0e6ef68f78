"""Streaming reader of ftrace text files: gzip transparent, header and lost events, bad lines.

The file is read line by line (a multi-GB capture never sits in memory). What the header and
the ``[LOST N EVENTS]`` lines say is collected in a :class:`TraceInfo` while events stream by.
"""

from __future__ import annotations

import gzip
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator

from swiotlb.traces.events import EventFormatError, LostEvents, TraceEvent, parse_event

_ENTRIES = re.compile(r"#\s*entries-in-buffer/entries-written:\s*(\d+)/(\d+)\s+#P:(\d+)")
_TRACE_CMD_CPUS = re.compile(r"cpus=(\d+)")
MAX_BAD_KEPT = 20


class TraceParseError(ValueError):
    """A malformed line: names the file, the line number and shows the line."""

    def __init__(self, path: str, lineno: int, line: str, reason: str) -> None:
        shown = line.rstrip("\n")
        if len(shown) > 200:
            shown = shown[:200] + "..."
        super().__init__(f"{path}:{lineno}: {reason}: {shown!r}")
        self.path = path
        self.lineno = lineno
        self.line = shown
        self.reason = reason


@dataclass
class TraceInfo:
    """What a trace says about itself, beside its events.

    ``lost_events`` is the header's ``entries-written - entries-in-buffer`` (events the ring
    buffer overwrote) plus every ``[LOST N EVENTS]`` line; ``lost_by_cpu`` splits the latter.
    """

    path: str
    format: str = "unknown"  # tracefs, trace-cmd, perf or unknown (no header seen)
    cpus: int | None = None
    entries_in_buffer: int | None = None
    entries_written: int | None = None
    lost_lines: list[LostEvents] = field(default_factory=list)
    lines: int = 0
    events: int = 0
    bad_lines: int = 0
    bad_examples: list[str] = field(default_factory=list)

    @property
    def header_lost(self) -> int:
        if self.entries_in_buffer is None or self.entries_written is None:
            return 0
        return max(0, self.entries_written - self.entries_in_buffer)

    @property
    def lost_by_cpu(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for lost in self.lost_lines:
            out[lost.cpu] = out.get(lost.cpu, 0) + lost.count
        return out

    @property
    def lost_events(self) -> int:
        return self.header_lost + sum(lost.count for lost in self.lost_lines)

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "format": self.format,
            "cpus": self.cpus,
            "entries_in_buffer": self.entries_in_buffer,
            "entries_written": self.entries_written,
            "lost_events": self.lost_events,
            "lost_by_cpu": {str(k): v for k, v in sorted(self.lost_by_cpu.items())},
            "header_lost": self.header_lost,
            "lost_lines": [[x.lineno, x.cpu, x.count] for x in self.lost_lines[:MAX_BAD_KEPT * 50]],
            "lines": self.lines,
            "events": self.events,
            "bad_lines": self.bad_lines,
            "bad_examples": list(self.bad_examples),
        }


def open_text(path: str | Path) -> IO[str]:
    """Open a text trace, gunzipping when the file starts with gzip's magic (whatever its name)."""
    raw = open(path, "rb")
    magic = raw.peek(2)[:2] if isinstance(raw, io.BufferedReader) else b""
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.GzipFile(fileobj=raw), encoding="utf-8", errors="replace", newline="\n")
    return io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="\n")


def _header(line: str, info: TraceInfo) -> None:
    m = _ENTRIES.match(line)
    if m is not None:
        info.entries_in_buffer, info.entries_written, info.cpus = (int(g) for g in m.groups())
        info.format = "tracefs"
        return
    if info.lines <= 20:
        c = _TRACE_CMD_CPUS.fullmatch(line.strip())
        if c is not None:
            info.cpus = int(c[1])
            info.format = "trace-cmd"


def iter_events(
    path: str | Path, info: TraceInfo | None = None, *, skip_bad: bool = False
) -> Iterator[TraceEvent]:
    """Yield the events of a text trace in file order, filling ``info`` as it goes.

    A malformed line raises :class:`TraceParseError` (file:line and the text); with
    ``skip_bad`` it is counted in ``info.bad_lines`` (the first few kept as examples) instead.
    """
    if info is None:
        info = TraceInfo(str(path))
    name = str(path)
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            info.lines = lineno
            if line.startswith("#") or line.startswith("cpus="):
                _header(line, info)
                continue
            try:
                ev = parse_event(line, lineno)
            except EventFormatError as exc:
                if not skip_bad:
                    raise TraceParseError(name, lineno, line, str(exc)) from None
                info.bad_lines += 1
                if len(info.bad_examples) < MAX_BAD_KEPT:
                    info.bad_examples.append(str(TraceParseError(name, lineno, line, str(exc))))
                continue
            if ev is None:
                continue
            if isinstance(ev, LostEvents):
                info.lost_lines.append(ev)
                continue
            if info.format == "unknown" and info.events == 0:
                info.format = "perf" if " " + str(ev.pid) + " [" in line else "trace-cmd"
            info.events += 1
            yield ev
