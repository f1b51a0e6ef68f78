"""``IoTlbMem``: the kernel's map, release, bounce arithmetic and counters (spec §1.6, §3, §4.1).

The worked examples of spec §3.5 are replayed exactly; the other tests pin one rule each and
compare with values derived by hand from the kernel code quoted in the spec.
"""

from __future__ import annotations

import pytest

from swiotlb.core import (
    BounceSpan,
    DeviceParams,
    IoTlbMem,
    IoTlbPool,
    MapFailure,
    MapRefused,
    PoolLayoutError,
    ReleaseError,
    SlotMapping,
)
from swiotlb.core.constants import INVALID_PHYS_ADDR, IO_TLB_SIZE
from swiotlb.core.profiles import V5_15, V6_6, V6_12, KernelProfile
from swiotlb.core.search import SearchDeadlock

START = 0x8000_0000
DEV0 = DeviceParams()  # no dma_parms: min_align 0, boundary ULONG_MAX
NVME = DeviceParams(min_align_mask=0xFFF)


# -- helpers -------------------------------------------------------------------------------


def slot_fields(pool: IoTlbPool, i: int) -> tuple[int, int, int]:
    """``(orig_addr, alloc_size, pad_slots)`` of kernel slot ``i`` (spec §2.1)."""
    return pool.slot_orig_addr(i), pool.slot_alloc_size(i), pool.pad_slots[i]


def snapshot(mem: IoTlbMem) -> tuple[object, ...]:
    """Everything a caller can observe about the slot state and the counters."""
    pools = tuple(
        (bytes(p.list), tuple((a.index, a.used) for a in p.areas),
         tuple(slot_fields(p, i) for i in range(p.nslabs)))
        for p in mem.pools
    )
    return pools, tuple(sorted(mem.counters().items())), mem.used_hiwater


def mapped(result: SlotMapping | MapRefused) -> SlotMapping:
    assert isinstance(result, SlotMapping), result
    return result


def refused(result: SlotMapping | MapRefused) -> MapRefused:
    assert isinstance(result, MapRefused), result
    return result


def fresh_list(nslabs: int) -> bytes:
    return bytes(128 - (i % 128) for i in range(nslabs))


# -- spec §3.5 worked examples -------------------------------------------------------------


class WorkedExamples:
    """Pool of 32768 slots at 0x8000_0000, 4 areas, v6.12 rules; CPU 5 -> area 1."""

    def __init__(self) -> None:
        self.pool = IoTlbPool(START, 32768, 4)
        self.mem = IoTlbMem([self.pool], V6_12)
        self.area = self.pool.areas[1]
        self.maps: dict[int, SlotMapping] = {}

    def run(self, upto: int) -> None:
        steps = {
            1: lambda: self.mem.tbl_map_single(DEV0, 0x1000, 4096, 0, cpu=5),
            2: lambda: self.mem.tbl_map_single(DEV0, 0x2000_0064, 100, 0, cpu=5),
            3: lambda: self.mem.tbl_map_single(NVME, 0x7654_0A00, 8192, 0, cpu=5),
            4: lambda: self.mem.release_slots(DEV0, self.maps[1].tlb_addr),
            5: lambda: self.mem.tbl_map_single(NVME, 0x1234_5A00, 3000, 0xFFF, cpu=5),
        }
        for k in range(1, upto + 1):
            res = steps[k]()
            if k != 4:
                self.maps[k] = mapped(res)
            else:
                assert res == 2


def test_example_1_page_rule() -> None:
    ex = WorkedExamples()
    ex.run(1)
    m = ex.maps[1]
    assert (m.tlb_addr, m.index, m.pad_slots, m.nslots, m.size) == (0x8100_0000, 8192, 0, 2, 4096)
    assert m.pool is ex.pool
    assert (ex.area.index, ex.area.used) == (2, 2)
    assert [(a.index, a.used) for a in ex.pool.areas] == [(0, 0), (2, 2), (0, 0), (0, 0)]
    assert list(ex.pool.list[8190:8195]) == [2, 1, 0, 0, 126]  # backward loop stopped at 8191
    assert slot_fields(ex.pool, 8192) == (0x1000, 4096, 0)
    assert slot_fields(ex.pool, 8193) == (0x1800, 2048, 0)
    assert ex.mem.counters()["io_tlb_used"] == 2


