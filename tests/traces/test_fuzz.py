"""Fuzzing the event parser and the reader: nothing but an event, None or EventFormatError.

Each hypothesis example is a batch of lines: valid lines built from templates of every event
kind with random fields (three layouts), mutations of such lines (truncation, character flips,
inserted garbage, deleted or doubled spans, digits swapped for look-alike Unicode digits) and
arbitrary Unicode text from hypothesis itself. ``BATCH * EXAMPLES`` is well over 100,000 lines.
A valid template line must also parse back to the fields it was built from.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swiotlb.traces.events import (
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
from swiotlb.traces.reader import TraceInfo, iter_events

BATCH = 1000
EXAMPLES = 120  # 120,000 generated lines, plus hypothesis' own text lines

DEVICES = ("0000:00:02.0", "0000:00:03.0", "0000:00:04.0", "virtio0", "dev")
DIRS = ("TO_DEVICE", "FROM_DEVICE", "BIDIRECTIONAL", "NONE")
ATTRS = ("", "NO_WARN", "SKIP_CPU_SYNC|NO_WARN", "WEAK_ORDERING")
TASKS = ("fio", "kworker/u4:3", "insmod", "<...>", "my-task", "ksoftirqd/0", "kworker/0:1H", "a b")
# characters that look like digits or separators but are not ASCII digits
ODD = "²³¹①٣൬𝟗Ⅷ\u00a0\u2028\u3000\x00\x7f\ufffd-_{}=,:[]()xX."
GARBAGE = ODD + "0123456789abcdefABCDEF \t#<>|/\\'\"é漢🙂"


def _hex(rng: random.Random, v: int) -> str:
    return (f"{v:X}" if rng.random() < 0.1 else f"{v:x}")


def _array(rng: random.Random, values: list[int]) -> str:
    return "{" + ",".join("0x" + _hex(rng, v) for v in values) + "}"


def _addr(rng: random.Random) -> int:
    return rng.choice((rng.getrandbits(32), rng.getrandbits(64), 0, (1 << 64) - 1, rng.getrandbits(12)))


def _prefix(rng: random.Random, event: str) -> tuple[str, dict[str, object]]:
    task = rng.choice(TASKS)
    pid, cpu = rng.randrange(0, 1 << 22), rng.randrange(0, 512)
    sec, digits = rng.randrange(0, 10**7), rng.randint(1, 9)
    frac = rng.randrange(0, 10**digits)
    ts = f"{sec}.{frac:0{digits}d}"
    ts_ns = sec * 10**9 + frac * 10 ** (9 - digits)
    layout = rng.randrange(3)
    if layout == 0:  # tracefs
        flags = "".join(rng.choice(".dDNnhHsSbB0123456789") for _ in range(rng.choice((4, 5))))
        head = f"{task:>16}-{pid:<7} [{cpu:03d}] {flags} {ts:>12}: {event}: "
    elif layout == 1:  # trace-cmd report
        head = f"{task:>16}-{pid:<5} [{cpu:03d}] {ts}: {event}: "
    else:  # perf script
        subsys = "swiotlb" if event == "swiotlb_bounced" else "dma"
        head = f"{task:>16} {pid:>6} [{cpu:03d}] {ts}: {subsys}:{event}: "
    return head, {"pid": pid, "cpu": cpu, "ts_ns": ts_ns}


def _valid(rng: random.Random) -> tuple[str, Callable[[object], bool]]:
    """A valid line and a check of the event it must parse to (the prefix's fields too)."""
    line, check, want = _valid_body(rng)

    def full_check(e: object) -> bool:
        if want and not (isinstance(e, TraceEvent) and (e.pid, e.cpu, e.ts_ns) == (want["pid"], want["cpu"], want["ts_ns"])):
            return False
        return check(e)

    return line, full_check


def _valid_body(rng: random.Random) -> tuple[str, Callable[[object], bool], dict[str, object]]:
    kind = rng.randrange(8)
    dev, direction, attrs = rng.choice(DEVICES), rng.choice(DIRS), rng.choice(ATTRS)
    if kind == 0:
        orig, size, mask = _addr(rng), rng.randrange(0, 1 << 20), _addr(rng)
        head, want = _prefix(rng, "swiotlb_bounced")
        line = (f"{head}dev_name: {dev} dma_mask={_hex(rng, mask)} dev_addr={_hex(rng, orig)} "
                f"size={size} {rng.choice(('FORCE', 'NORMAL'))}")
        return line, lambda e: isinstance(e, BouncedEvent) and (e.orig_addr, e.size, e.device) == (orig, size, dev), want
    if kind in (1, 2):
        event = rng.choice(("dma_map_page", "dma_map_phys", "dma_map_resource"))
        dma, phys, size = _addr(rng), _addr(rng), rng.randrange(0, 1 << 20)
        head, want = _prefix(rng, event)
        line = (f"{head}{dev} dir={direction} dma_addr={_hex(rng, dma)} size={size} "
                f"phys_addr={_hex(rng, phys)} attrs={attrs}")
        return line, lambda e: isinstance(e, SingleEvent) and (e.dma_addr, e.phys_addr, e.size) == (dma, phys, size), want
    if kind == 3:
        event = rng.choice(("dma_unmap_page", "dma_unmap_phys", "dma_sync_single_for_cpu", "dma_free"))
        dma, size = _addr(rng), rng.randrange(0, 1 << 20)
        head, want = _prefix(rng, event)
        line = f"{head}{dev} dir={direction} dma_addr={_hex(rng, dma)} size={size} attrs={attrs}"
        return line, lambda e: isinstance(e, SingleEvent) and (e.dma_addr, e.size, e.phys_addr) == (dma, size, -1), want
    if kind == 4:
        n = rng.randrange(0, 40)
        dmas = [_addr(rng) for _ in range(n)]
        sizes = [rng.randrange(1, 1 << 18) for _ in range(n)]
        phys = [_addr(rng) for _ in range(n)]
        head, want = _prefix(rng, "dma_map_sg")
        line = (f"{head}{dev} dir={direction} nents={n}/{n} ents={n}/{n} dma_addrs={_array(rng, dmas)} "
                f"sizes={_array(rng, sizes)} phys_addrs={_array(rng, phys)} attrs={attrs}")
        return line, lambda e: isinstance(e, SgEvent) and (list(e.dma_addrs), list(e.sizes), list(e.phys_addrs)) == (
            dmas, sizes, phys), want
    if kind == 5:
        phys = [_addr(rng) for _ in range(rng.randrange(0, 40))]
        head, want = _prefix(rng, "dma_unmap_sg")
        line = f"{head}{dev} dir={direction} phys_addrs={_array(rng, phys)} attrs={attrs}"
        return line, lambda e: isinstance(e, SgEvent) and list(e.phys_addrs) == phys, want
    if kind == 6:
        text = rng.choice(("MARK begin vd_rr4k_qd1", "MARK end nvme_sr1m_qd4", "hello", ""))
        head, want = _prefix(rng, "tracing_mark_write")
        return head + text, lambda e: isinstance(e, MarkerEvent) and e.text == text.strip(), want
    if rng.random() < 0.5:
        cpu, n = rng.randrange(0, 64), rng.randrange(0, 1 << 20)
        return f"CPU:{cpu} [LOST {n} EVENTS]", lambda e: isinstance(e, LostEvents) and (e.cpu, e.count) == (cpu, n), {}
    head, want = _prefix(rng, rng.choice(("irq_handler_entry", "sched_switch", "block_rq_issue")))
    return head + "irq=11 name=virtio0", lambda e: isinstance(e, OtherEvent), want


def _mutate(rng: random.Random, line: str) -> str:
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(7)
        pos = rng.randrange(len(line) + 1)
        if op == 0:  # truncation
            line = line[:pos]
        elif op == 1 and line:  # character flip
            p = min(pos, len(line) - 1)
            line = line[:p] + chr(ord(line[p]) ^ (1 << rng.randrange(7))) + line[p + 1:]
        elif op == 2:  # inserted garbage
            junk = "".join(rng.choice(GARBAGE) for _ in range(rng.randint(1, 12)))
            line = line[:pos] + junk + line[pos:]
        elif op == 3:  # deleted span
            line = line[:pos] + line[pos + rng.randint(1, 20):]
        elif op == 4:  # doubled span
            line = line[:pos] + line[pos:pos + rng.randint(1, 30)] + line[pos:]
        elif op == 5:  # a digit becomes a look-alike
            digits = [i for i, ch in enumerate(line) if ch.isdigit()]
            if digits:
                p = rng.choice(digits)
                line = line[:p] + rng.choice(ODD) + line[p + 1:]
        else:  # a structural character replaced
            marks = [i for i, ch in enumerate(line) if ch in "={},:[]-. "]
            if marks:
                p = rng.choice(marks)
                line = line[:p] + rng.choice("={},:[]-. x") + line[p + 1:]
    return line


def _random_unicode(rng: random.Random) -> str:
    n = rng.randint(0, 80)
    return "".join(chr(rng.choice((rng.randrange(32, 127), rng.randrange(0x80, 0x2FFF), rng.randrange(0x1F300, 0x1F6FF))))
                   for _ in range(n))


def make_batch(rng: random.Random) -> tuple[list[str], list[tuple[str, Callable[[object], bool]]]]:
    lines: list[str] = []
    valid: list[tuple[str, Callable[[object], bool]]] = []
    for _ in range(BATCH):
        r = rng.random()
        if r < 0.3:
            line, check = _valid(rng)
            valid.append((line, check))
            lines.append(line)
        elif r < 0.9:
            lines.append(_mutate(rng, _valid(rng)[0]))
        else:
            lines.append(_random_unicode(rng))
    return lines, valid


def _parse_or_format_error(line: str, lineno: int) -> TraceEvent | LostEvents | None | EventFormatError:
    try:
        ev = parse_event(line, lineno)
    except EventFormatError as exc:
        return exc
    assert ev is None or isinstance(ev, (TraceEvent, LostEvents)), (line, ev)
    return ev


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**64 - 1), extra=st.lists(st.text(max_size=120), max_size=20))
def test_parser_and_reader_never_crash(tmp_path: Path, seed: int, extra: list[str]) -> None:
    # the batch comes from a seeded generator: hypothesis' own data stays small, and a failure
    # names the seed and the offending line
    lines, valid = make_batch(random.Random(seed))
    lines += extra
    # every line: an event, None, or EventFormatError (any other exception fails the test)
    for lineno, line in enumerate(lines, 1):
        _parse_or_format_error(line, lineno)  # an unexpected exception propagates: the failure
    # valid template lines parse back to what they were built from
    for line, check in valid:
        ev = parse_event(line, 1)
        assert check(ev), (line, ev)
    # the reader skips what does not parse, never raises (a line break inside a line only
    # splits it in two)
    path = tmp_path / "fuzz.trace.txt"
    path.write_text("".join(line.replace("\n", " ") + "\n" for line in lines), encoding="utf-8",
                    errors="surrogatepass")
    info = TraceInfo(str(path))
    n = sum(1 for _ in iter_events(path, info, skip_bad=True))
    assert n == info.events and info.lines >= len(lines)
