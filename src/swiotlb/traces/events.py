"""One ftrace line as a typed event: the DMA-API and swiotlb tracepoints, and trace markers.

Three text layouts are accepted, detected per line (they share everything after the CPU):

* tracefs ``trace`` (``TASK-PID [CPU] FLAGS TIMESTAMP: EVENT: BODY``, flags optional, an optional
  ``(TGID)`` column);
* ``trace-cmd report`` (same, flags usually absent, timestamps may carry nanoseconds);
* ``perf script`` (``TASK PID [CPU] TIMESTAMP: SUBSYS:EVENT: BODY``).

Bodies follow the events' ``print_fmt`` (kept in a capture's meta, spec §5.6): the device name,
then ``key=value`` fields; ``{a,b,c}`` arrays in scatter-gather events. Addresses are hex with
or without ``0x``; ``size=`` is decimal in single-mapping events and hex inside sg ``sizes={}``.
Timestamps become integer nanoseconds without going through a float.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAPPING_ERROR = (1 << 64) - 1  # DMA_MAPPING_ERROR as the dma_map_* events print it

# Events whose body the lab reads; any other event is kept as OtherEvent (never an error).
MAP_SINGLE = frozenset({"dma_map_page", "dma_map_phys", "dma_map_resource"})
UNMAP_SINGLE = frozenset({"dma_unmap_page", "dma_unmap_phys", "dma_unmap_resource"})
SYNC_SINGLE = frozenset({"dma_sync_single_for_cpu", "dma_sync_single_for_device"})
SYNC_SG = frozenset({"dma_sync_sg_for_cpu", "dma_sync_sg_for_device"})
ALLOC = frozenset({"dma_alloc", "dma_alloc_pages", "dma_alloc_sgt", "dma_alloc_sgt_err"})
FREE = frozenset({"dma_free", "dma_free_pages", "dma_free_sgt"})
KNOWN = (
    MAP_SINGLE | UNMAP_SINGLE | SYNC_SINGLE | SYNC_SG | ALLOC | FREE
    | {"dma_map_sg", "dma_unmap_sg", "dma_map_sg_err", "swiotlb_bounced", "tracing_mark_write", "print"}
)

# TASK-PID or TASK PID (perf), optional (TGID), [CPU], optional flags, seconds.micro(nano)
_PREFIX = re.compile(
    r"\s*(?P<task>.*?)[- ](?P<pid>\d+)\s+(?:\(\s*[\d-]+\)\s+)?\[(?P<cpu>\d+)\]\s+"
    r"(?:(?P<flags>[.a-zA-Z0-9]{4,6})\s+)?(?P<sec>\d+)\.(?P<frac>\d{1,9}):\s+"
    r"(?:\w+:)?(?P<event>\w+):\s?(?P<body>.*)"
)
_FIELD = re.compile(r"(\w+)=(\{[^}]*\}|\S*)")
_HEX = re.compile(r"(?:0[xX])?[0-9a-fA-F]+")
_HEX_LIST = re.compile(r"(?:0[xX])?[0-9a-fA-F]+(?:,(?:0[xX])?[0-9a-fA-F]+)*")
_LOST = re.compile(r"\s*CPU:?\s*(?P<cpu>\d+)\s*\[LOST (?P<n>\d+) EVENTS\]")


class EventFormatError(ValueError):
    """A line that is not a trace event this parser understands (the reason, without a place)."""


@dataclass(slots=True)
class TraceEvent:
    """What every event line carries: where, when and who (``ts_ns`` is the trace clock)."""

    lineno: int
    task: str
    pid: int
    cpu: int
    flags: str
    ts_ns: int
    event: str


@dataclass(slots=True)
class MarkerEvent(TraceEvent):
    """A ``trace_marker`` write (``tracing_mark_write: TEXT``)."""

    text: str


@dataclass(slots=True)
class BouncedEvent(TraceEvent):
    """``swiotlb:swiotlb_bounced``: a bounce attempt, logged before the slot search.

    ``orig_addr`` is the original buffer (the tracepoint's ``dev_addr``), not the slot.
    """

    device: str
    dma_mask: int
    orig_addr: int
    size: int
    reason: str


@dataclass(slots=True)
class SingleEvent(TraceEvent):
    """A single-range DMA event: map, unmap, sync, alloc or free of ``[dma_addr, +size)``.

    ``phys_addr`` is the original buffer for maps (-1 when the event has none); a failed map
    has ``dma_addr == MAPPING_ERROR``.
    """

    device: str
    dir: str
    dma_addr: int
    size: int
    phys_addr: int
    attrs: str

    @property
    def failed(self) -> bool:
        return self.dma_addr == MAPPING_ERROR


@dataclass(slots=True)
class SgEvent(TraceEvent):
    """A scatter-gather event; arrays are per entry (empty when the event does not print them)."""

    device: str
    dir: str
    dma_addrs: tuple[int, ...]
    sizes: tuple[int, ...]
    phys_addrs: tuple[int, ...]
    attrs: str


@dataclass(slots=True)
class OtherEvent(TraceEvent):
    """Any other event (another subsystem's tracepoint): kept, never interpreted."""

    body: str


@dataclass(frozen=True, slots=True)
class LostEvents:
    """A ``CPU:N [LOST K EVENTS]`` line: the ring buffer overwrote events on that CPU here."""

    lineno: int
    cpu: int
    count: int


def _hex(text: str, what: str) -> int:
    if _HEX.fullmatch(text) is None:  # int(x, 16) alone would take "-1", "+6fa0" and "6fa_0000"
        raise EventFormatError(f"{what}={text!r} is not a hex number")
    return int(text, 16)


def _dec(text: str, what: str) -> int:
    if not (text.isascii() and text.isdigit()):  # str.isdigit alone lets '²' through to int()
        raise EventFormatError(f"{what}={text!r} is not a decimal number")
    return int(text)


def _array(text: str, what: str) -> tuple[int, ...]:
    if len(text) < 2 or text[0] != "{" or text[-1] != "}":
        raise EventFormatError(f"{what}={text!r} is not a {{...}} array")
    inner = text[1:-1]
    if not inner:
        return ()
    if _HEX_LIST.fullmatch(inner) is None:
        raise EventFormatError(f"{what}={text!r} holds a value that is not a hex number")
    return tuple(int(v, 16) for v in inner.split(","))


def _need(fields: dict[str, str], key: str, event: str) -> str:
    value = fields.get(key)
    if value is None:
        raise EventFormatError(f"{event} without {key}=")
    return value


def _device_and_fields(body: str, event: str) -> tuple[str, dict[str, str]]:
    dev, _, rest = body.partition(" ")
    if not dev or "=" in dev:
        raise EventFormatError(f"{event} without a device name")
    return dev, dict(_FIELD.findall(rest))


def parse_event(line: str, lineno: int) -> TraceEvent | LostEvents | None:
    """Parse one line; None for comments and blank lines; :class:`EventFormatError` otherwise."""
    if not line or line[0] == "#" or line.isspace():
        return None
    m = _PREFIX.match(line)
    if m is None:
        lost = _LOST.match(line)
        if lost is not None:
            return LostEvents(lineno, int(lost["cpu"]), int(lost["n"]))
        if line.startswith(("cpus=", "version =", "CPU ", "#####")) or line.lstrip().startswith("CPU "):
            return None  # trace-cmd's header lines and tracefs' "buffer started" notes
        raise EventFormatError("not a trace event line (expected 'TASK-PID [CPU] ... TIMESTAMP: EVENT: ...')")
    frac = m["frac"]
    ts = int(m["sec"]) * 1_000_000_000 + int(frac) * 10 ** (9 - len(frac))
    head = (lineno, m["task"].strip(), int(m["pid"]), int(m["cpu"]), m["flags"] or "", ts)
    event = m["event"]
    body = m["body"].rstrip()  # stripped here: a lazy body before \s*$ backtracks quadratically
    if event not in KNOWN:
        return OtherEvent(*head, event, body)
    if event in ("tracing_mark_write", "print"):
        return MarkerEvent(*head, "tracing_mark_write", body)
    if event == "swiotlb_bounced":
        if not body.startswith("dev_name: "):
            raise EventFormatError("swiotlb_bounced without 'dev_name: '")
        dev, fields = _device_and_fields(body[10:], event)
        reason = body.rsplit(" ", 1)[-1] if "=" not in body.rsplit(" ", 1)[-1] else ""
        return BouncedEvent(
            *head, event, dev,
            _hex(_need(fields, "dma_mask", event), "dma_mask"),
            _hex(_need(fields, "dev_addr", event), "dev_addr"),
            _dec(_need(fields, "size", event), "size"),
            reason,
        )
    dev, fields = _device_and_fields(body, event)
    direction = fields.get("dir", "")
    attrs = fields.get("attrs", "")
    if event in ("dma_map_sg", "dma_unmap_sg", "dma_map_sg_err") or event in SYNC_SG:
        dma_addrs = _array(fields["dma_addrs"], "dma_addrs") if "dma_addrs" in fields else ()
        sizes = _array(fields["sizes"], "sizes") if "sizes" in fields else ()
        phys = _array(fields["phys_addrs"], "phys_addrs") if "phys_addrs" in fields else ()
        if event == "dma_map_sg":
            if len(phys) != len(dma_addrs) or len(sizes) != len(dma_addrs):
                raise EventFormatError(
                    f"dma_map_sg arrays differ in length (dma_addrs {len(dma_addrs)}, "
                    f"sizes {len(sizes)}, phys_addrs {len(phys)})"
                )
        elif event == "dma_unmap_sg" and "phys_addrs" not in fields:
            raise EventFormatError("dma_unmap_sg without phys_addrs=")
        return SgEvent(*head, event, dev, direction, dma_addrs, sizes, phys, attrs)
    if event == "dma_alloc_sgt" or event == "dma_free_sgt":
        phys = _array(fields["phys_addrs"], "phys_addrs") if "phys_addrs" in fields else ()
        return SgEvent(
            *head, event, dev, direction,
            (_hex(_need(fields, "dma_addr", event), "dma_addr"),),
            (_dec(_need(fields, "size", event), "size"),), phys, attrs,
        )
    phys_text = fields.get("phys_addr")
    if event in MAP_SINGLE and phys_text is None:
        raise EventFormatError(f"{event} without phys_addr=")
    return SingleEvent(
        *head, event, dev, direction,
        _hex(_need(fields, "dma_addr", event), "dma_addr"),
        _dec(_need(fields, "size", event), "size"),
        -1 if phys_text is None else _hex(phys_text, "phys_addr"),
        attrs,
    )