def test_example_2_small_map_is_slot_aligned_only() -> None:
    ex = WorkedExamples()
    ex.run(2)
    m = ex.maps[2]
    assert (m.tlb_addr, m.index, m.nslots) == (0x8100_1000, 8194, 1)
    assert (ex.area.index, ex.area.used) == (3, 3)
    assert list(ex.pool.list[8192:8196]) == [0, 0, 0, 125]
    assert slot_fields(ex.pool, 8194) == (0x2000_0064, 100, 0)


def test_example_3_nvme_min_align_picks_an_odd_slot() -> None:
    ex = WorkedExamples()
    ex.run(3)
    m = ex.maps[3]
    # low = 0x200, size 8704, 5 slots; iotlb mask 0x800 -> odd slot; stride 2 from index 3.
    assert (m.tlb_addr, m.index, m.pad_slots, m.nslots, m.size) == (0x8100_1A00, 8195, 0, 5, 8704)
    assert m.tlb_addr & 0xFFF == 0xA00
    assert (ex.area.index, ex.area.used) == (8, 8)  # area-relative: pool slot 8200
    assert list(ex.pool.list[8195:8201]) == [0, 0, 0, 0, 0, 120]
    assert slot_fields(ex.pool, 8195) == (0x7654_0A00, 8192, 0)
    assert slot_fields(ex.pool, 8199) == (0x7654_0A00 + 4 * 2048, 8192 - 4 * 2048, 0)


def test_example_4_release_restores_the_run() -> None:
    ex = WorkedExamples()
    ex.run(4)
    assert list(ex.pool.list[8190:8195]) == [2, 1, 2, 1, 0]  # 8194 still in use: count starts 0
    assert (ex.area.index, ex.area.used) == (8, 6)  # release never moves the cursor
    assert slot_fields(ex.pool, 8192) == (INVALID_PHYS_ADDR, 0, 0)
    assert slot_fields(ex.pool, 8193) == (INVALID_PHYS_ADDR, 0, 0)
    assert ex.mem.counters()["io_tlb_used"] == 6


def test_example_5_iommu_padding_slot() -> None:
    ex = WorkedExamples()
    ex.run(5)
    m = ex.maps[5]
    # offset 0xA00 -> pad 1, low 0x200; size align_up(3000 + 0xA00, 0x1000) = 8192, 4 slots.
    assert (m.tlb_addr, m.index, m.pad_slots, m.nslots, m.size) == (0x8100_4A00, 8201, 1, 4, 8192)
    assert (ex.area.index, ex.area.used) == (12, 10)  # area-relative: pool slot 8204
    assert list(ex.pool.list[8199:8205]) == [0, 0, 0, 0, 0, 116]
    assert slot_fields(ex.pool, 8200) == (INVALID_PHYS_ADDR, 8192 - 0x200, 0)  # the pad slot
    assert slot_fields(ex.pool, 8201) == (0x1234_5A00, 8192 - 0x200 - 2048, 1)
    assert slot_fields(ex.pool, 8203) == (0x1234_5A00 + 2 * 2048, 8192 - 0x200 - 3 * 2048, 0)
    assert ex.mem.bounce_target(NVME, START + 8200 * IO_TLB_SIZE, 16) is None  # pad: no copy
    # Release recovers the first allocated slot (8200) and the count (4).
    assert ex.mem.release_slots(NVME, m.tlb_addr) == 4
    assert list(ex.pool.list[8199:8205]) == [0, 120, 119, 118, 117, 116]
    assert slot_fields(ex.pool, 8201) == (INVALID_PHYS_ADDR, 0, 0)
    assert (ex.area.index, ex.area.used) == (12, 6)
    assert ex.pool.free_run_errors() == []


# -- release -------------------------------------------------------------------------------


def _mem(nslabs: int = 256, nareas: int = 1, profile: KernelProfile = V6_12) -> IoTlbMem:
    return IoTlbMem([IoTlbPool(START, nslabs, nareas)], profile)


