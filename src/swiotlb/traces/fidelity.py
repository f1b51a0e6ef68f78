"""Replay a canonical trace through the exact allocator and judge it by the kernel's addresses.

Rules (../shared/traces/real/README.md "Replaying these traces"; spec §3):

* an allocation happens at its ``swiotlb_bounced`` line, on that line's CPU (area
  ``cpu & (nareas - 1)`` first); a release happens at its unmap line, sg entries in list order;
* trace markers ``begin``/``end`` reset and read the hiwater, as the capture script did with
  debugfs around each workload;
* an orphan bounced line (a failed ``dma_map_sg``) is a real attempt: entries of one attempt
  are held until one fails, then released without an event.

Two replays run: *straight* (our own decisions throughout) and *decision by decision*, where
after each disagreement the kernel's choice is applied (:meth:`IoTlbMem.claim_slots`) so that
each decision is judged on the kernel's own previous state. The latter is the fidelity figure;
with several CPUs a few differences per 10,000 decisions come from event order the trace
cannot show (docs/fidelity.md).
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass, field
from typing import Any

from swiotlb.core import DeviceParams, IoTlbMem, IoTlbPool, MapFailure, MapRefused, SlotMapping
from swiotlb.core.constants import IO_TLB_SHIFT, SLOT_LOW_MASK
from swiotlb.traces.canonical import KIND_ORPHAN, CanonicalTrace
from swiotlb.traces.meta import CaptureMeta, PoolLayout

PCI_SEG_BOUNDARY = 0xFFFFFFFF  # what the PCI core gives every function (README "Device masks")
_FULL_LINE = re.compile(r"swiotlb buffer is full \(sz: (\d+) bytes\), total (\d+) \(slots\), used (\d+)")


def bounced_rows(trace: CanonicalTrace, pool: PoolLayout | None = None) -> list[bool]:
    """Which rows went through the bounce pool.

    A ``swiotlb_bounced`` line says so. A capture made without that event still shows a bounce
    address inside the pool. Such a row is allocated at its map line, which is exact with one
    CPU; it can be late with several.
    """
    cols = trace.columns
    flags = [bool(b) for b in cols["bounced"]]
    if pool is not None:
        lo, hi = pool.start, pool.end
        for i, d in enumerate(cols["dma_addr"]):
            if not flags[i] and lo <= d < hi:
                flags[i] = True
    return flags


def infer_min_align_masks(
    trace: CanonicalTrace, *, min_evidence: int = 8, pool: PoolLayout | None = None
) -> dict[str, int]:
    """Each device's ``min_align_mask`` as the trace shows it.

    A device with mask ``2**k - 1`` keeps the low ``k`` bits of every buffer in its bounce
    address; one without it starts sub-page mappings at a slot and larger ones at a page. The
    mask is the widest (up to 64 KiB - 1) on which every bounced mapping of the device agrees,
    provided at least ``min_evidence`` mappings (and 1%) have non-zero bits there; otherwise 0.
    """
    rows: dict[str, list[tuple[int, int]]] = {}
    cols = trace.columns
    names = trace.names["device"]
    bounced = bounced_rows(trace, pool)
    for i in range(len(trace)):
        dma = cols["dma_addr"][i]
        if dma >= 0 and bounced[i]:
            rows.setdefault(names[cols["device"][i]], []).append((cols["phys_addr"][i], dma))
    masks: dict[str, int] = {}
    for dev, pairs in rows.items():
        masks[dev] = 0
        for k in range(16, 0, -1):
            m = (1 << k) - 1
            if any((p ^ d) & m for p, d in pairs):
                continue
            evidence = sum(1 for p, _ in pairs if p & m)
            if evidence >= max(min_evidence, len(pairs) // 100):
                masks[dev] = m
            break
    for dev in trace.devices:
        masks.setdefault(dev, 0)
    return masks


@dataclass
class Mismatch:
    """One disagreement with the kernel, with what a reader needs to find it in the trace."""

    line: int
    map_line: int
    cpu: int
    device: str
    size: int
    phys_addr: int
    kernel: int | None  # the kernel's bounce address; None when it failed
    ours: int | None
    workload: str

    def to_json(self) -> dict[str, Any]:
        return {
            "line": self.line, "map_line": self.map_line, "cpu": self.cpu, "device": self.device,
            "size": self.size, "phys_addr": hex(self.phys_addr),
            "kernel": None if self.kernel is None else hex(self.kernel),
            "ours": None if self.ours is None else hex(self.ours),
            "workload": self.workload,
        }

    def describe(self, pool: PoolLayout) -> str:
        def where(addr: int | None) -> str:
            if addr is None:
                return "failure"
            slot = (addr - pool.start) >> IO_TLB_SHIFT
            return f"{addr:#x} (slot {slot}, area {slot // (pool.nslabs // pool.nareas)})"

        return (
            f"line {self.line} (map at line {self.map_line}), cpu {self.cpu}, {self.device}, "
            f"size {self.size}, buffer {self.phys_addr:#x}: kernel {where(self.kernel)}, "
            f"model {where(self.ours)}"
        )


@dataclass
class ReplayPass:
    """One replay's tallies (straight or decision by decision)."""

    address_matches: int = 0
    failed_reproduced: int = 0
    failures: dict[str, int] = field(default_factory=lambda: {"full": 0, "too_large": 0})
    mismatches: int = 0
    first: Mismatch | None = None
    workload_hiwater: dict[str, int] = field(default_factory=dict)
    hiwater: int = 0
    full_events: list[tuple[int, int]] = field(default_factory=list)  # (sz, used) per FULL refusal
    orphan_attempts: int = 0
    orphan_attempts_unfailed: int = 0
    mismatch_rows: list[int] = field(default_factory=list)
    early_releases: int = 0  # releases applied before their unmap line to match the kernel
    unresolved: int = 0  # kernel choices that could not be applied (slots held for good)


