"""Capture metadata: the pool from the meta keys, from dmesg lines, or from --pool."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from swiotlb.traces.meta import MetaError, load_meta, parse_pool_option, pool_from_log


def test_pool_from_memblock_debug_lines() -> None:
    lines = [
        "[    0.252496] software IO TLB: area num 2.",
        "[    0.252576] memblock_alloc_try_nid: 2097152 bytes align=0x1000 nid=-1 from=0x0 "
        "max_addr=0x00000000ffffffff swiotlb_init_remap+0xf2/0x300",
        "[    0.252637] memblock_reserve: [0x0000000076a00000-0x0000000076bfffff] memblock_alloc_range_nid+0xbd/0x180",
    ]
    pool = pool_from_log(lines)
    assert pool is not None and (pool.start, pool.nslabs, pool.nareas) == (0x76A00000, 1024, 2)


def test_pool_from_mapped_line() -> None:
    pool = pool_from_log(["software IO TLB: mapped [mem 0x00000000bbfd0000-0x00000000bffcffff] (64MB)"])
    assert pool is not None and (pool.start, pool.nslabs, pool.nareas) == (0xBBFD0000, 32768, 1)


def test_meta_file(tmp_path: Path) -> None:
    p = tmp_path / "m.meta.json"
    p.write_text(json.dumps({
        "guest": {"kernel_cmdline": "console=ttyS0 swiotlb=1024,force", "vcpus": 2, "ram_mb": 2048},
        "swiotlb": {"pool_phys_start": "0x76a00000", "io_tlb_nslabs": 1024, "area_num": 2},
        "workloads": [{"name": "w", "swiotlb_debugfs": {"after": {"io_tlb_used_hiwater": 17}}}],
        "tracing": {"lost_events": 3, "per_cpu_stats": {"cpu0": {"overrun": 3}}},
    }))
    meta = load_meta(p)
    assert meta.pool is not None and (meta.pool.start, meta.pool.nslabs, meta.pool.nareas) == (0x76A00000, 1024, 2)
    assert meta.force and meta.cpus == 2 and meta.ram_bytes == 2 << 30
    assert meta.workload_hiwater == {"w": 17} and meta.lost_events == 3 and meta.per_cpu_overrun == {"cpu0": 3}
    p.write_text(json.dumps({"swiotlb": {"pool_phys_start": "zz", "io_tlb_nslabs": 1}}))
    with pytest.raises(MetaError, match=r"m\.meta\.json: swiotlb\.pool_phys_start"):
        load_meta(p)


def test_pool_option() -> None:
    assert parse_pool_option("0x6fa00000:64M:1").nslabs == 32768
    assert parse_pool_option("0x1000:1024:2").nareas == 2
    with pytest.raises(MetaError, match="START:SIZE"):
        parse_pool_option("0x1000")