def test_release_merges_following_then_preceding_runs() -> None:
    mem = _mem()
    pool = mem.pools[0]
    a, b, c = (mapped(mem.tbl_map_single(DEV0, 0x10_0000, 10 * IO_TLB_SIZE)) for _ in range(3))
    assert (a.index, b.index, c.index) == (0, 10, 20)
    mem.release_slots(DEV0, a.tlb_addr)
    assert list(pool.list[0:11]) == [10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    mem.release_slots(DEV0, c.tlb_addr)  # merges with the run after it (98 slots)
    assert list(pool.list[19:31]) == [0] + list(range(108, 97, -1))
    mem.release_slots(DEV0, b.tlb_addr)  # merges both ways
    assert bytes(pool.list) == fresh_list(256)
    assert mem.check_invariants() == []


def test_release_never_merges_across_a_segment() -> None:
    mem = _mem()
    pool = mem.pools[0]
    a = mapped(mem.tbl_map_single(DEV0, 0x10_0000, 127 * IO_TLB_SIZE))
    b = mapped(mem.tbl_map_single(DEV0, 0x10_0000, 100))
    c = mapped(mem.tbl_map_single(DEV0, 0x10_0000, 128 * IO_TLB_SIZE))
    assert (a.index, b.index, c.index) == (0, 127, 128)
    mem.release_slots(DEV0, b.tlb_addr)
    assert pool.list[127] == 1  # slot 128 (next segment) is not looked at
    mem.release_slots(DEV0, c.tlb_addr)
    assert pool.list[127] == 1 and pool.list[128] == 128  # 127 is not extended to 129
    mem.release_slots(DEV0, a.tlb_addr)
    assert bytes(pool.list) == fresh_list(256)


@pytest.mark.parametrize("what", ["outside", "free_slot", "twice", "interior", "pad_slot"])
def test_release_of_a_non_live_address_changes_nothing(what: str) -> None:
    mem = _mem(512, 2)
    m = mapped(mem.tbl_map_single(NVME, 0x1234_5A00, 3 * IO_TLB_SIZE, 0xFFF))
    other = mapped(mem.tbl_map_single(DEV0, 0x4000, 100))
    assert m.pad_slots == 1
    addr = {
        "outside": START - IO_TLB_SIZE,
        "free_slot": START + 300 * IO_TLB_SIZE,
        "twice": other.tlb_addr,
        "interior": m.tlb_addr + IO_TLB_SIZE,
        "pad_slot": START + (m.index - 1) * IO_TLB_SIZE,
    }[what]
    if what == "twice":
        mem.release_slots(DEV0, other.tlb_addr)
    before = snapshot(mem)
    with pytest.raises(ReleaseError):
        mem.release_slots(NVME if what in ("interior", "pad_slot") else DEV0, addr)
    assert snapshot(mem) == before
    assert m.nslots == 6  # align_up(6144 + 0xA00, 4096) = 12288
    assert mem.release_slots(NVME, m.tlb_addr) == 6  # the real buffer is still releasable


# -- counters ------------------------------------------------------------------------------


def test_used_and_hiwater_counters() -> None:
    mem = _mem(1024)
    assert mem.counters() == {"io_tlb_nslabs": 1024, "io_tlb_used": 0, "io_tlb_used_hiwater": 0}
    a = mapped(mem.tbl_map_single(DEV0, 0x1000, 5000))
    mapped(mem.tbl_map_single(DEV0, 0x1000, 10 * IO_TLB_SIZE))
    assert mem.counters()["io_tlb_used"] == 13 and mem.used == 13
    mem.release_slots(DEV0, a.tlb_addr)
    assert mem.counters() == {"io_tlb_nslabs": 1024, "io_tlb_used": 10, "io_tlb_used_hiwater": 13}
    refused(mem.tbl_map_single(DEV0, 0x1000, 300_000))
    assert mem.counters()["io_tlb_used"] == 10
    with pytest.raises(ValueError):
        mem.reset_hiwater(5)  # -EINVAL: unchanged
    assert mem.counters()["io_tlb_used_hiwater"] == 13
    mem.reset_hiwater(0)
    assert mem.counters()["io_tlb_used_hiwater"] == 0 and mem.used == 10
    mapped(mem.tbl_map_single(DEV0, 0x1000, 100))
    assert mem.counters()["io_tlb_used_hiwater"] == 11


def test_counter_files_per_profile() -> None:
    assert set(_mem(profile=V5_15).counters()) == {"io_tlb_nslabs", "io_tlb_used"}
    two = [IoTlbPool(START, 256, 1), IoTlbPool(START + (1 << 24), 256, 1)]
    assert "io_tlb_transient_nslabs" in IoTlbMem(two, V6_12).counters()
    two = [IoTlbPool(START, 256, 1), IoTlbPool(START + (1 << 24), 256, 1)]
    counters = IoTlbMem(two, V6_6).counters()
    assert "io_tlb_transient_nslabs" not in counters and counters["io_tlb_nslabs"] == 512


# -- refusals ------------------------------------------------------------------------------


def test_refused_full() -> None:
    mem = _mem(128)
    mapped(mem.tbl_map_single(DEV0, 0x1000, 128 * IO_TLB_SIZE))
    before = snapshot(mem)
    r = refused(mem.tbl_map_single(DEV0, 0x1000, 1))
    assert (r.cause, r.size, r.total, r.used) == (MapFailure.FULL, 1, 128, 128)
    assert r.message == "swiotlb buffer is full (sz: 1 bytes), total 128 (slots), used 128 (slots)"
    assert snapshot(mem) == before


@pytest.mark.parametrize(
    ("dev", "orig", "size", "cause"),
    [
        (DEV0, 0x1000, 262_144, None),
        (DEV0, 0x1000, 262_145, MapFailure.TOO_LARGE),
        (NVME, 0x1800, 262_144 - 2048, None),  # bit 11 is matched by the slot, no offset
        (NVME, 0x1200, 262_144 - 1024, None),  # + 0x200 offset: 127.75 -> 128 slots
        (NVME, 0x1200, 262_144 - 256, MapFailure.TOO_LARGE),  # + 0x200 offset -> 129 slots
        (DeviceParams(0, 0xFFFF), 0x1000, 65_536, None),
        (DeviceParams(0, 0xFFFF), 0x1000, 65_537, MapFailure.TOO_LARGE),  # 33 > 32-slot window
    ],
)
def test_refused_too_large(dev: DeviceParams, orig: int, size: int, cause: MapFailure | None) -> None:
    mem = _mem(512)
    before = snapshot(mem)
    res = mem.tbl_map_single(dev, orig, size)
    if cause is None:
        assert isinstance(res, SlotMapping)
    else:
        assert refused(res).cause is cause
        assert snapshot(mem) == before


def test_refused_no_pool() -> None:
    r = refused(IoTlbMem([], V6_12).tbl_map_single(DEV0, 0x1000, 100))
    assert r.cause is MapFailure.NO_POOL and r.message.startswith("Can not allocate SWIOTLB buffer")


def test_v6_6_rejects_mapping_larger_than_alloc_and_changes_nothing() -> None:
    mem = _mem(256, 1, V6_6)
    mapped(mem.tbl_map_single(DEV0, 0x1000, 100, alloc_size=100))
    before = snapshot(mem)
    r = refused(mem.tbl_map_single(DEV0, 0x2000, 4096, alloc_size=2048))
    assert r.cause is MapFailure.INVALID_SIZES
    assert snapshot(mem) == before
    # alloc_size larger than mapping_size is what the IOMMU path passes: 4 slots.
    m = mapped(mem.tbl_map_single(DEV0, 0x2000, 100, alloc_size=8192))
    assert m.nslots == 4


def test_v6_6_invalid_sizes_message_is_the_kernels() -> None:
    r = refused(_mem(256, 1, V6_6).tbl_map_single(DEV0, 0x2000, 4096, alloc_size=2048))
    assert r.message == "Invalid sizes (mapping: 4096 bytes, alloc: 2048 bytes)"


def test_alloc_size_argument_only_before_6_10() -> None:
    with pytest.raises(TypeError):
        _mem().tbl_map_single(DEV0, 0x1000, 100, alloc_size=100)


def test_full_message_prints_the_callers_alloc_size_under_v6_6() -> None:
    """6.6 prints alloc_size (not alloc_size + offset); 6.12 prints the padded, rounded size."""
    for profile, shown in ((V6_6, 4096), (V6_12, 4096 + 0x200)):
        mem = _mem(128, 1, profile)
        mapped(mem.tbl_map_single(DEV0, 0x1000, 128 * IO_TLB_SIZE))
        if profile is V6_6:
            r = refused(mem.tbl_map_single(NVME, 0x7000_0A00, 4096, alloc_size=4096))
        else:
            r = refused(mem.tbl_map_single(NVME, 0x7000_0A00, 4096))
        assert (r.cause, r.size) == (MapFailure.FULL, shown), profile.name


# -- bounce arithmetic (spec §4.1) ---------------------------------------------------------


@pytest.mark.parametrize("align", [0, 0xFFF])
def test_v6_12_partial_sync_maps_every_byte(align: int) -> None:
    mem = _mem(512)
    orig, size = 0x1234_5A00, 10_000
    m = mapped(mem.tbl_map_single(NVME, orig, size, align))
    assert m.pad_slots == (1 if align else 0)
    end = m.size - (orig & 0xFFF & (align | 0x7FF))  # bytes from tlb_addr to the allocation end
    for k in range(size):
        span = mem.bounce_target(NVME, m.tlb_addr + k, size - k)
        assert span == BounceSpan(orig + k, m.tlb_addr + k, size - k), k
    over = mem.bounce_target(NVME, m.tlb_addr + 5000, end - 5000 + 1)
    assert over is not None and over.nbytes == end - 5000
    assert over.warning is not None and over.warning.startswith("Buffer overflow detected.")


def test_v6_6_refuses_partial_sync_in_the_first_offset_bytes_of_a_later_slot() -> None:
    mem = _mem(512, 1, V6_6)
    orig, size = 0x1234_5A00, 10_000  # low = 0x200
    m = mapped(mem.tbl_map_single(NVME, orig, size))
    refusals = 0
    for k in range(size):
        span = mem.bounce_target(NVME, m.tlb_addr + k, size - k)
        assert span is not None
        slot, tlb_off = divmod(0x200 + k, IO_TLB_SIZE)
        if slot >= 1 and tlb_off < 0x200:
            refusals += 1
            assert span.nbytes == 0, k
            assert span.warning == (
                f"Access before mapping start detected. orig offset 512, requested offset {tlb_off}."
            )
        else:
            assert span == BounceSpan(orig + k, m.tlb_addr + k, size - k), k
    # 10000 + 0x200 bytes span slots 0-5: 512 refused bytes at the head of slots 1-4 and
    # the 272 bytes that reach into slot 5.
    assert refusals == 4 * 0x200 + 272
    # 6.12 has no such refusal for the same mapping.
    mem12 = _mem(512)
    m12 = mapped(mem12.tbl_map_single(NVME, orig, size))
    k = IO_TLB_SIZE - 0x200  # the first byte of the second slot
    assert mem12.bounce_target(NVME, m12.tlb_addr + k, 16) == BounceSpan(orig + k, m12.tlb_addr + k, 16)


def test_bounce_target_without_an_original() -> None:
    mem = _mem(512)
    assert mem.bounce_target(DEV0, START + 7 * IO_TLB_SIZE, 16) is None  # free slot
    assert mem.bounce_target(DEV0, START - 4096, 16) is None  # not a bounce buffer


# -- limits --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mask", "expected"),
    [(0, 262_144), (0x3F, 260_096), (0x7FF, 260_096), (0xFFF, 258_048), (0x1FFF, 253_952),
     (0xFFFF, 196_608)],
)
@pytest.mark.parametrize("profile", [V6_12, V6_6], ids=lambda p: p.name)
def test_max_mapping_size(profile: KernelProfile, mask: int, expected: int) -> None:
    assert _mem(profile=profile).max_mapping_size(DeviceParams(mask)) == expected