@dataclass
class FidelityResult:
    """What ``swiotlb replay`` prints for the static policy against the kernel."""

    source: str
    pool: PoolLayout
    profile: str
    masks: dict[str, int]
    maps: int
    bounced_maps: int
    address_checked: int
    kernel_failed_maps: int
    orphan_entries: int
    lost_events: int
    straight: ReplayPass
    decision: ReplayPass
    kernel_workload_hiwater: dict[str, int]
    buffer_full_lines: list[str]
    trace: CanonicalTrace

    def mismatch_kinds(self) -> dict[str, int]:
        """The decision-by-decision differences counted by :func:`classify_mismatch`."""
        out: dict[str, int] = {}
        ctx = _Context(self.trace)
        previous: list[int] = []
        for row in self.decision.mismatch_rows:
            kind = classify_mismatch(ctx, row, previous)
            out[kind] = out.get(kind, 0) + 1
            previous.append(row)
        return dict(sorted(out.items()))

    @property
    def kernel_hiwater(self) -> int | None:
        return max(self.kernel_workload_hiwater.values()) if self.kernel_workload_hiwater else None

    def reliable_until(self) -> int:
        """The first trace line after which the replay's state may differ from the kernel's.

        The ring buffer drops the oldest events when the header's ``entries-written`` exceeds
        ``entries-in-buffer`` (or the metadata counts overruns): then nothing is comparable. A
        ``[LOST N EVENTS]`` line loses events at a known place: workloads from it on are not.
        """
        info = self.trace.info
        if int(info.get("header_lost", 0) or 0) or (self.lost_events and not info.get("lost_lines")):
            return 0
        lines = [x[0] for x in info.get("lost_lines", [])]
        return min(lines) if lines else 1 << 62

    def full_lines_matched(self) -> int:
        """How many printed 'buffer is full' lines match, in order, a refusal of the replay."""
        matched = 0
        events = iter(self.decision.full_events)
        for line in self.buffer_full_lines:
            m = _FULL_LINE.search(line)
            if m is None:
                continue
            want = (int(m[1]), int(m[3]))
            for ev in events:
                if ev == want:
                    matched += 1
                    break
        return matched

    def to_json(self) -> dict[str, Any]:
        d, s = self.decision, self.straight
        workloads = []
        reliable_until = self.reliable_until()
        ends = {w.name: w.end_line if w.end_line >= 0 else 1 << 62 for w in self.trace.workloads}
        for name, ours in d.workload_hiwater.items():
            kernel = self.kernel_workload_hiwater.get(name)
            if ends.get(name, 1 << 62) >= reliable_until:
                kernel_known = None  # events were lost before or inside it: not comparable
            else:
                kernel_known = kernel
            workloads.append({
                "name": name, "hiwater_slots": ours, "straight_hiwater_slots": s.workload_hiwater.get(name),
                "kernel_hiwater_slots": kernel,
                "match": None if kernel_known is None else kernel_known == ours,
            })
        full_lines = [x for x in self.buffer_full_lines if _FULL_LINE.search(x)]
        return {
            "source": self.source,
            "profile": self.profile,
            "pool": self.pool.to_json(),
            "min_align_masks": {k: hex(v) for k, v in sorted(self.masks.items())},
            "maps": self.maps,
            "bounced_maps": self.bounced_maps,
            "address_checked": self.address_checked,
            "address_matches": d.address_matches,
            "address_matches_straight": s.address_matches,
            "mismatches": d.mismatches,
            "mismatch_lines": [self.trace.columns["alloc_line"][r] for r in d.mismatch_rows[:1000]],
            "mismatch_kinds": self.mismatch_kinds(),
            "first_mismatch": None if d.first is None else d.first.to_json(),
            "first_mismatch_straight": None if s.first is None else s.first.to_json(),
            "kernel_failed_maps": self.kernel_failed_maps,
            "failed_maps_reproduced": d.failed_reproduced,
            "failed_maps_reproduced_straight": s.failed_reproduced,
            "orphan_entries": self.orphan_entries,
            "orphan_attempts": d.orphan_attempts,
            "orphan_attempts_unfailed": d.orphan_attempts_unfailed,
            "failures": dict(d.failures),
            "early_releases": d.early_releases,
            "unresolved": d.unresolved,
            "hiwater_slots": d.hiwater,
            "kernel_hiwater_slots": self.kernel_hiwater,
            "workloads": workloads,
            "workload_hiwater_matches": sum(1 for w in workloads if w["match"]),
            "workload_hiwater_checked": sum(1 for w in workloads if w["match"] is not None),
            "buffer_full_lines": len(full_lines),
            "buffer_full_lines_matched": self.full_lines_matched(),
            "lost_events": self.lost_events,
            "checks_limited": self.lost_events > 0,
        }


