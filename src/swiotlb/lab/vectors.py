"""Replay of the kernel's golden slot-allocator vectors (``swiotlb vectors check``).

Each case is replayed on a fresh :class:`~swiotlb.core.IoTlbMem` with the profile the case
names (``profile``; none means the v6.6 generation). The first disagreement with the kernel's
recorded answer is reported with the op that caused it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from swiotlb.core import DeviceParams, IoTlbMem, IoTlbPool, KernelProfile, SlotMapping, get_profile

LEGACY_PROFILE = "v6.6"  # cases without a "profile" field come from the 6.7 merge window


class VectorFormatError(ValueError):
    """A vector file line that is not a valid case (names file and line)."""


@dataclass(frozen=True, slots=True)
class CaseResult:
    name: str
    source: str
    ops: int
    mismatch: str | None

    @property
    def passed(self) -> bool:
        return self.mismatch is None


def iter_cases(paths: Iterable[str | Path]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``("file:line", case)`` for every case in files or directories of ``*.jsonl``."""
    for path in paths:
        p = Path(path)
        if p.is_dir():
            files = sorted(p.glob("*.jsonl"))
            if not files:
                raise FileNotFoundError(f"{p}: no *.jsonl vector files in this directory")
        elif p.exists():
            files = [p]
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
        for f in files:
            with f.open("rb") as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    where = f"{f}:{lineno}"
                    try:
                        case = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise VectorFormatError(f"{where}: not valid JSON: {exc.msg}") from None
                    if not isinstance(case, dict) or "ops" not in case or "pools" not in case:
                        raise VectorFormatError(f"{where}: not a vector case (needs 'pools' and 'ops')")
                    yield where, case


def list_sha256(values: Iterable[int]) -> str:
    return hashlib.sha256(",".join(map(str, values)).encode()).hexdigest()


def _fmt_expect(tlb: int | None, pool: int | None, index: int | None, pad: int | None) -> str:
    if tlb is None:
        return "failure"
    text = f"tlb_addr={tlb:#x} pool={pool} index={index}"
    return text + (f" pad_slots={pad}" if pad is not None else "")


def replay_case(
    case: dict[str, Any], profile: KernelProfile | str | None = None, *, fast: bool = True,
    source: str = "",
) -> CaseResult:
    """Replay one case; ``profile`` overrides the case's own."""
    name = str(case.get("name", "?"))
    try:
        prof = get_profile(profile or case.get("profile") or LEGACY_PROFILE)
        pools = [
            IoTlbPool(p["start"], p["nslabs"], p["nareas"], list_capped=prof.list_capped)
            for p in case["pools"]
        ]
        dev = DeviceParams(case["device"]["min_align_mask"], case["device"]["seg_boundary_mask"])
        ops = case["ops"]
    except (KeyError, TypeError, ValueError) as exc:
        raise VectorFormatError(f"{source or name}: malformed case: {exc}") from None
    try:
        mem = IoTlbMem(pools, prof, dynamic=prof.dynamic_available, can_grow=False, fast=fast)
    except ValueError as exc:  # e.g. several pools or areas under a one-lock generation
        return CaseResult(name, source, 0, f"kernel profile {prof.name} cannot hold this case's pools: {exc}")
    pool_index = {id(p): i for i, p in enumerate(pools)}
    live: dict[int, SlotMapping] = {}
    for k, op in enumerate(ops):
        kind = op.get("op")
        if kind == "map":
            alloc_size = op.get("alloc_size") if prof.alloc_size_arg else None
            res = mem.tbl_map_single(
                dev, op["orig_addr"], op["mapping_size"], op["alloc_align_mask"],
                cpu=op["cpu"], alloc_size=alloc_size,
            )
            exp = op["expect"]
            want_pad = exp.get("pad_slots")
            got: tuple[int | None, int | None, int | None, int | None]
            if isinstance(res, SlotMapping):
                live[op["id"]] = res
                got = (res.tlb_addr, pool_index[id(res.pool)], res.index,
                       res.pad_slots if "pad_slots" in exp else None)
            else:
                got = (None, None, None, None)
            want = (exp["tlb_addr"], exp["pool"], exp["index"], want_pad)
            if got != want:
                return CaseResult(name, source, k, (
                    f"op {k} (map id={op['id']} cpu={op['cpu']} orig_addr={op['orig_addr']:#x} "
                    f"mapping_size={op['mapping_size']} alloc_align_mask={op['alloc_align_mask']:#x}): "
                    f"expected {_fmt_expect(*want)}, got {_fmt_expect(*got)}"
                ))
        elif kind == "unmap":
            m = live.pop(op["id"], None)
            if m is None:
                return CaseResult(name, source, k, f"op {k} (unmap id={op['id']}): no live mapping with that id")
            mem.release_slots(dev, m.tlb_addr, m.pool)
        else:
            raise VectorFormatError(f"{source or name}: op {k} has unknown kind {kind!r}")
    for i, (pool, want) in enumerate(zip(pools, case["final"]["pools"])):
        got_used = [a.used for a in pool.areas]
        got_index = [a.index for a in pool.areas]
        if got_used != want["used"]:
            return CaseResult(name, source, len(ops), f"final pool {i}: used expected {want['used']}, got {got_used}")
        if got_index != want["index"]:
            return CaseResult(name, source, len(ops), f"final pool {i}: index expected {want['index']}, got {got_index}")
        if "list" in want and list(pool.list) != want["list"]:
            first = next(j for j, (a, b) in enumerate(zip(pool.list, want["list"])) if a != b)
            return CaseResult(name, source, len(ops), (
                f"final pool {i}: list[{first}] expected {want['list'][first]}, got {pool.list[first]}"
            ))
        if list_sha256(pool.list) != want["list_sha256"]:
            return CaseResult(name, source, len(ops), f"final pool {i}: list_sha256 differs")
    return CaseResult(name, source, len(ops), None)


def check_paths(
    paths: Iterable[str | Path], profile: str | None = None, *, fast: bool = True
) -> Iterator[CaseResult]:
    for where, case in iter_cases(paths):
        yield replay_case(case, profile, fast=fast, source=where)