def test_max_mapping_size_v5_15_is_flat() -> None:
    assert _mem(profile=V5_15).max_mapping_size(DeviceParams(0xFFF)) == 262_144


# -- v5.15: one cursor, do/while with wrap -------------------------------------------------


def test_v5_15_rounds_the_cursor_up_to_the_stride() -> None:
    """A page-sized map after a one-slot map: 5.15 rounds the cursor (1) up to 2; 6.6 takes
    slot 1 because orig bit 11 is set (congruence, not alignment); 6.12 page-aligns."""
    for profile, expected in ((V5_15, 2), (V6_6, 1), (V6_12, 2)):
        mem = _mem(256, 1, profile)
        assert mapped(mem.tbl_map_single(DEV0, 0x1000, 100)).index == 0
        assert mapped(mem.tbl_map_single(DEV0, 0x1800, 4096)).index == expected, profile.name


def test_v5_15_cursor_wraps_to_zero() -> None:
    mem = _mem(256, 1, V5_15)
    area = mem.pools[0].areas[0]
    a = mapped(mem.tbl_map_single(DEV0, 0x1000, 128 * IO_TLB_SIZE))
    mapped(mem.tbl_map_single(DEV0, 0x1000, 120 * IO_TLB_SIZE))
    assert area.index == 248
    assert mapped(mem.tbl_map_single(DEV0, 0x1000, 8 * IO_TLB_SIZE)).index == 248
    assert area.index == 0
    assert refused(mem.tbl_map_single(DEV0, 0x1000, 100)).cause is MapFailure.FULL
    mem.release_slots(DEV0, a.tlb_addr)
    assert mapped(mem.tbl_map_single(DEV0, 0x1000, 4 * IO_TLB_SIZE)).index == 0
    assert mem.check_invariants() == []