def _one_pass(
    trace: CanonicalTrace, pool: PoolLayout, devs: dict[str, DeviceParams], profile: str, decide: bool,
    bounced_col: list[bool],
) -> ReplayPass:
    mem = IoTlbMem([IoTlbPool(pool.start, pool.nslabs, pool.nareas)], profile, force_bounce=True)
    out = ReplayPass()
    cols = trace.columns
    alloc_line, cpu_col, size_col, phys_col, dma_col = (
        cols["alloc_line"], cols["cpu"], cols["size"], cols["phys_addr"], cols["dma_addr"]
    )
    unmap_line, entry_col, kind_col, dev_col = cols["unmap_line"], cols["entry"], cols["kind"], cols["device"]
    failed_col, map_line = cols["failed"], cols["map_line"]
    kinds = trace.names["kind"]
    orphan_code = kinds.index("orphan") if "orphan" in kinds else -1
    dev_by_code = [devs[name] for name in trace.names["device"]]
    dev_names = trace.names["device"]
    marks: list[tuple[int, bool, str]] = []
    for w in trace.workloads:
        marks.append((w.begin_line, True, w.name))
        if w.end_line >= 0:
            marks.append((w.end_line, False, w.name))
    marks.sort()
    mi = 0
    frees: list[tuple[int, int, int]] = []  # (unmap line, entry, row)
    held: dict[int, int] = {}  # row -> bounce address we hold for it
    attempts: dict[tuple[int, int], list[int]] = {}  # (cpu, device code) -> rows held by an sg attempt
    map_single = mem.tbl_map_single
    release = mem.release_slots

    def free_row(row: int) -> None:
        addr = held.pop(row, None)
        if addr is not None:
            release(dev_by_code[dev_col[row]], addr)

    def span(row: int, addr: int) -> tuple[int, int]:
        offset = addr & dev_by_code[dev_col[row]].min_align_mask & SLOT_LOW_MASK
        first = (addr - offset - pool.start) >> IO_TLB_SHIFT
        return first, first + ((size_col[row] + offset + SLOT_LOW_MASK) >> IO_TLB_SHIFT)

    def claim(row: int, dev: DeviceParams, orig: int, size: int, kernel: int, cpu: int) -> bool:
        """Apply the kernel's choice. Slots we still hold there were released earlier in the
        kernel (an unmap logged after this line): release those first, as the kernel did."""
        lo, hi = span(row, kernel)
        early = [r for r, a in held.items() if (s := span(r, a))[0] < hi and lo < s[1]]
        if any(unmap_line[r] < 0 for r in early):
            return False  # held for good: the kernel's state differs in a way order cannot explain
        for r in early:
            out.early_releases += 1
            free_row(r)
        try:
            mem.claim_slots(dev, orig, size, kernel, cpu=cpu)
        except ValueError:
            return False
        held[row] = kernel
        return True

    def mismatch(row: int, ours: int | None) -> None:
        out.mismatches += 1
        if len(out.mismatch_rows) < 100_000:
            out.mismatch_rows.append(row)
        if out.first is None:
            k = dma_col[row]
            out.first = Mismatch(
                alloc_line[row], map_line[row], cpu_col[row], dev_names[dev_col[row]], size_col[row],
                phys_col[row], None if k < 0 else k, ours, trace.value("workload", row),
            )

    for row in range(len(alloc_line)):
        line = alloc_line[row]
        while frees and frees[0][0] < line:
            free_row(heapq.heappop(frees)[2])
        while mi < len(marks) and marks[mi][0] < line:
            _, begin, name = marks[mi]
            if begin:
                mem.reset_hiwater()
            else:
                out.workload_hiwater[name] = mem.used_hiwater
            mi += 1
        if not bounced_col[row]:
            continue
        code = dev_col[row]
        dev = dev_by_code[code]
        cpu = cpu_col[row]
        orig = phys_col[row]
        size = size_col[row]
        key = (cpu, code)
        orphan = kind_col[row] == orphan_code
        if not orphan and key in attempts:  # our replay did not fail the attempt the kernel failed
            out.orphan_attempts_unfailed += 1
            for r in attempts.pop(key):
                free_row(r)
        res = map_single(dev, orig, size, 0, cpu=cpu)
        ours = res.tlb_addr if isinstance(res, SlotMapping) else None
        if isinstance(res, MapRefused):
            out.failures["too_large" if res.cause is MapFailure.TOO_LARGE else "full"] += 1
            if res.cause is MapFailure.FULL:
                out.full_events.append((res.size, res.used))
        if orphan:
            if key not in attempts:
                out.orphan_attempts += 1
                attempts[key] = []
            if ours is None:
                for r in attempts.pop(key):
                    free_row(r)
            else:
                held[row] = ours
                attempts[key].append(row)
            continue
        kernel = dma_col[row]
        if failed_col[row]:  # the kernel refused this map
            if ours is None:
                out.failed_reproduced += 1
                continue
            mismatch(row, ours)
            hiwater = mem.used_hiwater
            release(dev, ours)  # no unmap follows a failed map
            if decide:
                mem.used_hiwater = hiwater  # the kernel never held these slots
            continue
        if ours == kernel:
            out.address_matches += 1
            held[row] = ours
        else:
            mismatch(row, ours)
            if decide:
                hiwater = mem.used_hiwater
                if ours is not None:
                    release(dev, ours)
                mem.used_hiwater = hiwater
                if not claim(row, dev, orig, size, kernel, cpu):
                    out.unresolved += 1
            elif ours is not None:
                held[row] = ours
        if unmap_line[row] >= 0:
            heapq.heappush(frees, (unmap_line[row], entry_col[row], row))
    while frees:
        free_row(heapq.heappop(frees)[2])
    while mi < len(marks):
        _, begin, name = marks[mi]
        if not begin:
            out.workload_hiwater[name] = mem.used_hiwater
        mi += 1
    out.hiwater = max(out.workload_hiwater.values(), default=mem.used_hiwater)
    return out


