"""The event parser and the streaming reader on the README's example lines, in three layouts."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest

from swiotlb.traces.events import (
    MAPPING_ERROR,
    BouncedEvent,
    EventFormatError,
    LostEvents,
    MarkerEvent,
    OtherEvent,
    SgEvent,
    SingleEvent,
    TraceEvent,
    parse_event,
)
from swiotlb.traces.reader import TraceInfo, TraceParseError, iter_events

# Example lines of ../shared/traces/real/README.md (tracefs layout), one per event kind.
MARK = "            init-138     [000] .....    19.748906: tracing_mark_write: MARK begin probe"
ALLOC = (
    "          insmod-207     [000] .....    19.951153: dma_alloc: 0000:00:02.0 dir=BIDIRECTIONAL "
    "dma_addr=198a000 size=6726 virt_addr=00000000bc23f594 flags=GFP_KERNEL|__GFP_NOWARN|__GFP_ZERO "
    "attrs=NO_WARN"
)
BOUNCED = (
    "    kworker/u4:3-48      [000] .N...    20.551800: swiotlb_bounced: dev_name: 0000:00:03.0 "
    "dma_mask=ffffffffffffffff dev_addr=12065000 size=4096 FORCE"
)
MAP_PAGE = (
    "          insmod-207     [000] d..1.    20.038876: dma_map_page: 0000:00:02.0 dir=TO_DEVICE "
    "dma_addr=6fa00000 size=16 phys_addr=11f960f8 attrs="
)
UNMAP_PAGE = (
    "    kworker/u4:3-48      [000] dNh1.    20.552412: dma_unmap_page: 0000:00:03.0 dir=FROM_DEVICE "
    "dma_addr=6fa09000 size=4096 attrs="
)
MAP_SG = (
    "             fio-731     [000] .....    58.014816: dma_map_sg: 0000:00:03.0 dir=FROM_DEVICE "
    "nents=3/3 ents=3/3 dma_addrs={0x70340000,0x7034b000,0x7037e000} sizes={0xb000,0x33000,0x1000} "
    "phys_addrs={0x125f5000,0x12a00000,0x12533000} attrs=NO_WARN"
)
UNMAP_SG = (
    "             fio-699     [000] dNh..    55.546469: dma_unmap_sg: 0000:00:03.0 dir=FROM_DEVICE "
    "phys_addrs={0x79d2000,0x759d000,0x759c000,0x74ac000,0x757f000,0x79f8000,0x7581000,0x7527000,"
    "0x12545000} attrs="
)
FAILED_MAP = (
    "             fio-562     [001] d..1.    20.552120: dma_map_page: 0000:00:02.0 dir=FROM_DEVICE "
    "dma_addr=ffffffffffffffff size=262144 phys_addr=26923000 attrs="
)
EXAMPLES = [MARK, ALLOC, BOUNCED, MAP_PAGE, UNMAP_PAGE, MAP_SG, UNMAP_SG, FAILED_MAP]

_TRACEFS = re.compile(
    r"\s*(?P<task>.*)-(?P<pid>\d+)\s+\[(?P<cpu>\d+)\]\s+(?P<flags>\S+)\s+(?P<ts>[\d.]+): (?P<event>\w+): (?P<body>.*)"
)


def trace_cmd(line: str, ns: str = "") -> str:
    """The same event as ``trace-cmd report`` prints it: no flags column, optional extra ns digits."""
    m = _TRACEFS.fullmatch(line)
    assert m is not None
    return f"{m['task'].strip():>16}-{m['pid']:<6} [{m['cpu']}] {m['ts']}{ns}: {m['event']}: {m['body']}"


def perf_script(line: str) -> str:
    """The same event as ``perf script`` prints it: ``TASK PID [CPU] TS: SUBSYS:EVENT: BODY``."""
    m = _TRACEFS.fullmatch(line)
    assert m is not None
    subsys = "swiotlb" if m["event"] == "swiotlb_bounced" else "dma"
    if m["event"] == "tracing_mark_write":
        subsys = "ftrace"
    return f"{m['task'].strip():>16} {m['pid']:>6} [{m['cpu']}] {m['ts']}: {subsys}:{m['event']}: {m['body']}"


LAYOUTS = {
    "tracefs": lambda line: line,
    "trace-cmd": trace_cmd,
    "trace-cmd-ns": lambda line: trace_cmd(line, "123"),
    "perf": perf_script,
}


def parse(line: str, lineno: int = 1) -> TraceEvent:
    ev = parse_event(line, lineno)
    assert isinstance(ev, TraceEvent), ev
    return ev


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_kind_in_every_layout(layout: str) -> None:
    conv = LAYOUTS[layout]
    extra_ns = 123 if layout == "trace-cmd-ns" else 0
    flagged = layout == "tracefs"

    m = parse(conv(MARK), 5)
    assert isinstance(m, MarkerEvent)
    assert (m.lineno, m.task, m.pid, m.cpu, m.text) == (5, "init", 138, 0, "MARK begin probe")
    assert m.ts_ns == 19_748_906_000 + extra_ns
    assert m.flags == ("....." if flagged else "")

    a = parse(conv(ALLOC))
    assert isinstance(a, SingleEvent) and a.event == "dma_alloc"
    assert (a.device, a.dir, a.dma_addr, a.size, a.phys_addr) == ("0000:00:02.0", "BIDIRECTIONAL", 0x198A000, 6726, -1)
    assert a.attrs == "NO_WARN"

    b = parse(conv(BOUNCED))
    assert isinstance(b, BouncedEvent)
    assert (b.task, b.pid, b.cpu) == ("kworker/u4:3", 48, 0)
    assert (b.device, b.dma_mask, b.orig_addr, b.size, b.reason) == (
        "0000:00:03.0", (1 << 64) - 1, 0x12065000, 4096, "FORCE"
    )
    assert b.ts_ns == 20_551_800_000 + extra_ns
    assert b.flags == (".N..." if flagged else "")

    p = parse(conv(MAP_PAGE))
    assert isinstance(p, SingleEvent) and p.event == "dma_map_page"
    assert (p.device, p.dir, p.dma_addr, p.size, p.phys_addr, p.attrs) == (
        "0000:00:02.0", "TO_DEVICE", 0x6FA00000, 16, 0x11F960F8, ""
    )
    assert not p.failed

    u = parse(conv(UNMAP_PAGE))
    assert isinstance(u, SingleEvent) and u.event == "dma_unmap_page"
    assert (u.dir, u.dma_addr, u.size, u.phys_addr) == ("FROM_DEVICE", 0x6FA09000, 4096, -1)

    s = parse(conv(MAP_SG))
    assert isinstance(s, SgEvent) and s.event == "dma_map_sg"
    assert s.dma_addrs == (0x70340000, 0x7034B000, 0x7037E000)
    assert s.sizes == (0xB000, 0x33000, 0x1000)
    assert s.phys_addrs == (0x125F5000, 0x12A00000, 0x12533000)
    assert (s.pid, s.ts_ns, s.attrs) == (731, 58_014_816_000 + extra_ns, "NO_WARN")

    us = parse(conv(UNMAP_SG))
    assert isinstance(us, SgEvent) and us.event == "dma_unmap_sg"
    assert us.dma_addrs == () and us.sizes == ()
    assert len(us.phys_addrs) == 9 and us.phys_addrs[0] == 0x79D2000 and us.phys_addrs[-1] == 0x12545000

    f = parse(conv(FAILED_MAP))
    assert isinstance(f, SingleEvent)
    assert f.failed and f.dma_addr == MAPPING_ERROR and f.cpu == 1 and f.size == 262144


def test_timestamps_are_exact_integer_ns() -> None:
    line = trace_cmd(MAP_SG)
    for stamp, ns in [
        ("58.014816", 58_014_816_000),
        ("58.014816123", 58_014_816_123),
        ("58.0148161", 58_014_816_100),
        ("0.000001", 1_000),
        ("123456789.999999999", 123_456_789_999_999_999),  # beyond float precision
    ]:
        assert parse(line.replace("58.014816", stamp)).ts_ns == ns


def test_trace_cmd_spacing_variants() -> None:
    """trace-cmd pads the CPU column; the header-less 'TASK-PID [CPU] TS:' with one space parses too."""
    ev = parse("fio-731 [000] 58.014816: dma_map_sg: " + MAP_SG.split("dma_map_sg: ", 1)[1])
    assert isinstance(ev, SgEvent) and (ev.task, ev.pid, ev.cpu, ev.flags) == ("fio", 731, 0, "")
    ev = parse("fio 731 [000] 58.014816: dma:dma_map_sg: " + MAP_SG.split("dma_map_sg: ", 1)[1])
    assert isinstance(ev, SgEvent) and (ev.task, ev.pid, ev.ts_ns) == ("fio", 731, 58_014_816_000)


def test_task_names_with_dashes_and_spaces() -> None:
    ev = parse(BOUNCED.replace("kworker/u4:3-48", "my-task-name-48"))
    assert (ev.task, ev.pid) == ("my-task-name", 48)
    ev = parse(MAP_PAGE.replace("insmod-207", "<...>-207"))
    assert (ev.task, ev.pid) == ("<...>", 207)


def test_dma_map_phys_is_a_single_map() -> None:
    ev = parse(MAP_PAGE.replace("dma_map_page:", "dma_map_phys:"))
    assert isinstance(ev, SingleEvent) and ev.event == "dma_map_phys"
    assert (ev.dma_addr, ev.size, ev.phys_addr) == (0x6FA00000, 16, 0x11F960F8)
    un = parse(UNMAP_PAGE.replace("dma_unmap_page:", "dma_unmap_phys:"))
    assert isinstance(un, SingleEvent) and un.event == "dma_unmap_phys"


def test_other_events_and_notes() -> None:
    other = parse("          <idle>-0       [001] d.h1.    20.000001: irq_handler_entry: irq=11 name=virtio0")
    assert isinstance(other, OtherEvent) and other.body == "irq=11 name=virtio0"
    assert parse_event("# tracer: nop", 1) is None
    assert parse_event("", 1) is None
    assert parse_event("   \n", 1) is None
    assert parse_event("cpus=2", 1) is None
    assert parse_event("##### CPU 1 buffer started ####", 1) is None


@pytest.mark.parametrize("line,cpu,count", [
    ("CPU:1 [LOST 12 EVENTS]", 1, 12),
    ("CPU:0 [LOST 4096 EVENTS]\n", 0, 4096),
    ("CPU 3 [LOST 7 EVENTS]", 3, 7),
])
def test_lost_events(line: str, cpu: int, count: int) -> None:
    ev = parse_event(line, 9)
    assert ev == LostEvents(9, cpu, count)


BAD = {
    "truncated prefix": MAP_PAGE[:40],
    "truncated before the body": MAP_PAGE.split("dma_map_page:")[0],
    "truncated map": MAP_PAGE[: MAP_PAGE.index(" phys_addr=")],
    "truncated sg array": MAP_SG[: MAP_SG.index("0x7034b000")],
    "bad hex dma_addr": MAP_PAGE.replace("dma_addr=6fa00000", "dma_addr=6fa0zz00"),
    "bad hex in array": MAP_SG.replace("0x7034b000", "0x7034g000"),
    "bad decimal size": MAP_PAGE.replace("size=16", "size=1x6"),
    "hex page size": UNMAP_PAGE.replace("size=4096", "size=0x1000"),
    "superscript digit in size": MAP_PAGE.replace("size=16", "size=1\u00b2"),  # isdigit() but not int()
    "arabic-indic digit in size": BOUNCED.replace("size=4096", "size=40\u0669\u0666"),
    "missing dma_addr": UNMAP_PAGE.replace("dma_addr=6fa09000 ", ""),
    "missing size": MAP_PAGE.replace("size=16 ", ""),
    "missing phys_addr": MAP_PAGE.replace(" phys_addr=11f960f8", ""),
    "missing device": MAP_PAGE.replace("0000:00:02.0 ", ""),
    "bounced without dev_name": BOUNCED.replace("dev_name: ", ""),
    "bounced without dev_addr": BOUNCED.replace("dev_addr=12065000 ", ""),
    "bounced bad size": BOUNCED.replace("size=4096", "size=-1"),
    "sg sizes shorter": MAP_SG.replace("sizes={0xb000,0x33000,0x1000}", "sizes={0xb000,0x33000}"),
    "sg phys longer": MAP_SG.replace("phys_addrs={0x125f5000,", "phys_addrs={0x1,0x125f5000,"),
    "sg without phys": MAP_SG.replace(" phys_addrs={0x125f5000,0x12a00000,0x12533000}", ""),
    "unmap sg without phys": UNMAP_SG[: UNMAP_SG.index(" phys_addrs=")] + " attrs=",
    "empty array element": MAP_SG.replace("{0xb000,0x33000,0x1000}", "{0xb000,,0x1000}"),
    "garbage": "hello world",
    "no timestamp": "fio-731 [000] .....: dma_map_sg: 0000:00:03.0",
}


@pytest.mark.parametrize("name", list(BAD))
def test_malformed_lines_raise_event_format_error(name: str) -> None:
    with pytest.raises(EventFormatError) as exc:
        parse_event(BAD[name], 3)
    assert str(exc.value)  # a reason, without a place


HEADER = [
    "# tracer: nop",
    "#",
    "# entries-in-buffer/entries-written: 10/13   #P:2",
    "#",
    "#                                _-----=> irqs-off/BH-disabled",
    "#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION",
    "#              | |         |   |||||     |         |",
]


def write(path: Path, lines: list[str], compress: bool) -> Path:
    text = "".join(line + "\n" for line in lines).encode()
    path.write_bytes(gzip.compress(text, mtime=0) if compress else text)
    return path


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_reader_streams_and_fills_info(tmp_path: Path, compress: bool) -> None:
    lines = HEADER + EXAMPLES + ["CPU:1 [LOST 2 EVENTS]", UNMAP_PAGE]
    path = write(tmp_path / "t.trace.txt", lines, compress)  # gzip detected by magic, not name
    info = TraceInfo(str(path))
    events = list(iter_events(path, info))
    assert [e.event for e in events] == [
        "tracing_mark_write", "dma_alloc", "swiotlb_bounced", "dma_map_page", "dma_unmap_page",
        "dma_map_sg", "dma_unmap_sg", "dma_map_page", "dma_unmap_page",
    ]
    assert [e.lineno for e in events] == [8, 9, 10, 11, 12, 13, 14, 15, 17]
    assert info.format == "tracefs" and info.cpus == 2
    assert (info.entries_in_buffer, info.entries_written) == (10, 13)
    assert info.header_lost == 3  # written - in buffer
    assert info.lost_by_cpu == {1: 2}
    assert info.lost_events == 5
    assert info.events == 9 and info.lines == len(lines) and info.bad_lines == 0
    assert info.to_json()["lost_events"] == 5


def test_header_lost_never_negative() -> None:
    info = TraceInfo("x", entries_in_buffer=10, entries_written=10)
    assert info.header_lost == 0 and info.lost_events == 0
    assert TraceInfo("x").header_lost == 0


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_reader_reports_file_and_line(tmp_path: Path, compress: bool) -> None:
    path = write(tmp_path / "bad.txt", HEADER + [MAP_PAGE, BAD["bad hex dma_addr"], UNMAP_PAGE], compress)
    with pytest.raises(TraceParseError) as exc:
        list(iter_events(path))
    err = exc.value
    assert err.lineno == len(HEADER) + 2 and err.path == str(path)
    assert str(err).startswith(f"{path}:{len(HEADER) + 2}: dma_addr='6fa0zz00' is not a hex number: ")
    assert "6fa0zz00" in err.line


def test_reader_skip_bad_counts(tmp_path: Path) -> None:
    bad = list(BAD.values())
    lines = HEADER + [MAP_PAGE] + bad + [UNMAP_PAGE]
    path = write(tmp_path / "bad.txt", lines, False)
    info = TraceInfo(str(path))
    events = list(iter_events(path, info, skip_bad=True))
    assert [e.event for e in events] == ["dma_map_page", "dma_unmap_page"]
    assert info.bad_lines == len(bad)
    assert len(info.bad_examples) == min(len(bad), 20)
    assert info.bad_examples[0].startswith(f"{path}:{len(HEADER) + 2}: ")


def test_reader_trace_cmd_and_perf_formats(tmp_path: Path) -> None:
    tc = write(tmp_path / "tc.txt", ["cpus=2", "version = 6"] + [trace_cmd(x, "123") for x in EXAMPLES], False)
    info = TraceInfo(str(tc))
    events = list(iter_events(tc, info))
    assert len(events) == len(EXAMPLES) and info.format == "trace-cmd" and info.cpus == 2
    assert all(e.ts_ns % 1000 == 123 for e in events)
    pf = write(tmp_path / "perf.txt", [perf_script(x) for x in EXAMPLES], True)
    info = TraceInfo(str(pf))
    events = list(iter_events(pf, info))
    assert len(events) == len(EXAMPLES) and info.format == "perf"
    assert isinstance(events[5], SgEvent) and events[5].phys_addrs[1] == 0x12A00000


@pytest.mark.parametrize("value", ["-1", "+6fa0", "6fa_0000", " 6fa0", "0x"])
def test_hex_fields_are_strict(value: str) -> None:
    line = ("fio-7 [000] d..1. 1.000020: dma_map_page: 0000:00:03.0 dir=TO_DEVICE "
            f"dma_addr={value} size=4096 phys_addr=12345200 attrs=")
    with pytest.raises(EventFormatError, match="dma_addr"):
        parse_event(line, 1)
    sg = ("fio-7 [000] d..1. 1.000040: dma_map_sg: 0000:00:04.0 dir=FROM_DEVICE nents=1/1 ents=1/1 "
          f"dma_addrs={{{value}}} sizes={{0x200}} phys_addrs={{0x7000}} attrs=")
    with pytest.raises(EventFormatError, match="dma_addrs"):
        parse_event(sg, 1)