def _odd_slots_all_taken(profile: KernelProfile) -> IoTlbMem:
    """256 one-slot buffers, slots 4, 6, 8 freed again, cursor left at 2."""
    mem = _mem(256, 1, profile)
    maps = [mapped(mem.tbl_map_single(DEV0, 0x1000, 100)) for _ in range(256)]
    for i in (0, 1):
        mem.release_slots(DEV0, maps[i].tlb_addr)
        assert mapped(mem.tbl_map_single(DEV0, 0x1000, 100)).index == i
    for i in (4, 6, 8):
        mem.release_slots(DEV0, maps[i].tlb_addr)
    assert mem.pools[0].areas[0].index == 2
    return mem


def test_v5_15_search_can_spin_forever() -> None:
    """min_align 0xfff with orig bit 11 set needs an odd slot; the do/while starts at 2 and its
    +1/+2 steps only ever land on 2 again via slot 0 -> 1: the kernel spins (fixed in 6.3)."""
    mem = _odd_slots_all_taken(V5_15)
    with pytest.raises(SearchDeadlock):
        mem.tbl_map_single(NVME, 0x5800, 100)
    mem = _odd_slots_all_taken(V6_6)  # the counted loop gives up instead
    assert refused(mem.tbl_map_single(NVME, 0x5800, 100, alloc_size=100)).cause is MapFailure.FULL