def replay_fidelity(
    trace: CanonicalTrace,
    pool: PoolLayout,
    *,
    meta: CaptureMeta | None = None,
    masks: dict[str, int] | None = None,
    profile: str = "v6.12",
) -> FidelityResult:
    """Replay ``trace`` on one static pool laid out as ``pool`` and compare with the kernel."""
    inferred = infer_min_align_masks(trace, pool=pool)
    if masks:
        unknown = sorted(set(masks) - set(trace.devices))
        if unknown:
            raise ValueError(f"device mask given for {', '.join(unknown)}, which the trace never maps "
                             f"(devices: {', '.join(trace.devices)})")
        inferred.update(masks)
    devs = {name: DeviceParams(m, PCI_SEG_BOUNDARY) for name, m in inferred.items()}
    for name in trace.names["device"]:
        devs.setdefault(name, DeviceParams(0, PCI_SEG_BOUNDARY))
    cols = trace.columns
    orphan_code = trace.names["kind"].index("orphan") if "orphan" in trace.names["kind"] else -1
    n = len(trace)
    maps = sum(1 for i in range(n) if cols["kind"][i] != orphan_code)
    through = bounced_rows(trace, pool)
    bounced = sum(1 for i in range(n) if cols["kind"][i] != orphan_code and through[i])
    checked = sum(
        1 for i in range(n)
        if cols["kind"][i] != orphan_code and through[i] and cols["dma_addr"][i] >= 0
    )
    failed = sum(1 for i in range(n) if cols["kind"][i] != orphan_code and cols["failed"][i])
    lo, hi = pool.start, pool.end
    outside = sum(
        1 for i in range(n)
        if cols["bounced"][i] and cols["dma_addr"][i] >= 0 and not lo <= cols["dma_addr"][i] < hi
    )
    if outside:
        raise ValueError(
            f"{outside} bounce addresses of the trace lie outside the pool {lo:#x}-{hi - 1:#x}: "
            "wrong --pool or metadata for this trace"
        )
    straight = _one_pass(trace, pool, devs, profile, False, through)
    decision = _one_pass(trace, pool, devs, profile, True, through)
    lost = int(trace.info.get("lost_events", 0) or 0)
    if meta is not None:
        lost = max(lost, meta.lost_events)
    return FidelityResult(
        source=trace.source, pool=pool, profile=profile, masks=inferred, maps=maps,
        bounced_maps=bounced, address_checked=checked, kernel_failed_maps=failed,
        orphan_entries=n - maps, lost_events=lost, straight=straight, decision=decision,
        kernel_workload_hiwater=dict(meta.workload_hiwater) if meta else {},
        buffer_full_lines=list(meta.buffer_full_lines) if meta else [],
        trace=trace,
    )



