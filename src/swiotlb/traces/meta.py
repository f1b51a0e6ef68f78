"""A capture's metadata: the kernel's pool, its command line, counters per workload.

Read from the ``NAME.meta.json`` the capture script writes (the layout of ../shared/traces/real),
or built from the kernel log lines alone: ``software IO TLB: mapped [mem A-B]``,
``software IO TLB: area num N.`` and, under ``memblock=debug``, the ``memblock_reserve`` that
follows the ``swiotlb_init_remap`` allocation (x86 guests below 4 GiB print no range).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swiotlb.core.constants import IO_TLB_SHIFT
from swiotlb.core.sizing import parse_cmdline

_MAPPED = re.compile(r"software IO TLB: mapped \[mem (0x[0-9a-fA-F]+)-(0x[0-9a-fA-F]+)\]")
_AREAS = re.compile(r"software IO TLB: area num (\d+)")
_RESERVE = re.compile(r"memblock_reserve: \[(0x[0-9a-fA-F]+)-(0x[0-9a-fA-F]+)\]")


class MetaError(ValueError):
    """Metadata that is missing or inconsistent (names the file and the key)."""


@dataclass(frozen=True)
class PoolLayout:
    """The default pool as the kernel laid it out: where, how many slots, how many areas."""

    start: int
    nslabs: int
    nareas: int
    source: str = ""

    @property
    def end(self) -> int:
        return self.start + (self.nslabs << IO_TLB_SHIFT)

    def to_json(self) -> dict[str, Any]:
        return {"start": hex(self.start), "nslabs": self.nslabs, "nareas": self.nareas, "source": self.source}


@dataclass
class CaptureMeta:
    """What the replay and the advice need from a capture's metadata."""

    path: str = ""
    pool: PoolLayout | None = None
    cmdline: str = ""
    kernel_release: str = ""
    ram_bytes: int | None = None
    cpus: int | None = None
    workload_hiwater: dict[str, int] = field(default_factory=dict)  # debugfs "after", per workload
    lost_events: int = 0
    per_cpu_overrun: dict[str, int] = field(default_factory=dict)
    buffer_full_lines: list[str] = field(default_factory=list)

    @property
    def force(self) -> bool:
        param = parse_cmdline(self.cmdline) if self.cmdline else None
        return bool(param is not None and param.force)


def pool_from_log(lines: list[str], nslabs_hint: int | None = None) -> PoolLayout | None:
    """The pool from kernel log lines (``mapped [mem ...]`` or the memblock=debug lines)."""
    nareas = 1
    for line in lines:
        m = _AREAS.search(line)
        if m:
            nareas = int(m[1])
    for line in lines:
        m = _MAPPED.search(line)
        if m:
            start, end = int(m[1], 16), int(m[2], 16)
            return PoolLayout(start, (end + 1 - start) >> IO_TLB_SHIFT, nareas, "dmesg 'mapped [mem ...]'")
    after_remap = False
    for line in lines:
        if "swiotlb_init_remap" in line and "memblock_alloc" in line:
            after_remap = True
            continue
        if after_remap:
            m = _RESERVE.search(line)
            if m:
                start, end = int(m[1], 16), int(m[2], 16)
                nslabs = (end + 1 - start) >> IO_TLB_SHIFT
                if nslabs_hint is None or nslabs == nslabs_hint:
                    return PoolLayout(start, nslabs, nareas, "memblock=debug reserve after swiotlb_init_remap")
                after_remap = False
    return None


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise MetaError(f"{where}: expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            pass
    raise MetaError(f"{where}: expected an integer, got {value!r}")


def load_meta(path: str | Path) -> CaptureMeta:
    """Read a capture's ``meta.json``; a missing or wrong key is a :class:`MetaError`."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MetaError(f"{p}: cannot read capture metadata: {exc}") from None
    if not isinstance(data, dict):
        raise MetaError(f"{p}: expected a JSON object")
    meta = CaptureMeta(path=str(p))
    sw = data.get("swiotlb") or {}
    guest = data.get("guest") or {}
    meta.cmdline = str(guest.get("kernel_cmdline", ""))
    meta.kernel_release = str((data.get("kernel") or {}).get("release", ""))
    if guest.get("ram_mb") is not None:
        meta.ram_bytes = _int(guest["ram_mb"], f"{p}: guest.ram_mb") << 20
    if guest.get("vcpus") is not None:
        meta.cpus = _int(guest["vcpus"], f"{p}: guest.vcpus")
    lines = [str(x) for x in sw.get("dmesg_lines_all") or sw.get("dmesg_lines_boot") or []]
    lines += [str(x) for x in sw.get("memblock_debug_lines") or []]
    meta.buffer_full_lines = [x for x in lines if "swiotlb buffer is full" in x]
    nslabs = _int(sw["io_tlb_nslabs"], f"{p}: swiotlb.io_tlb_nslabs") if "io_tlb_nslabs" in sw else None
    if "pool_phys_start" in sw and nslabs is not None:
        start = _int(sw["pool_phys_start"], f"{p}: swiotlb.pool_phys_start")
        nareas = _int(sw.get("area_num", 1), f"{p}: swiotlb.area_num")
        meta.pool = PoolLayout(start, nslabs, nareas, f"{p.name}: swiotlb.pool_phys_start")
    else:
        meta.pool = pool_from_log(lines, nslabs)
    for i, w in enumerate(data.get("workloads") or []):
        try:
            name = str(w["name"])
            after = w["swiotlb_debugfs"]["after"]
        except (KeyError, TypeError):
            continue
        if isinstance(after, dict) and "io_tlb_used_hiwater" in after:
            meta.workload_hiwater[name] = _int(
                after["io_tlb_used_hiwater"], f"{p}: workloads[{i}].swiotlb_debugfs.after.io_tlb_used_hiwater"
            )
    tracing = data.get("tracing") or {}
    if tracing.get("lost_events") is not None:
        meta.lost_events = _int(tracing["lost_events"], f"{p}: tracing.lost_events")
    for cpu, stats in (tracing.get("per_cpu_stats") or {}).items():
        if isinstance(stats, dict):
            meta.per_cpu_overrun[str(cpu)] = _int(stats.get("overrun", 0), f"{p}: tracing.per_cpu_stats.{cpu}.overrun")
    return meta


def parse_pool_option(text: str) -> PoolLayout:
    """``START:SIZE[:AREAS]`` from the command line (SIZE in slots, or bytes with K/M/G)."""
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise MetaError(f"--pool {text!r}: expected START:SIZE[:AREAS], e.g. 0x6fa00000:64M:1")
    try:
        start = int(parts[0], 0)
        size = parts[1].strip()
        units = {"K": 10, "M": 20, "G": 30}
        if size[-1:].upper() in units:
            nslabs = (int(size[:-1], 0) << units[size[-1].upper()]) >> IO_TLB_SHIFT
        else:
            nslabs = int(size, 0)
        nareas = int(parts[2], 0) if len(parts) == 3 else 1
    except (ValueError, IndexError):
        raise MetaError(f"--pool {text!r}: expected START:SIZE[:AREAS], e.g. 0x6fa00000:64M:1") from None
    return PoolLayout(start, nslabs, nareas, "--pool")