# -- area and pool order (spec §3.2) -------------------------------------------------------


def test_static_search_starts_at_cpu_area_then_round_robins() -> None:
    mem = _mem(512, 4)
    assert mapped(mem.tbl_map_single(DEV0, 0x1000, 100, cpu=6)).index == 256  # 6 & 3 = 2
    assert mapped(mem.tbl_map_single(DEV0, 0x1000, 128 * IO_TLB_SIZE, cpu=3)).index == 384
    assert mapped(mem.tbl_map_single(DEV0, 0x1000, 100, cpu=3)).index == 0  # area 3 full: 0


def test_area_major_v6_12_versus_pool_major_v6_6() -> None:
    for profile, expected_pool in ((V6_12, 1), (V6_6, 0)):
        pools = [IoTlbPool(START, 256, 2), IoTlbPool(START + (1 << 24), 256, 2)]
        mem = IoTlbMem(pools, profile)
        mapped(mem.tbl_map_single(DEV0, 0x1000, 128 * IO_TLB_SIZE, cpu=0))  # pool 0, area 0
        m = mapped(mem.tbl_map_single(DEV0, 0x1000, 100, cpu=0))
        assert m.pool is pools[expected_pool], profile.name
        assert m.index == (0 if expected_pool else 128)


# -- layouts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "nslabs", "nareas"),
    [(0x1800, 128, 1), (0, 0, 1), (0, -128, 1), (0, 384, 3), (0, 384, 4), (0, 100, 2), (0, 129, 2)],
)
def test_pool_layout_errors(start: int, nslabs: int, nareas: int) -> None:
    with pytest.raises(PoolLayoutError):
        IoTlbPool(start, nslabs, nareas)