NEAR_NS = 10_000  # events closer than this on different CPUs may have happened the other way round
STALL_NS = 100_000  # plus 1 ns per byte mapped (the bounce copy: ~0.2 ms for 256 KiB under TCG)
FOLLOW_ROWS = 64  # a difference this close after another is taken as its consequence


class _Context:
    """Time-sorted views of a trace's allocations and releases, for :func:`classify_mismatch`."""

    def __init__(self, trace: CanonicalTrace) -> None:
        cols = trace.columns
        self.cols = cols
        self.alloc_ns = cols["alloc_ns"]  # rows are in file order, so this is sorted
        frees = sorted(
            (cols["unmap_ns"][i], cols["unmap_cpu"][i], cols["unmap_line"][i])
            for i in range(len(trace)) if cols["unmap_line"][i] >= 0
        )
        self.free_ns = [f[0] for f in frees]
        self.frees = frees


def classify_mismatch(ctx: _Context, row: int, previous: list[int]) -> str:
    """Why one decision differs, from what the trace shows around it (docs/fidelity.md):

    * ``cross_cpu_allocation``: another CPU's bounced line lies within 10 µs;
    * ``cross_cpu_release``: another CPU's unmap is logged within 10 µs after;
    * ``same_cpu_interrupt``: an unmap on the same CPU is logged between the bounced line and
      the map line (an interrupt inside the map, whose release may have come first);
    * ``vcpu_stall``: the map line came over 100 µs plus 1 ns per byte after the bounced line
      (longer than the bounce copy takes), so the vCPU was descheduled in between;
    * ``follow_on``: a difference of the kinds above happened within the previous 64 rows;
    * ``unexplained``: none of these.
    """
    from bisect import bisect_left, bisect_right

    c = ctx.cols
    t, cpu, line, map_line = c["alloc_ns"][row], c["cpu"][row], c["alloc_line"][row], c["map_line"][row]
    lo = bisect_left(ctx.alloc_ns, t - NEAR_NS)
    hi = bisect_right(ctx.alloc_ns, t + NEAR_NS)
    if any(c["cpu"][i] != cpu for i in range(lo, hi) if c["bounced"][i]):
        return "cross_cpu_allocation"
    lo = bisect_left(ctx.free_ns, t)
    hi = bisect_right(ctx.free_ns, t + NEAR_NS)
    if any(ctx.frees[i][1] != cpu for i in range(lo, hi)):
        return "cross_cpu_release"
    if any(ctx.frees[i][1] == cpu and line < ctx.frees[i][2] < map_line for i in range(lo, len(ctx.free_ns))
           if ctx.free_ns[i] <= c["map_ns"][row]):
        return "same_cpu_interrupt"
    if map_line >= 0 and c["map_ns"][row] - t > STALL_NS + c["size"][row]:
        return "vcpu_stall"
    if previous and row - previous[-1] <= FOLLOW_ROWS:
        return "follow_on"
    return "unexplained"
