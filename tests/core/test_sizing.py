"""Pool sizing and the ``swiotlb=`` parser against the numbers of spec §1.3-§1.6, §5.4, §6."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swiotlb.core.constants import IO_TLB_SEGSIZE, align_up, is_power_of_two
from swiotlb.core.sizing import (
    LOG_PREFIX,
    SwiotlbParam,
    adjust_nareas,
    adjust_size,
    alloc_pool_plan,
    arm64_kmalloc_bounce_bytes,
    coco_pool_bytes,
    get_order,
    halving_sizes,
    late_pool_plan,
    limit_nareas,
    max_mapping_size,
    parse_cmdline,
    parse_swiotlb_param,
    plan_boot_pool,
    round_up_default_nslabs,
    x86_needs_swiotlb,
)

GiB = 1 << 30
MiB = 1 << 20


def _joined(warnings: tuple[str, ...]) -> str:
    return " | ".join(warnings)


# ------------------------------------------------------------------------------------------
# parse_swiotlb_param (spec §6)


@pytest.mark.parametrize(
    ("text", "nslabs", "nareas", "force", "noforce"),
    [
        ("65536", 65536, None, False, False),
        ("65536,force", 65536, None, True, False),
        ("65536,8", 65536, 8, False, False),
        ("65536,8,force", 65536, 8, True, False),
        ("force", None, None, True, False),
        ("noforce", None, None, False, True),
        (",8", None, 8, False, False),
        ("512,4,force", 512, 4, True, False),
        ("0x10000", 65536, None, False, False),
        ("0X10000,8,noforce", 65536, 8, False, True),
        ("32768,0x10", 32768, 16, False, False),
        (",,force", None, None, True, False),
    ],
)
def test_accepted_examples(text: str, nslabs: int | None, nareas: int | None, force: bool, noforce: bool) -> None:
    p = parse_swiotlb_param(text)
    assert (p.nslabs, p.nareas, p.force, p.noforce) == (nslabs, nareas, force, noforce)
    assert p.warnings == ()
    assert p.text == text


def test_octal_is_read_and_flagged() -> None:
    p = parse_swiotlb_param("0200000")
    assert p.nslabs == 65536
    assert "octal" in _joined(p.warnings)
    # a user who meant decimal 065536 gets octal 27486, rounded to 27520
    assert parse_swiotlb_param("065536").nslabs == 27520


def test_octal_stops_at_8_and_the_rest_becomes_the_area_count() -> None:
    p = parse_swiotlb_param("08")
    assert (p.nslabs, p.nareas) == (0, 8)
    assert p.steps == (("nslabs", 0), ("nareas", 8))
    assert "stops at '8'" in _joined(p.warnings)


def test_0x_without_hex_digit_is_octal_zero() -> None:
    p = parse_swiotlb_param("0xg")
    assert p.nslabs == 0
    assert "'xg' ignored" in _joined(p.warnings)


def test_slab_count_rounds_up_to_segment_multiple() -> None:
    p = parse_swiotlb_param("65535")
    assert p.nslabs == 65536
    assert "65535 slabs rounded up to 65536" in _joined(p.warnings)
    assert parse_swiotlb_param("0").nslabs == 0
    assert parse_swiotlb_param("1").nslabs == 128


def test_64m_is_64_slabs_not_64_mib() -> None:
    p = parse_swiotlb_param("64M")
    assert p.nslabs == 128
    assert (p.nareas, p.force, p.noforce) == (None, False, False)
    text = _joined(p.warnings)
    assert "'M' ignored" in text
    assert "64 MiB would be swiotlb=32768" in text


def test_size_suffix_hides_force() -> None:
    p = parse_swiotlb_param("1G,force")
    assert p.nslabs == 128 and not p.force
    text = _joined(p.warnings)
    assert "1 GiB would be swiotlb=524288" in text
    assert "force is NOT set" in text


def test_force_before_count_sets_nothing() -> None:
    # remainder "force,65536" is not exactly "force": the keyword test fails, and the count is
    # never read because numbers are only parsed at the start
    p = parse_swiotlb_param("force,65536")
    assert (p.nslabs, p.nareas, p.force, p.noforce) == (None, None, False, False)
    assert p.steps == ()
    text = _joined(p.warnings)
    assert "force is NOT set" in text
    assert "swiotlb=65536,force" in text
    assert "no effect at all" in text


@pytest.mark.parametrize("text", ["force,noforce", "noforce,force"])
def test_multiple_keywords_set_neither(text: str) -> None:
    p = parse_swiotlb_param(text)
    assert not p.force and not p.noforce
    assert "only one keyword" in _joined(p.warnings)


def test_keywords_are_case_sensitive() -> None:
    p = parse_swiotlb_param("FORCE")
    assert not p.force
    assert "case-sensitive" in _joined(p.warnings)


def test_trailing_garbage_and_third_number_are_ignored() -> None:
    p = parse_swiotlb_param("65536,8,4")
    assert (p.nslabs, p.nareas) == (65536, 8)
    assert "'4' ignored" in _joined(p.warnings)
    q = parse_swiotlb_param("65536,force,")
    assert q.nslabs == 65536 and not q.force
    assert "'force,' ignored" in _joined(q.warnings)


def test_empty_value() -> None:
    p = parse_swiotlb_param("")
    assert (p.nslabs, p.nareas, p.force, p.noforce) == (None, None, False, False)
    assert "empty" in _joined(p.warnings)


def test_keyword_without_comma_is_accepted_silently() -> None:
    # the separators are each optional, so the kernel takes these as the user meant
    for text in ("65536force", "65536,,force"):
        p = parse_swiotlb_param(text)
        assert p.nslabs == 65536 and p.force and p.warnings == ()


def test_area_count_notes() -> None:
    p = parse_swiotlb_param("65536,3")
    assert p.nareas == 3  # as given
    assert "rounded up to 4" in _joined(p.warnings)
    z = parse_swiotlb_param(",0")
    assert z.nareas == 0
    assert "0 areas means 1 area" in _joined(z.warnings)


def test_area_count_is_an_unsigned_int() -> None:
    p = parse_swiotlb_param(",4294967297")
    assert p.nareas == 1
    assert "truncated to 32 bits" in _joined(p.warnings)
    q = parse_swiotlb_param(",2147483649")
    assert "overflows" in _joined(q.warnings)


def test_slab_count_wraps_at_64_bits() -> None:
    assert parse_swiotlb_param(str((1 << 64) - 1)).nslabs == 0
    assert "wraps" in _joined(parse_swiotlb_param(str((1 << 64) - 1)).warnings)
    big = parse_swiotlb_param(str((1 << 64) + 256))
    assert big.nslabs == 256
    assert "64 bits" in _joined(big.warnings)


@given(st.integers(min_value=0, max_value=(1 << 40)))
def test_number_bases_agree(n: int) -> None:
    want = align_up(n, IO_TLB_SEGSIZE)
    assert parse_swiotlb_param(str(n)).nslabs == want
    assert parse_swiotlb_param(hex(n)).nslabs == want
    assert parse_swiotlb_param("0" + oct(n)[2:]).nslabs == want


# ------------------------------------------------------------------------------------------
# parse_cmdline


def test_cmdline_without_swiotlb() -> None:
    assert parse_cmdline("") is None
    assert parse_cmdline("quiet root=/dev/sda1 xswiotlb=1 foo.swiotlb=2") is None


def test_cmdline_single_occurrence_equals_parser() -> None:
    assert parse_cmdline("quiet swiotlb=65536,force ro") == parse_swiotlb_param("65536,force")


def test_cmdline_quotes_and_double_dash() -> None:
    p = parse_cmdline('console=ttyS0 "swiotlb=65536,8" ro')
    assert p is not None and (p.nslabs, p.nareas) == (65536, 8)
    q = parse_cmdline('swiotlb="512,4,force"')
    assert q is not None and (q.nslabs, q.nareas, q.force) == (512, 4, True)
    assert parse_cmdline("ro -- swiotlb=force") is None


def test_cmdline_later_occurrence_overrides_in_order() -> None:
    p = parse_cmdline("swiotlb=65536 quiet swiotlb=,8 swiotlb=131072")
    assert p is not None
    assert (p.nslabs, p.nareas) == (131072, 8)
    assert p.steps == (("nslabs", 65536), ("nareas", 8), ("nslabs", 131072))
    assert p.occurrences == ("65536", ",8", "131072")
    assert p.text == "131072"
    assert "3 times" in _joined(p.warnings)


def test_cmdline_force_and_noforce_accumulate() -> None:
    p = parse_cmdline("swiotlb=force swiotlb=noforce")
    assert p is not None and p.force and p.noforce
    assert "noforce wins" in _joined(p.warnings)
    plan = plan_boot_pool(ram_bytes=8 * GiB, possible_cpus=4, cmdline=p)
    assert not plan.enabled


def test_cmdline_prefixes_per_occurrence_warnings() -> None:
    p = parse_cmdline("swiotlb=64M swiotlb=force")
    assert p is not None and p.force and p.nslabs == 128
    assert any(w.startswith("swiotlb=64M: ") for w in p.warnings)


def test_bare_swiotlb_is_flagged() -> None:
    p = parse_cmdline("swiotlb")
    assert p is not None and p.replay_steps() == () and "bare" in _joined(p.warnings)


# ------------------------------------------------------------------------------------------
# building blocks (spec §1.3, §1.4, §1.6)


@pytest.mark.parametrize(("n", "want"), [(0, 1), (1, 1), (3, 4), (8, 8), (9, 16), (512, 512), ((1 << 31) + 1, 0)])
def test_adjust_nareas(n: int, want: int) -> None:
    assert adjust_nareas(n) == want


@pytest.mark.parametrize(
    ("nslabs", "nareas", "want"),
    [
        (32768, 0, 32768),  # no areas yet: untouched
        (251776, 0, 251776),
        (251776, 4, 262144),
        (128, 8, 1024),
        (0, 1, 128),
        (32768, 512, 65536),
        (65536, 512, 65536),
        (100096, 8, 131072),
        (2048, 4, 2048),
    ],
)
def test_round_up_default_nslabs(nslabs: int, nareas: int, want: int) -> None:
    assert round_up_default_nslabs(nslabs, nareas) == want


@pytest.mark.parametrize(("nareas", "nslots", "want"), [(8, 1024, 8), (8, 512, 4), (4, 384, 3), (8, 0, 0), (1, 128, 1)])
def test_limit_nareas(nareas: int, nslots: int, want: int) -> None:
    assert limit_nareas(nareas, nslots) == want


def test_adjust_size_guard_compares_with_default_value() -> None:
    size = coco_pool_bytes(8 * GiB)
    assert adjust_size(32768, size) == 251776
    assert adjust_size(65536, size) == 65536
    assert adjust_size(32000, size) == 32000
    assert adjust_size(32768, size, default_nareas=4) == 262144


@pytest.mark.parametrize(
    ("ram", "want"),
    [(8 * GiB, 515396075), (GiB, 64 * MiB), (64 * GiB, GiB), (0, 64 * MiB), (17 * GiB, GiB)],
)
def test_coco_pool_bytes(ram: int, want: int) -> None:
    assert coco_pool_bytes(ram) == want


def test_arm64_kmalloc_bounce_bytes() -> None:
    assert arm64_kmalloc_bounce_bytes(2 * GiB) == 2 * MiB
    assert arm64_kmalloc_bounce_bytes(128 * GiB) == 64 * MiB
    assert arm64_kmalloc_bounce_bytes(GiB + 1) == MiB + 1  # DIV_ROUND_UP


@pytest.mark.parametrize(
    ("mask", "want"),
    [(0, 262144), (0x7FF, 260096), (0xFFF, 258048), (0x1FFF, 253952), (1, 260096), (0x3FFFF, 0), (0x40000, 0), (0x40001, (1 << 64) - 2048)],
)
def test_max_mapping_size(mask: int, want: int) -> None:
    assert max_mapping_size(mask) == want


def test_x86_needs_swiotlb() -> None:
    assert not x86_needs_swiotlb(4 * GiB, coco=False)
    assert x86_needs_swiotlb(4 * GiB + 4096, coco=False)
    assert not x86_needs_swiotlb(16 * GiB, coco=False, iommu=True)
    assert x86_needs_swiotlb(2 * GiB, coco=True)
    assert x86_needs_swiotlb(2 * GiB, coco=False, sme_host=True)


def test_get_order() -> None:
    assert [get_order(n) for n in (1, 4096, 4097, 4 * MiB, 64 * MiB)] == [0, 0, 1, 10, 14]
    assert get_order(64 * 1024, page_size=65536) == 0


# ------------------------------------------------------------------------------------------
# plan_boot_pool (spec §1.3-§1.5)


def _log(*lines: str) -> tuple[str, ...]:
    return tuple(LOG_PREFIX + line for line in lines)


def test_default_pool_with_mapped_line() -> None:
    plan = plan_boot_pool(ram_bytes=16 * GiB, possible_cpus=4, pool_base=0xBBFD0000)
    assert (plan.enabled, plan.nslabs, plan.nareas, plan.force_bounce) == (True, 32768, 4, False)
    assert plan.log == _log("area num 4.", "mapped [mem 0x00000000bbfd0000-0x00000000bffd0000] (64MB)")
    assert plan.size_bytes == 64 * MiB and plan.area_nslabs == 8192


def test_coco_8gib_guest_rounds_to_512mib() -> None:
    plan = plan_boot_pool(ram_bytes=8 * GiB, possible_cpus=4, coco=True)
    assert (plan.nslabs, plan.nareas, plan.force_bounce) == (262144, 4, True)
    assert plan.size_bytes == 512 * MiB
    assert plan.log[:3] == _log(
        "SWIOTLB bounce buffer size adjusted to 491MB",
        "area num 4.",
        "SWIOTLB bounce buffer size roundup to 512MB",
    )
    assert plan.log[3].endswith("(512MB)")
    assert plan.default_nslabs == 262144


def test_coco_64gib_guest_caps_at_1gib() -> None:
    plan = plan_boot_pool(ram_bytes=64 * GiB, possible_cpus=16, coco=True)
    assert plan.nslabs == 524288 and plan.size_bytes == GiB
    assert "SWIOTLB bounce buffer size adjusted to 1024MB" in plan.log[0]
    assert not any("roundup" in line for line in plan.log)


def test_coco_blocked_by_explicit_count_but_not_by_32768() -> None:
    blocked = plan_boot_pool(ram_bytes=8 * GiB, possible_cpus=4, coco=True, cmdline="swiotlb=65536")
    assert blocked.nslabs == 65536
    assert "CoCo 6% rule" in _joined(blocked.warnings)
    same = plan_boot_pool(ram_bytes=8 * GiB, possible_cpus=4, coco=True, cmdline="swiotlb=32768")
    assert same.nslabs == 262144


def test_coco_with_areas_from_cmdline_rounds_inside_adjust_size() -> None:
    plan = plan_boot_pool(ram_bytes=8 * GiB, possible_cpus=4, coco=True, cmdline="swiotlb=,8")
    assert (plan.nslabs, plan.nareas) == (262144, 8)
    assert plan.log[:2] == _log("area num 8.", "SWIOTLB bounce buffer size adjusted to 512MB")
    assert not any("roundup" in line for line in plan.log)


def test_512_cpus_make_512_areas_and_128_mib() -> None:
    plan = plan_boot_pool(ram_bytes=64 * GiB, possible_cpus=512)
    assert (plan.nslabs, plan.nareas, plan.area_nslabs) == (65536, 512, 128)
    assert plan.log[:2] == _log("area num 512.", "SWIOTLB bounce buffer size roundup to 128MB")


def test_qualcomm_swiotlb_128_with_8_cpus_is_2_mib() -> None:
    plan = plan_boot_pool(ram_bytes=8 * GiB, possible_cpus=8, arch="arm64", cmdline="swiotlb=128")
    assert (plan.nslabs, plan.nareas, plan.size_bytes) == (1024, 8, 2 * MiB)
    assert plan.log[:2] == _log("area num 8.", "SWIOTLB bounce buffer size roundup to 2MB")


def test_swiotlb_64m_plan_warns() -> None:
    plan = plan_boot_pool(ram_bytes=8 * GiB, possible_cpus=8, cmdline="quiet swiotlb=64M")
    assert plan.nslabs == 1024
    assert "swiotlb=32768" in _joined(plan.warnings)
    assert "raised to 1024" in _joined(plan.warnings)


def test_512_4_force_is_512_slots_4_areas() -> None:
    plan = plan_boot_pool(ram_bytes=8 * GiB, possible_cpus=64, cmdline="swiotlb=512,4,force")
    assert (plan.nslabs, plan.nareas, plan.force_bounce, plan.default_nareas) == (512, 4, True, 4)
    assert plan.log == _log("area num 4.", "mapped [mem 0x????????????????-0x????????????????] (1MB)")


def test_explicit_non_power_of_two_is_rounded() -> None:
    assert plan_boot_pool(ram_bytes=8 * GiB, possible_cpus=8, cmdline="swiotlb=100000").nslabs == 131072
    assert plan_boot_pool(ram_bytes=8 * GiB, possible_cpus=1, cmdline="swiotlb=100000,1").nslabs == 131072


def test_count_after_area_count_is_not_rounded() -> None:
    # order matters: the area count rounded the old default, the later count stays as given
    plan = plan_boot_pool(ram_bytes=8 * GiB, possible_cpus=4, cmdline="swiotlb=,2 swiotlb=384")
    assert (plan.nslabs, plan.nareas, plan.area_nslabs) == (384, 2, 192)
    assert plan.area_nslabs % IO_TLB_SEGSIZE != 0
    assert "straddles" in _joined(plan.warnings)
    odd = plan_boot_pool(ram_bytes=8 * GiB, possible_cpus=4, cmdline="swiotlb=,4 swiotlb=384")
    assert odd.nareas == 3
    assert "not a power of two" in _joined(odd.warnings)
    rounded = plan_boot_pool(ram_bytes=8 * GiB, possible_cpus=4, cmdline="swiotlb=384,2")
    assert rounded.nslabs == 512


def test_area_overflow_falls_back_to_cpu_count() -> None:
    plan = plan_boot_pool(ram_bytes=8 * GiB, possible_cpus=4, cmdline="swiotlb=,2147483649")
    assert plan.log[:2] == _log("area num 0.", "area num 4.")
    assert (plan.nslabs, plan.nareas) == (32768, 4)


def test_halving_until_it_fits() -> None:
    plan = plan_boot_pool(ram_bytes=8 * GiB, possible_cpus=4, low_mem_contiguous=5 * MiB)
    assert (plan.nslabs, plan.nareas, plan.default_nslabs) == (2048, 4, 2048)
    assert _log("SWIOTLB bounce buffer size adjusted 32768 -> 2048 slabs")[0] in plan.log
    exact = plan_boot_pool(ram_bytes=8 * GiB, possible_cpus=4, low_mem_contiguous=64 * MiB)
    assert exact.nslabs == 32768 and not any("->" in line for line in exact.log)


def test_halving_limits_areas() -> None:
    plan = plan_boot_pool(ram_bytes=8 * GiB, possible_cpus=64, low_mem_contiguous=MiB)
    assert (plan.nslabs, plan.nareas, plan.default_nareas) == (512, 4, 64)


def test_halving_gives_up_below_one_mib() -> None:
    plan = plan_boot_pool(ram_bytes=8 * GiB, possible_cpus=4, low_mem_contiguous=MiB - 1)
    assert not plan.enabled and plan.nslabs == 0
    assert "1 MiB" in plan.reason
    assert plan.default_nslabs == 32768  # not updated when giving up
    forced = plan_boot_pool(ram_bytes=8 * GiB, possible_cpus=4, cmdline="swiotlb=force", low_mem_contiguous=0)
    assert not forced.enabled and forced.force_bounce


def test_small_explicit_pool_gives_up_without_halving() -> None:
    plan = plan_boot_pool(ram_bytes=8 * GiB, possible_cpus=1, cmdline="swiotlb=256", low_mem_contiguous=MiB // 4)
    assert not plan.enabled
    fits = plan_boot_pool(ram_bytes=8 * GiB, possible_cpus=1, cmdline="swiotlb=256", low_mem_contiguous=MiB // 2)
    assert fits.enabled and fits.nslabs == 256


def test_noforce_and_not_needed() -> None:
    for kwargs in (
        {"cmdline": "swiotlb=noforce"},
        {"cmdline": "swiotlb=noforce", "coco": True},
        {"needs_bounce": False},
    ):
        plan = plan_boot_pool(ram_bytes=8 * GiB, possible_cpus=4, **kwargs)
        assert not plan.enabled and plan.nslabs == 0 and plan.nareas == 0 and plan.reason
    forced = plan_boot_pool(ram_bytes=2 * GiB, possible_cpus=4, needs_bounce=False, cmdline="swiotlb=force")
    assert forced.enabled and forced.force_bounce and forced.nslabs == 32768


def test_x86_helper_feeds_the_plan() -> None:
    small = plan_boot_pool(ram_bytes=2 * GiB, possible_cpus=2, needs_bounce=x86_needs_swiotlb(2 * GiB, coco=False))
    assert not small.enabled
    assert small.default_nareas == 0  # init returned before choosing areas


def test_arm64_kmalloc_bounce_sizing() -> None:
    plan = plan_boot_pool(ram_bytes=2 * GiB, possible_cpus=8, arch="arm64", needs_bounce=False)
    assert (plan.enabled, plan.nslabs, plan.nareas, plan.force_bounce) == (True, 1024, 8, False)
    assert plan.log[0] == LOG_PREFIX + "SWIOTLB bounce buffer size adjusted to 2MB"
    tiny = plan_boot_pool(ram_bytes=GiB // 2, possible_cpus=8, arch="arm64", needs_bounce=False)
    assert tiny.nslabs == 1024  # 512 KiB -> 256 slabs, then 128 x 8 areas
    big = plan_boot_pool(ram_bytes=128 * GiB, possible_cpus=8, arch="arm64", needs_bounce=False)
    assert big.nslabs == 32768
    off = plan_boot_pool(ram_bytes=2 * GiB, possible_cpus=8, arch="arm64", needs_bounce=False, kmalloc_bounce=False)
    assert not off.enabled
    needed = plan_boot_pool(ram_bytes=2 * GiB, possible_cpus=8, arch="arm64")
    assert needed.nslabs == 32768
    realm = plan_boot_pool(ram_bytes=8 * GiB, possible_cpus=8, arch="arm64", needs_bounce=False, coco=True)
    assert realm.force_bounce and realm.nslabs == 32768  # no 6 % rule outside x86


def test_arm64_64k_pages() -> None:
    plan = plan_boot_pool(ram_bytes=8 * GiB, possible_cpus=8, arch="arm64", page_size=65536)
    assert plan.nslabs == 32768


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"ram_bytes": -1, "possible_cpus": 1}, "ram_bytes=-1"),
        ({"ram_bytes": GiB, "possible_cpus": 0}, "possible_cpus=0"),
        ({"ram_bytes": GiB, "possible_cpus": 1, "page_size": 3000}, "page_size=3000"),
        ({"ram_bytes": GiB, "possible_cpus": 1, "page_size": 2048}, "page_size=2048"),
        ({"ram_bytes": GiB, "possible_cpus": 1, "page_size": 16384}, "x86_64"),
        ({"ram_bytes": GiB, "possible_cpus": 1, "arch": "riscv"}, "arch='riscv'"),
        ({"ram_bytes": GiB, "possible_cpus": 1, "low_mem_contiguous": -5}, "low_mem_contiguous=-5"),
    ],
)
def test_invalid_input(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        plan_boot_pool(**kwargs)  # type: ignore[arg-type]


def test_invalid_building_block_input() -> None:
    with pytest.raises(ValueError, match="nareas=-1"):
        adjust_nareas(-1)
    with pytest.raises(ValueError, match="min_align_mask"):
        max_mapping_size(-1)
    with pytest.raises(ValueError, match="default_nareas"):
        round_up_default_nslabs(1, 1 << 25)


def test_hand_built_param_is_replayed_count_first() -> None:
    param = SwiotlbParam("x", nslabs=300, nareas=3, force=True, noforce=False, warnings=())
    plan = plan_boot_pool(ram_bytes=8 * GiB, possible_cpus=64, cmdline=param)
    assert (plan.nslabs, plan.nareas, plan.force_bounce) == (512, 4, True)


@given(
    count=st.integers(min_value=0, max_value=1 << 22),
    areas=st.one_of(st.none(), st.integers(min_value=0, max_value=4096)),
    cpus=st.integers(min_value=1, max_value=4096),
    coco=st.booleans(),
    arch=st.sampled_from(["x86_64", "arm64", "generic"]),
    low=st.one_of(st.none(), st.integers(min_value=MiB, max_value=4 * GiB)),
)
def test_single_param_pool_is_whole_segments_per_area(
    count: int, areas: int | None, cpus: int, coco: bool, arch: str, low: int | None
) -> None:
    """With one swiotlb= (count first) every path ends in power-of-two sizes (spec §1.4)."""
    text = str(count) if areas is None else f"{count},{areas}"
    plan = plan_boot_pool(ram_bytes=8 * GiB, possible_cpus=cpus, cmdline=f"swiotlb={text}", coco=coco, arch=arch,
                          low_mem_contiguous=low)
    assert plan.enabled
    assert is_power_of_two(plan.nslabs) and is_power_of_two(plan.nareas)
    assert plan.nslabs >= IO_TLB_SEGSIZE * plan.nareas
    assert plan.area_nslabs % IO_TLB_SEGSIZE == 0
    assert plan.default_nslabs == plan.nslabs
    assert plan.default_nareas == adjust_nareas(cpus if areas is None else areas)
    if low is None:
        assert plan.nslabs >= align_up(count, IO_TLB_SEGSIZE)
    else:
        assert plan.size_bytes <= low


# ------------------------------------------------------------------------------------------
# late and grown pools (spec §1.5, §5.4)


def test_late_64mib_ends_as_4mib() -> None:
    late = late_pool_plan(64 * MiB, default_nareas=16)
    assert (late.enabled, late.nslabs, late.nareas, late.order) == (True, 2048, 16, 10)
    assert late.log == _log("only able to allocate 4 MB")


def test_late_sizes() -> None:
    ok = late_pool_plan(2 * MiB, default_nareas=8)
    assert (ok.nslabs, ok.nareas, ok.log) == (1024, 8, ())
    assert not late_pool_plan(MiB, default_nareas=8).enabled  # the 1 MiB order is never tried
    starved = late_pool_plan(4 * MiB, default_nareas=8, max_free_order=9)
    assert (starved.nslabs, starved.order) == (1024, 9)
    fresh = late_pool_plan(4 * MiB, possible_cpus=4)
    assert fresh.default_nareas == 4 and fresh.log[0] == LOG_PREFIX + "area num 4."


@pytest.mark.parametrize(
    ("nslabs", "nareas", "free", "want"),
    [
        (32768, 16, None, (2048, 16)),
        (32768, 64, None, (2048, 16)),
        (32768, 16, 9, (1024, 8)),
        (32768, 16, 8, (512, 4)),
        (32768, 16, 7, None),
        (1536, 4, None, (1536, 4)),
    ],
)
def test_alloc_pool_plan(nslabs: int, nareas: int, free: int | None, want: tuple[int, int] | None) -> None:
    assert alloc_pool_plan(nslabs, nareas, max_free_order=free) == want


def test_alloc_pool_plan_64k_pages_has_a_large_cap() -> None:
    assert alloc_pool_plan(32768, 16, page_size=65536, max_page_order=13) == (32768, 16)
    assert alloc_pool_plan(3, 1, minslabs=3, max_free_order=-1) is None  # transient pools never halve


def test_halving_sizes_are_the_kernels_retry_sequence() -> None:
    # 64 MiB down to the 1 MiB floor: every halving stays whole segments and the floor is tried
    assert list(halving_sizes(32768, 512)) == [32768, 16384, 8192, 4096, 2048, 1024, 512]
    # odd sizes round each half up to a whole 128-slot segment
    assert list(halving_sizes(1000, 300)) == [1000, 512, 256]
    # a size already at the floor is tried once
    assert list(halving_sizes(384, 384)) == [384]
    # below one segment the kernel would retry 128 for ever; the sequence stops
    assert list(halving_sizes(256, 8)) == [256, 128]


@given(st.integers(1, 1 << 20), st.integers(0, 1 << 20))
def test_halving_sizes_shrink_to_the_floor(nslabs: int, minslabs: int) -> None:
    sizes = list(halving_sizes(nslabs, minslabs))
    assert sizes[0] == nslabs
    assert all(b < a and b % IO_TLB_SEGSIZE == 0 for a, b in zip(sizes, sizes[1:]))
    assert sizes[-1] <= minslabs or sizes[-1] <= IO_TLB_SEGSIZE