def test_pool_layouts_accepted_and_initial_lists() -> None:
    assert IoTlbPool(0x1000, 256, 2).area_nslabs == 128
    capped = IoTlbPool(0, 200, 1)  # a restricted pool need not be a multiple of 128
    assert capped.list[128] == 72 and capped.list[199] == 1 and capped.free_run_errors() == []
    assert IoTlbPool(0, 200, 1, list_capped=False).list[128] == 128  # <= 6.6.2


def test_overlapping_pools_are_rejected() -> None:
    a = IoTlbPool(START, 256, 1)
    with pytest.raises(PoolLayoutError):
        IoTlbMem([a, IoTlbPool(START + 254 * IO_TLB_SIZE, 256, 1)], V6_12)
    mem = IoTlbMem([IoTlbPool(START, 256, 1), IoTlbPool(START + 256 * IO_TLB_SIZE, 256, 1)], V6_12)
    assert mem.nslabs == 512  # touching is fine
    with pytest.raises(PoolLayoutError):
        mem.add_pool(IoTlbPool(START - 4096, 4, 1))
    with pytest.raises(PoolLayoutError):
        mem.add_pool(IoTlbPool(START + 100 * IO_TLB_SIZE, 128, 1, transient=True))
    assert mem.nslabs == 512 and mem.transient_nslabs == 0


def test_profile_layout_rules() -> None:
    with pytest.raises(PoolLayoutError):
        IoTlbMem([IoTlbPool(START, 256, 2)], V5_15)  # no areas before 6.0
    with pytest.raises(ValueError):
        IoTlbMem([IoTlbPool(START, 256, 1), IoTlbPool(START + (1 << 24), 256, 1)], V5_15)
    with pytest.raises(ValueError):
        IoTlbMem(
            [IoTlbPool(START, 256, 1), IoTlbPool(START + (1 << 24), 256, 1)], V6_12, dynamic=False
        )
    assert IoTlbMem([IoTlbPool(START, 256, 1)], V6_12, dynamic=True).dynamic


def test_transient_pool_counts_in_used_until_deleted() -> None:
    """Spec §5.5/§5.7: a transient pool's slots count in io_tlb_used and in
    io_tlb_transient_nslabs until swiotlb_del_transient drops the whole pool."""
    mem = IoTlbMem([IoTlbPool(0x8000_0000, 1024, 1)], V6_12, dynamic=True)
    transient = IoTlbPool(0x1_0000_0000, 3, 1, transient=True)
    mem.add_pool(transient)
    assert mem.counters()["io_tlb_transient_nslabs"] == 3 and mem.nslabs == 1024
    assert mem.search_pool_area(DEV0, transient, 0, 0x5000, 5000) == 0
    assert mem.total_used == 3 and mem.find_pool(0x1_0000_0000 + 4096) is transient
    mem.del_transient(transient)
    assert mem.total_used == 0 and mem.counters()["io_tlb_transient_nslabs"] == 0
    assert mem.find_pool(0x1_0000_0000) is None
    with pytest.raises(ReleaseError):
        mem.del_transient(transient)


def test_a_removed_pool_is_dead_to_a_search_that_raced_to_it() -> None:
    """A shrinking policy removes an idle pool under every area lock and marks it dead; a
    search that picked the pool from the list just before gets nothing from it."""
    mem = IoTlbMem([IoTlbPool(0x8000_0000, 1024, 1)], V6_12, dynamic=True)
    grown = IoTlbPool(0x9000_0000, 512, 2)
    mem.add_pool(grown)
    mem.remove_pool(grown)
    assert grown.dead and mem.nslabs == 1024
    assert mem.search_pool_area(DEV0, grown, 0, 0x1000, 4096) == -1
    assert grown.used == 0
